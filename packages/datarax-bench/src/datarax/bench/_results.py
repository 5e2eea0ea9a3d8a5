"""``results.json``: what a run measured, read and written in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Layout version of ``results.json``.
SCHEMA = 1
RESULTS_FILE = "results.json"


def write_results(results: dict[str, Any], out: Path) -> Path:
    """Writes ``results`` as ``out/results.json``; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    path.write_text(json.dumps(results, indent=1))
    return path


def load_results(path: Path) -> dict[str, Any]:
    """Reads a run's results from its folder or its ``results.json``.

    Raises:
        FileNotFoundError: naming the path, when there is no results file.
        ValueError: when the file is not a datarax-bench results file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; give a folder written by `datarax-bench run` "
            "or its results.json."
        )
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or "rows" not in results:
        raise ValueError(f"{path} is not a datarax-bench results file (no 'rows').")
    return results
