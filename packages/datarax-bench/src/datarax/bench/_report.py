"""``report.md`` and the charts of a run, rendered from its ``results.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datarax.bench._notes import interpretation_notes
from datarax.bench._results import load_results

REPORT_FILE = "report.md"
CHARTS = "charts"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _settings(settings: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in settings.items())


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return (
            f"| {row['adapter']} | {row['status']} | | | | | | | | | "
            f"{_cell(row['reason'])} |"
        )
    spread = f"{row['min_s'] * 1e3:.2f} – {row['max_s'] * 1e3:.2f}"
    # Each ratio is divided by the floor measured next to that adapter (same
    # process, same moment), not by the Floor row's own time: show which.
    floor = row.get("floor", {}).get("median_s")
    floor_ms = "" if floor is None else f"{floor * 1e3:.2f}"
    return (
        f"| {row['adapter']} | {row['x_floor']:.2f}x | {row['median_s'] * 1e3:.2f} | "
        f"{floor_ms} | "
        f"{spread} | {row['batches_per_s']:,.0f} | {row['records_per_s']:,.0f} | "
        f"{row['first_batch_s'] * 1e3:,.0f} | {row['peak_rss_mb']:.1f} | "
        f"{_cell(_settings(row['settings']))} |"
    )


def ratio_table(results: dict[str, Any]) -> str:
    """Markdown table of the ratio to the Floor: adapters by scenarios.

    Args:
        results: a run's results.

    Returns:
        The table; a cell reads ``1.70x``, ``skipped`` or ``error``.
    """
    scenarios = list(results["scenarios"])
    adapters = list(dict.fromkeys(r["adapter"] for r in results["rows"]))
    found = {(r["scenario"], r["adapter"]): r for r in results["rows"]}
    lines = [
        "| adapter | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    for adapter in adapters:
        cells = []
        for sid in scenarios:
            row = found.get((sid, adapter))
            if row is None:
                cells.append("")
            elif row["status"] == "ok":
                cells.append(f"{row['x_floor']:.2f}x")
            else:
                cells.append(row["status"])
        lines.append(f"| {adapter} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header(results: dict[str, Any]) -> list[str]:
    machine, versions = results["machine"], results["versions"]
    installed = ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
    absent = [k for k, v in versions.items() if v is None]
    lines = [
        "# datarax-bench report",
        "",
        f"- Command: `{results.get('command') or 'run_benchmark(...)'}`",
        f"- Created: {results['created']}; variant `{results['variant']}`, "
        f"{results['repeats']} timed repeats after {results['warmup']} warm-up, "
        + ("one process per measurement" if results["isolated"] else "in-process"),
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}",
        f"- JAX backend: {machine['jax_backend']} "
        f"({', '.join(machine['jax_devices'])})",
        f"- Versions: {installed}"
        + (f"; not installed: {', '.join(absent)}" if absent else ""),
    ]
    if "elapsed_s" in results:
        lines.append(f"- Run time: {results['elapsed_s']:.0f} s")
    return lines


def render_report(out: Path) -> Path:
    """Writes ``report.md`` and ``charts/*.png`` from ``out/results.json``.

    Each scenario gets a table (adapter, x floor, median, spread, batches/s,
    records/s, first-batch latency, peak RSS growth, settings) and a bar chart;
    an overview table and chart of the ratios come first and the interpretation
    notes last.

    Args:
        out: a folder written by :func:`~datarax.bench.run_benchmark`.

    Returns:
        The path of ``report.md``.
    """
    from datarax.bench._charts import charts_available, overview_chart, scenario_chart

    out = Path(out)
    results = load_results(out)
    rows = results["rows"]
    scenarios = list(results["scenarios"])
    lines = _header(results)
    lines += [
        "",
        "## Ratio to Floor",
        "",
        "Time of the same work divided by the hand-written jitted `lax.scan` (the "
        "Floor) measured in the same process; lower is better, 1.00x is the floor.",
        "",
        ratio_table(results),
    ]
    if not charts_available():
        lines += ["", "(No charts: matplotlib is not installed.)"]
    overview = overview_chart(rows, scenarios, out / CHARTS / "overview.png")
    if overview is not None:
        lines += ["", f"![ratio to Floor per scenario]({CHARTS}/overview.png)"]
    for sid in scenarios:
        info = results["scenarios"][sid]
        mine = [r for r in rows if r["scenario"] == sid]
        lines += [
            "",
            f"## {sid}: {info['title']}",
            "",
            f"{info['num_batches']} batches of {info['batch_size']} per timed run. "
            "Each x floor is the median divided by the floor measured with that "
            "adapter (÷ floor ms), so it can differ from the Floor row's median.",
            "",
            "| adapter | x floor | median ms | ÷ floor ms | spread ms (min – max) "
            "| batches/s | records/s | first batch ms | peak RSS MB | settings |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        lines += [_row_line(r) for r in mine]
        chart = scenario_chart(mine, f"{sid}: x Floor", out / CHARTS / f"{sid}.png")
        if chart is not None:
            lines += ["", f"![{sid} ratio to Floor]({CHARTS}/{sid}.png)"]
    errors = [r for r in rows if r["status"] == "error" and r.get("detail")]
    lines += ["", interpretation_notes(results).rstrip()]
    if errors:
        lines += ["", "## Errors", ""]
        for row in errors:
            lines += [
                f"### {row['adapter']} on {row['scenario']}",
                "",
                "```",
                row["detail"].rstrip(),
                "```",
                "",
            ]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
