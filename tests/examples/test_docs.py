"""Every Python example in the integration, source, operator and scaling docs runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
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

# A page's blocks run one after another in one process, as a reader pastes them
# into one session, but each in fresh globals and its own folder, so that no
# block leans on another's names or files. One process per page, not per block:
# importing jax, datarax and the backends once took 20 s of CPU off the suite.
# What a block changes for the whole process (jax.config, os.environ) reaches
# the blocks after it: no block on these pages does.
RUNNER = textwrap.dedent(
    """
    import json, os, sys, traceback
    page, blocks = json.load(open(sys.argv[1]))
    folder = sys.argv[2]
    sys.argv[1:] = []  # as for python -c CODE
    for index, code in enumerate(blocks):
        os.chdir(os.path.join(folder, str(index)))
        try:
            code = compile(code, f"{page} block {index}", "exec")
            exec(code, {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            sys.exit(f"{page}: block {index} (counting from 0) failed")
    """
)


def blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def test_every_page_has_examples():
    assert all(blocks(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_doc_examples_run(page, tmp_path):
    pytest.importorskip(NEEDS.get(page.name, "datarax"))
    found = blocks(page)
    for index in range(len(found)):  # examples that write files write them here
        (tmp_path / str(index)).mkdir()
    (tmp_path / "blocks.json").write_text(json.dumps([page.name, found]))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
