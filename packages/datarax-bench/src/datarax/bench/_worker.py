"""``python -m datarax.bench._worker``: one measurement in a fresh process.

The runner starts one worker per adapter and scenario, so one adapter's memory,
threads and worker processes never reach another's figures. The worker writes its
result row as JSON to ``--out``; a crash leaves no file and the runner reports the
exit status and the end of stderr instead.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import datarax.bench  # noqa: F401 - registers every adapter, peers included
from datarax.bench._measure import measure_cell


def main(argv: Sequence[str] | None = None) -> int:
    """Measures ``--adapter`` on ``--scenario`` and writes the row to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m datarax.bench._worker")
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--floor-unroll", type=int)
    args = parser.parse_args(argv)
    row = measure_cell(
        args.adapter,
        args.scenario,
        variant=args.variant,
        repeats=args.repeats,
        warmup=args.warmup,
        workdir=args.workdir,
        floor_unroll=args.floor_unroll,
    )
    args.out.write_text(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
