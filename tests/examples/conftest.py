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


@pytest.fixture
def run_flagship(tmp_path: Path) -> Callable[[str], dict[str, float]]:
    """Runs ``examples/differentiable/<name>.py --out tmp_path``; its results.

    The examples print their results as ``name: number`` lines. tests/conftest.py
    set the suite's XLA flags, which the subprocess keeps.
    """

    def run(name: str) -> dict[str, float]:
        script = f"examples/differentiable/{name}.py"
        done = subprocess.run(
            [sys.executable, script, "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found = re.findall(r"^(\w+): ([-+.\deE]+|nan|inf)$", done.stdout, re.M)
        return {key: float(value) for key, value in found}

    return run
