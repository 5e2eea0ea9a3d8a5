"""The four distributions: one version, exact pins, one namespace, light imports."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = [
    "datarax-core",
    "datarax-sources",
    "datarax-integrations",
    "datarax-bench",
]
SIBLINGS = {
    "datarax-core": [],
    "datarax-sources": ["datarax-core"],
    "datarax-integrations": ["datarax-sources"],
    "datarax-bench": ["datarax-core", "datarax-sources"],
}
# What `pip install datarax-core` must never pull, and `import datarax` never load.
HEAVY = {
    "tensorflow",
    "tensorflow-datasets",
    "torch",
    "grain",
    "datasets",
    "pyarrow",
    "array-record",
    "matplotlib",
}
HEAVY_MODULES = [
    "tensorflow",
    "tensorflow_datasets",
    "torch",
    "grain",
    "datasets",
    "pyarrow",
    "array_record",
    "matplotlib",
    "orbax",
    "optax",
    "psutil",
    "PIL",
    "tokenizers",
    "cv2",
]
VERSION = (ROOT / "VERSION").read_text().strip()


def _name(requirement: str) -> str:
    return (
        re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    )


def test_one_version_for_all_four_and_exact_sibling_pins():
    for dist in DISTRIBUTIONS:
        project = tomllib.loads(
            (ROOT / "packages" / dist / "pyproject.toml").read_text()
        )
        assert project["project"]["name"] == dist
        assert "version" in project["project"]["dynamic"]
        assert md.version(dist) == VERSION
        requires = md.requires(dist) or []
        pins = [r for r in requires if _name(r).startswith("datarax")]
        assert sorted(pins) == sorted(f"{s}=={VERSION}" for s in SIBLINGS[dist])


def test_datarax_version_attribute():
    import datarax

    assert datarax.__version__ == VERSION


def test_editable_install_sees_every_sub_package():
    import datarax
    import datarax.bench
    import datarax.integrations
    import datarax.sources

    assert Path(datarax.sources.__file__).is_relative_to(
        ROOT / "packages" / "datarax-sources" / "src"
    )
    assert Path(datarax.bench.__file__).is_relative_to(
        ROOT / "packages" / "datarax-bench" / "src"
    )
    assert len(list(datarax.__path__)) >= 2  # extend_path joined the src trees


def test_import_datarax_loads_no_optional_backend():
    code = (
        "import sys, json, jax, flax.nnx\n"
        "before = set(sys.modules)\n"
        "import datarax, datarax.sources, datarax.operators, datarax.nodes\n"
        "import datarax.integrations, datarax.bench\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps(sorted(m for m in new if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names reachable from ``requirements`` (any marker that holds
    here), through the metadata of what is installed. A requirement's own extras
    (``name[a,b]``) are followed; other extras are not."""
    seen: set[str] = set()
    todo = [r for r in requirements if "extra ==" not in r]
    while todo:
        requirement = todo.pop()
        name = _name(requirement)
        extras = re.search(r"\[([^\]]*)\]", requirement.split(";")[0])
        wanted = {e.strip() for e in extras.group(1).split(",")} if extras else set()
        key = f"{name}[{','.join(sorted(wanted))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            for r in md.requires(name) or []:
                marker = re.search(r"extra == [\"']([^\"']+)[\"']", r)
                if marker is None or marker.group(1) in wanted:
                    todo.append(r.split(";")[0] if marker else r)
        except md.PackageNotFoundError:
            pass
    return {key.split("[")[0] for key in seen}


@pytest.fixture(scope="module")
def wheels(wheel_dir) -> dict[str, Path]:
    built = {}
    for dist in DISTRIBUTIONS:
        (wheel,) = wheel_dir.glob(dist.replace("-", "_") + f"-{VERSION}-*.whl")
        built[dist] = wheel
    return built


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode().splitlines()


@pytest.mark.slow
def test_wheels_carry_one_version_and_only_their_own_files(wheels):
    for dist, wheel in wheels.items():
        lines = _metadata(wheel)
        assert f"Version: {VERSION}" in lines
        requires = [
            line.split(": ", 1)[1] for line in lines if line.startswith("Requires-Dist")
        ]
        for sibling in SIBLINGS[dist]:
            assert f"{sibling}=={VERSION}" in requires
        with zipfile.ZipFile(wheel) as z:
            has_root_init = "datarax/__init__.py" in z.namelist()
        assert has_root_init == (dist == "datarax-core")


@pytest.mark.slow
def test_core_wheel_pulls_no_heavy_dependency(wheels):
    lines = _metadata(wheels["datarax-core"])
    requires = [
        line.split(": ", 1)[1] for line in lines if line.startswith("Requires-Dist")
    ]
    assert {_name(r) for r in requires if "extra ==" not in r} == {
        "jax",
        "flax",
        "numpy",
    }
    pulled = _closure(requires)
    assert {"jax", "flax", "numpy"} <= pulled
    assert not pulled & HEAVY, pulled & HEAVY


@pytest.mark.slow
def test_the_demo_environment_pulls_no_decoder_or_tokenizer(wheels):
    """demo.sh installs the bench without extras: the encoded scenarios' OpenCV
    and tokenizers come only with [encoded] (or [peers])."""
    lines = _metadata(wheels["datarax-bench"])
    requires = [
        line.split(": ", 1)[1] for line in lines if line.startswith("Requires-Dist")
    ]
    encoders = {"opencv-python-headless", "tokenizers"}
    plain = _closure(requires + [f"datarax-integrations[all]=={VERSION}"])
    assert not plain & encoders, plain & encoders
    for extra in ("encoded", "peers"):
        named = {_name(r) for r in requires if re.search(f"extra == .{extra}.", r)}
        assert encoders <= named, (extra, named)


@pytest.mark.slow
def test_wheels_installed_side_by_side_share_the_namespace(wheels, tmp_path):
    """A fresh venv with the four wheels (and, through a .pth file, this
    environment's third-party packages, but not its editable datarax)."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [
                str(python),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # A path line in a .pth file adds the directory but runs none of its own .pth
    # files, so the editable install's path hooks stay out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            *map(str, wheels.values()),
        ],
        check=True,
    )
    code = (
        "import datarax, datarax.sources, datarax.integrations, datarax.bench\n"
        "import numpy as np\n"
        "from datarax import Pipeline\n"
        "from datarax.sources import MemorySource\n"
        "p = Pipeline(source=MemorySource({'x': np.arange(5)}), batch_size=2)\n"
        "print(datarax.sources.__file__)\n"
        "print([b['x'].tolist() for b in p])\n"
        "print(datarax.__version__)\n"
    )
    out = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(site)
    assert out[1] == "[[0, 1], [2, 3], [4]]"
    assert out[2] == VERSION
