"""What the flagship tests share: running an example as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Flagships whose training outweighs their compiling: they run with XLA's
#: default optimisations, not the suite's --xla_backend_optimization_level=0
#: (tests/conftest.py). CPU seconds, the suite's flag against the default, on
#: this 2-core machine: learned_isp 34 / 24, ddsp 25 / 18; dada 22 / 27 keeps
#: the flag.
OPTIMIZED = {"learned_isp", "ddsp"}


@pytest.fixture
def run_flagship(tmp_path: Path) -> Callable[[str], dict[str, float]]:
    """Runs ``examples/differentiable/<name>.py --out tmp_path``; its results.

    The examples print their results as ``name: number`` lines. tests/conftest.py
    set the suite's XLA flags, which the subprocess keeps (less the
    optimisation level for those in :data:`OPTIMIZED`).
    """

    def run(name: str) -> dict[str, float]:
        script = f"examples/differentiable/{name}.py"
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        if name in OPTIMIZED:
            flags = env.get("XLA_FLAGS", "").split()
            env["XLA_FLAGS"] = " ".join(
                f for f in flags if "xla_backend_optimization_level" not in f
            )
        done = subprocess.run(
            [sys.executable, script, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found = re.findall(r"^(\w+): ([-+.\deE]+|nan|inf)$", done.stdout, re.M)
        return {key: float(value) for key, value in found}

    return run
