"""Bar charts of the ratio to the Floor (matplotlib, imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Bar colour per adapter kind.
COLORS = {
    "floor": "#7f7f7f",
    "datarax": "#1f77b4",
    "hand": "#ff7f0e",
    "peer": "#2ca02c",
}


def charts_available() -> bool:
    """Whether matplotlib can be imported (the report leaves charts out if not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    # Imported here: `import datarax.bench` must stay free of matplotlib, and Agg
    # renders without a display (servers, CI).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scenario_chart(rows: list[dict[str, Any]], title: str, path: Path) -> Path | None:
    """Saves a horizontal bar chart of ``x_floor`` per adapter as a PNG.

    Args:
        rows: the scenario's result rows; only ``"ok"`` rows are drawn.
        title: the chart's title.
        path: where to save it.

    Returns:
        ``path``, or ``None`` when no row has a ratio to draw or matplotlib is
        not installed.
    """
    drawn = [r for r in rows if r["status"] == "ok"]
    if not drawn or not charts_available():
        return None
    plt = _pyplot()
    names = [r["adapter"] for r in drawn]
    ratios = [max(r["x_floor"], 1e-3) for r in drawn]
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(drawn) + 1.4))
    axes.barh(names, ratios, color=[COLORS.get(r["kind"], "#9467bd") for r in drawn])
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.invert_yaxis()  # table order, top to bottom
    for y, ratio in enumerate(ratios):
        axes.annotate(
            f"{ratio:.2f}x",
            (ratio, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    axes.set_xlim(min(0.5, min(ratios) / 1.5), max(ratios) * 3)
    axes.set_xlabel("time / Floor time (log scale, lower is better)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def overview_chart(
    rows: list[dict[str, Any]], scenarios: list[str], path: Path
) -> Path | None:
    """Saves grouped bars of ``x_floor``: one group per scenario, one bar per adapter.

    Returns:
        ``path``, or ``None`` when no row has a ratio to draw or matplotlib is
        not installed.
    """
    drawn = [r for r in rows if r["status"] == "ok" and r["adapter"] != "Floor"]
    if not drawn or not charts_available():
        return None
    plt = _pyplot()
    adapters = list(dict.fromkeys(r["adapter"] for r in drawn))
    ratio = {(r["scenario"], r["adapter"]): r["x_floor"] for r in drawn}
    width = 0.8 / len(adapters)
    figure, axes = plt.subplots(figsize=(max(7, 1.3 * len(scenarios)), 5))
    for index, adapter in enumerate(adapters):
        xs = [
            s + index * width - 0.4 + width / 2
            for s, sid in enumerate(scenarios)
            if (sid, adapter) in ratio
        ]
        ys = [ratio[sid, adapter] for sid in scenarios if (sid, adapter) in ratio]
        bars = axes.bar(xs, ys, width, label=adapter)
        axes.bar_label(bars, [_ratio(y) for y in ys], fontsize=6, rotation=90)
    axes.set_yscale("log")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(scenarios)), scenarios)
    _log_ticks(axes, [r["x_floor"] for r in drawn])
    axes.set_ylabel("time / Floor time (log, lower is better)")
    axes.set_title("Ratio to the hand-written floor per scenario (1x = the floor)")
    # Below the plot: inside it the legend hid the tallest bars' labels.
    axes.legend(
        fontsize=8,
        ncols=min(len(adapters), 5),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _log_ticks(axes: Any, ratios: list[float]) -> None:
    """Ticks at 1-2-5 steps over the drawn range (a log axis shows only decades)."""
    low, high = min(ratios) / 1.5, max(ratios) * 6  # room for the bar labels
    ticks = [
        m * 10.0**e
        for e in range(-3, 4)
        for m in (1, 2, 5)
        if low <= m * 10.0**e <= high
    ]
    axes.set_ylim(low, high)
    axes.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    axes.minorticks_off()
