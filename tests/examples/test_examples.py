"""Every example runs, as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart():
    assert run("examples/quickstart.py").splitlines() == ["(100,)", "3232"]


def test_digits_demo_trains_both_ways():
    out = run("examples/digits_demo.py", "--epochs", "3")
    found = re.findall(r"^(\w+):\s+(\d+) steps, test accuracy ([\d.]+)", out, re.M)
    accuracy = {mode: acc for mode, _, acc in found}
    assert set(accuracy) == {"iteration", "scan"}
    # Both halves train the same steps on the same batches: 3 x 46.
    assert [int(steps) for _, steps, _ in found] == [138, 138]
    # Same stream and init; the two compiled programs round differently, so
    # the models agree closely but not bit for bit.
    assert float(accuracy["scan"]) > 0.8 and float(accuracy["iteration"]) > 0.8
    assert abs(float(accuracy["iteration"]) - float(accuracy["scan"])) < 0.05
    assert re.search(r"scan speed-up over iteration: [\d.]+x", out)


def test_checkpoint_resume_in_a_fresh_process():
    out = run("examples/checkpoint_resume.py")
    assert out.splitlines()[-1].endswith(": True")
    assert "stopped at record 56 of epoch 0" in out
