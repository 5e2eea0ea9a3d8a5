"""The integrations' extras, from the built wheels, in a fresh virtual environment.

Without an extra, importing its backend names the command that installs it; after
``pip install "datarax-integrations[hf]"`` (resolved from the wheels built here and
the package index) HFSource runs on a real dataset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

MISSING = textwrap.dedent(
    """
    import importlib, json
    out = {}
    for extra in ("hf", "tfds", "arrayrecord"):
        try:
            importlib.import_module("datarax.integrations." + extra)
            out[extra] = "imported"
        except ImportError as err:
            out[extra] = str(err)
    print(json.dumps(out))
    """
)

RUN_HF = textwrap.dedent(
    """
    import datasets, numpy as np
    from datarax import Pipeline
    from datarax.integrations.hf import HFSource
    ds = datasets.Dataset.from_dict({"x": np.arange(5, dtype=np.int32)})
    pipe = Pipeline(source=HFSource(ds), batch_size=2)
    print([b["x"].tolist() for b in pipe])
    """
)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return subprocess.run(
        args, capture_output=True, text=True, env=env, check=True, **kwargs
    )


@pytest.mark.slow
def test_extras_from_wheels_in_a_fresh_venv(wheel_dir, tmp_path):
    # This environment's pip installs into a venv made without one (pip's
    # --python); --no-compile skips byte-compiling jax, pyarrow and the rest,
    # which Python does on import anyway. The two cut this test from ~70 s to ~25 s.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet"]
    pip += ["--no-compile", "--find-links", str(wheel_dir)]

    _run([*pip, "datarax-integrations"])
    errors = __import__("json").loads(_run([python, "-c", MISSING]).stdout)
    for extra in ("hf", "tfds", "arrayrecord"):
        assert f'pip install "datarax-integrations[{extra}]"' in errors[extra], errors

    _run([*pip, "datarax-integrations[hf]"])
    assert _run([python, "-c", RUN_HF]).stdout.strip() == "[[0, 1], [2, 3], [4]]"
