"""The ``datarax-bench`` command line: ``list``, ``run``, ``report``, ``compare``."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datarax-bench",
        description="Measure datarax against the hand-written floor and peers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list scenarios and adapters")

    run = commands.add_parser("run", help="measure adapters on scenarios")
    run.add_argument(
        "--scenarios", type=_names, help="comma-separated ids (default: all)"
    )
    run.add_argument(
        "--adapters",
        type=_names,
        help="comma-separated names (default: all; missing ones are skipped rows)",
    )
    run.add_argument("--variant", default="small", help="tiny, small or full")
    run.add_argument("--repeats", type=int, default=7, help="timed runs (default 7)")
    run.add_argument(
        "--warmup", type=int, default=1, help="untimed runs first (default 1)"
    )
    run.add_argument(
        "--out", type=Path, help="output folder (default: datarax-bench-<time>)"
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one measurement may take (default 600)",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process (no memory isolation; for debugging)",
    )

    report = commands.add_parser("report", help="re-render report.md and charts")
    report.add_argument("folder", type=Path)

    compare = commands.add_parser(
        "compare", help="regression check: exit 1 if a ratio to Floor grew"
    )
    compare.add_argument("before", type=Path, help="earlier run folder")
    compare.add_argument("after", type=Path, help="later run folder")
    compare.add_argument(
        "--max-growth",
        type=float,
        default=1.2,
        help="largest allowed after/before ratio growth (default 1.2)",
    )
    return parser


def _list() -> int:
    import datarax.bench as bench

    print("scenarios:")
    for sid, scenario in bench.SCENARIOS.items():
        print(f"  {sid:<7} {scenario.title}")
    print("adapters:")
    for name, cls in bench.ADAPTERS.items():
        missing = cls.missing()
        state = "installed" if missing is None else f"missing: {missing}"
        print(f"  {name:<20} {cls.kind:<8} {state}")
    return 0


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from datarax.bench import run_benchmark

    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(f"datarax-bench-{stamp}")
    try:
        results = run_benchmark(
            out=out,
            scenarios=args.scenarios,
            adapters=args.adapters,
            variant=args.variant,
            repeats=args.repeats,
            warmup=args.warmup,
            isolate=not args.in_process,
            timeout=args.timeout,
            command=shlex.join(["datarax-bench", *argv]),
        )
    except ValueError as err:
        print(f"datarax-bench run: {err}", file=sys.stderr)
        return 2
    counts = {"ok": 0, "skipped": 0, "error": 0}
    for row in results["rows"]:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(
        f"{counts['ok']} measured, {counts['skipped']} skipped, {counts['error']} "
        f"errors in {results['elapsed_s']:.0f} s; report: {out / 'report.md'}"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from datarax.bench import render_report

    try:
        path = render_report(args.folder)
    except (FileNotFoundError, ValueError) as err:
        print(f"datarax-bench report: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from datarax.bench import compare_results, load_results
    from datarax.bench._compare import lost_rows

    if not args.max_growth > 0:
        print(
            f"datarax-bench compare: --max-growth must be > 0, got {args.max_growth}.",
            file=sys.stderr,
        )
        return 2
    try:
        before, after = load_results(args.before), load_results(args.after)
    except (FileNotFoundError, ValueError) as err:
        print(f"datarax-bench compare: {err}", file=sys.stderr)
        return 2
    variants = before.get("variant"), after.get("variant")
    if variants[0] != variants[1]:
        print(
            f"datarax-bench compare: the runs measured different variants "
            f"{variants[0]!r} and {variants[1]!r}; compare runs of one variant.",
            file=sys.stderr,
        )
        return 2
    lost = lost_rows(before, after)
    changes = compare_results(before, after)
    if not changes and not lost:
        print(
            "datarax-bench compare: no adapter x scenario was measured in both runs.",
            file=sys.stderr,
        )
        return 2
    grown = [c for c in changes if c.growth > args.max_growth]
    for change in changes:
        flag = "  REGRESSION" if change in grown else ""
        print(
            f"{change.scenario:<6} {change.adapter:<20} {change.before:7.2f}x -> "
            f"{change.after:7.2f}x floor ({change.growth:.2f}x){flag}"
        )
    if lost:
        print("measured before, not after: " + ", ".join(lost))
    if grown:
        print(
            f"{len(grown)} ratio(s) to Floor grew by more than {args.max_growth:g}x: "
            + ", ".join(f"{c.scenario} {c.adapter}" for c in grown)
        )
    if grown or lost:
        return 1
    print(f"no ratio to Floor grew by more than {args.max_growth:g}x.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``datarax-bench`` command; returns the exit status.

    ``list`` shows scenarios and adapters (installed, or the install command);
    ``run`` measures and writes ``results.json``, ``report.md`` and charts;
    ``report DIR`` renders them again; ``compare A B`` exits 1 when a ratio to
    the Floor grew by more than ``--max-growth`` from run A to run B.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list()
    if args.command == "run":
        return _run(args, argv)
    if args.command == "report":
        return _report(args)
    return _compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
