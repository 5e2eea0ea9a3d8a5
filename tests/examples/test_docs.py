"""Every Python example in the integration, source, operator and scaling docs runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "docs" / "sources.md",
    ROOT / "docs" / "operators.md",
    ROOT / "docs" / "scaling.md",
    *sorted((ROOT / "docs/integrations").glob("*.md")),
]
NEEDS = {"hf.md": "datasets", "tfds.md": "tensorflow_datasets"}
NEEDS["arrayrecord.md"] = "array_record"


def blocks() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            found.append(pytest.param(page.name, code, id=f"{page.stem}-{index}"))
    return found


@pytest.mark.parametrize(("page", "code"), blocks())
def test_doc_example_runs(page, code, tmp_path):
    pytest.importorskip(NEEDS.get(page, "datarax"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # examples that write files write them here
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
