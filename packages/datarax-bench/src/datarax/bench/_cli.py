"""The ``datarax-bench`` command line (skeleton: ``list`` only for now)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``datarax-bench`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="datarax-bench",
        description="Measure datarax against the hand-written floor and peers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list scenarios and adapters")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("scenarios: none yet (see the benchmarking issue)")
        print("adapters: none yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
