"""Shared fixtures and settings for the datarax test suite."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# Host stages run in spawned worker processes must be importable by name there:
# they live in tests/helpers, which spawned children find on the inherited path.
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

import budget  # noqa: E402 (tests/helpers, on the path from the line above)

# Every example compiles at least once; keep the budget of examples small (8 in
# the first pass, 3 in the second: scripts/test.sh; tests/helpers/budget.py
# scales a test's own budget the same way) and never time them (the first call
# of a shape compiles).
settings.register_profile(
    "datarax",
    deadline=None,
    max_examples=budget.EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("datarax")

# Marked ``once``: scripts/test.sh runs them in its first pass only (the second
# Python, with the other jax and flax, runs -m "not once"). The second pass checks
# the library under the other versions: its unit tests (core, sources, operators,
# checkpoint state, the TFDS integration, the one-process-per-slice multi-process
# run) run there. Once: what those versions do not change (packaging, the errors
# table, bad input refused before any jax work, the HF and ArrayRecord adapters
# over the shared source bases, the benchmark's CLI, scenarios and peers),
# and whole programs built on the library's public calls that the unit tests
# cover on both (the examples and flagships, the benchmark's adapters, the
# two-process sharded run). Entries are path or test id prefixes.
ONCE = (
    # Metadata, AST layer checks, the errors table, built wheels and fresh venvs
    # (the same py3-none-any wheels on any Python).
    "tests/packaging/",
    # The benchmark's command line, report, RSS verdicts and worker processes
    # (test_adapters and test_scenarios check its jax code in both passes).
    "tests/bench/test_cli.py",
    "tests/bench/test_report.py",
    "tests/bench/test_rss.py",
    "tests/bench/test_runner.py",
    # The peers: Grain, tf.data, PyTorch and SPDL are installed on 3.11 only.
    "tests/bench/test_peers.py",
    # Bad input refused before any jax work (argument, file-format and probe
    # checks: Python and NumPy), and the docs' examples, whose library calls the
    # unit tests cover on both Pythons.
    "tests/checkpoint/test_checkpoint_errors.py",
    "tests/core/test_misuse.py",
    "tests/core/test_probe_core.py",
    "tests/sources/test_probe_sources.py",
    "tests/sources/test_source_trust.py",
    "tests/integrations/test_hf_probe.py",
    # The HF and ArrayRecord adapters: the same datasets / array_record versions
    # on both Pythons, and their traced reads are HostSourceBase's and
    # EagerSourceBase's, which tests/sources checks on both (test_tfds, whose
    # streaming source makes its own callback, runs on both). The benchmark's
    # scenario transforms (its own jax code, not the library's) likewise.
    "tests/integrations/test_arrayrecord.py",
    "tests/integrations/test_hf.py",
    "tests/integrations/test_hf_trust.py",
    "tests/integrations/test_tfds_trust.py",
    "tests/bench/test_scenarios.py",
    "tests/examples/test_docs.py",
    # orbax is the same version on both Pythons; datarax's state (what it
    # writes) is tested on both by tests/checkpoint.
    "tests/checkpoint/test_orbax.py",
    # Whole programs: the examples and the differentiable flagships, the
    # benchmark's adapters, the two-process sharded run (its pieces: the
    # sharding tests and the per-slice multi-process test run in both passes).
    "tests/examples/",
    "tests/bench/test_adapters.py",
    "tests/core/test_multihost.py::test_a_sharded_pipeline",
)


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]
) -> Path:
    """The folder ``name`` of this test run, filled by ``make(folder)`` once.

    Under xdist the workers share one folder of the run and take a lock, so a
    costly product (built wheels, a real benchmark run) is made once per run,
    whichever worker asks first, and not again when pytest tears a module or
    session fixture down and sets it up anew on the same worker.
    """
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # this run's folder, above the workers' own
    out = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / f"{name}.done").exists():
            shutil.rmtree(out, ignore_errors=True)  # what a failed make left
            out.mkdir()
            make(out)
            (base / f"{name}.done").touch()
    return out


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four distributions built as wheels, once per test run.

    tests/packaging/test_distributions.py and test_extras.py both install them,
    perhaps on different workers.
    """

    def build(out: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps"]
            + ["--no-build-isolation", "--no-index", "--quiet", "-w", str(out)]
            + sorted(str(p.parent) for p in ROOT.glob("packages/*/pyproject.toml")),
            check=True,
        )

    return once_per_run(tmp_path_factory, "wheels", build)


@pytest.fixture(scope="session")
def run_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, Callable[[Path], None]], Path]:
    """``run_once(name, make)``: :func:`once_per_run` for this test run."""
    return lambda name, make: once_per_run(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def run_on_devices() -> Callable[..., dict]:
    """``run_on_devices(script, *args, devices=n)``: the JSON a script printed last.

    Runs ``python -c script *args`` on ``n`` forced CPU devices (the suite's
    XLA flags kept), fails the test with the end of its stderr if it fails.
    """

    def run(script: str, *args: str, devices: int, timeout: float = 300) -> dict:
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def tokens() -> dict[str, np.ndarray]:
    """A small NLP-like dataset: 50 rows of 4 int32 tokens, row i holds i*10+j."""
    rows = np.arange(50, dtype=np.int32)[:, None] * 10 + np.arange(4, dtype=np.int32)
    return {"tokens": rows, "label": np.arange(50, dtype=np.int32)}


def pytest_configure(config: pytest.Config) -> None:
    # Flax deprecations fail the suite (filterwarnings = error in pyproject), so a
    # deprecated nnx API can never slip in unnoticed.
    config.addinivalue_line("filterwarnings", "error::DeprecationWarning")
    _compile_fast()
    _cache_compiled_programs(config)


def _compile_fast() -> None:
    """Compiles without LLVM's optimisations, here and in the tests' subprocesses.

    The suite's programs are small and run for milliseconds, so compiling is most
    of its time: ``--xla_backend_optimization_level=0`` took a third off the
    operator tests' CPU time (67 s to 46 s) and changes no result the tests
    check (XLA's HLO passes, which decide what a program computes, still run).
    Benchmarks and users keep XLA's default. Set before jax starts its backend.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def _cache_compiled_programs(config: pytest.Config) -> None:
    """Turns on jax's persistent compilation cache, in a new folder per process.

    Tests build many pipelines of the same structure, which lower to the same
    XLA program; jax's in-memory caches key on the Python functions (new in
    every test: rebuilding a small pipeline costs 2.5 s of CPU, 0.45 s from the
    cache), the persistent cache on the program, so a program compiles once per
    test process. The library, example and adapter tests took 15% less CPU on
    jax 0.10 and 11% on jax 0.12 (both run side by side). The folder starts
    empty and is removed at exit, so nothing carries over between runs; each
    process has its own, as jax writes entries without a lock unless told to
    take one (which cost more time than the cache saved).
    """
    if getattr(config.option, "dist", "no") != "no" and not hasattr(
        config, "workerinput"
    ):
        return  # the xdist controller runs no test
    import jax  # here: set before the first compile, which fixes the cache's use

    folder = tempfile.mkdtemp(prefix="datarax-jax-cache-")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _long(item: pytest.Item) -> bool:
    """A property test (tens of examples, each may compile) or a ``slow`` one."""
    test = getattr(item, "obj", None)
    return getattr(test, "is_hypothesis_test", False) or bool(
        item.get_closest_marker("slow")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(ROOT):
            if item.nodeid.startswith(ONCE):
                item.add_marker(pytest.mark.once)
    # Long tests first, in their usual order, then the rest. xdist hands tests out
    # in collection order, so a long test that happens to start last keeps one
    # worker busy while the other idles (a minute of the run, measured); started
    # first, the many short tests even out the end.
    items.sort(key=lambda item: not _long(item))
