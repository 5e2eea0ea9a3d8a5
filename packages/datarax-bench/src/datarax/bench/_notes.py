"""The report's "Interpretation notes", written from the measured figures.

Each note names the category of a gap (see ``docs/benchmarks/interpretation.md``)
and the figures that put it there: per-call Python overhead (iteration against
``Pipeline.scan`` of the same pipeline), work inside the compiled program
(``Datarax-scan`` against the Floor), host-to-device copies (host loaders), peers
computing on the CPU whatever JAX's backend, and memory (Datarax against SPDL by
:func:`~datarax.bench.classify_rss_comparison`).
"""

from __future__ import annotations

from typing import Any

from datarax.bench._rss import classify_rss_comparison
from datarax.bench._scenarios import SCENARIOS

#: Ratios within this factor of 1 count as "the same time".
SAME = 1.25
#: A copy share of a host loader's time from which copies are a main cause.
COPY_SHARE = 0.3

Row = dict[str, Any]


def _ok(results: dict[str, Any]) -> dict[tuple[str, str], Row]:
    return {
        (r["scenario"], r["adapter"]): r for r in results["rows"] if r["status"] == "ok"
    }


def _per_batch_us(slow: Row, fast: Row) -> float:
    return (slow["median_s"] - fast["median_s"]) / slow["num_batches"] * 1e6


def _python_overhead(results: dict[str, Any], ok: dict) -> list[str]:
    lines = []
    for sid in results["scenarios"]:
        it, scan = ok.get((sid, "Datarax")), ok.get((sid, "Datarax-scan"))
        if it is None or scan is None:
            continue
        ratio = it["median_s"] / scan["median_s"]
        if ratio >= SAME:
            lines.append(
                f"**{sid}**: iteration takes {ratio:.1f}x the time of `Pipeline.scan` "
                f"over the same pipeline, {_per_batch_us(it, scan):.0f} us more per "
                "batch: per-call Python overhead (a dispatch and host bookkeeping "
                "per batch), which scan compiles away."
            )
        elif ratio <= 1 / SAME:
            lines.append(
                f"**{sid}**: iteration is {1 / ratio:.1f}x faster than scan: the "
                "compiled loop runs this body slower than the per-chunk programs "
                "iteration dispatches (XLA:CPU loop codegen), so the gap is not "
                "Python overhead."
            )
        else:
            lines.append(
                f"**{sid}**: iteration and scan within {SAME:g}x ({ratio:.2f}x): the "
                "work per batch hides per-call overhead at this batch size."
            )
    return lines or ["Datarax and Datarax-scan did not both run in any scenario."]


def _in_program(results: dict[str, Any], ok: dict) -> list[str]:
    lines = []
    for sid in results["scenarios"]:
        scan = ok.get((sid, "Datarax-scan"))
        if scan is None:
            continue
        x = scan["x_floor"]
        if x <= SAME:
            lines.append(f"**{sid}**: Datarax-scan is at the floor ({x:.2f}x).")
            continue
        floor_s = scan["floor"]["median_s"]
        extra = (scan["median_s"] - floor_s) / scan["num_batches"] * 1e6
        lines.append(
            f"**{sid}**: Datarax-scan at {x:.1f}x floor, {extra:.0f} us per batch of "
            "work inside the compiled program that the hand-written loop does not "
            "do (stream planning, epoch wrap-around, per-record key derivation, "
            "the source's reads"
            + (", a host callback per chunk read from disk" if _on_disk(sid) else "")
            + ")."
        )
    return lines or ["Datarax-scan did not run."]


def _on_disk(sid: str) -> bool:
    return sid in SCENARIOS and SCENARIOS[sid].on_disk


def _copies(results: dict[str, Any], ok: dict) -> list[str]:
    backend = results["machine"]["jax_backend"]
    by_adapter: dict[str, list[str]] = {}
    main_cause: dict[str, int] = {}
    for (sid, name), row in ok.items():
        if "copy_s_per_batch" not in row:
            continue
        copy = row["copy_s_per_batch"] * row["num_batches"]
        # A device_put measured alone can outlast a loop whose copies JAX aliased.
        share = min(copy / row["median_s"], 1.0)
        by_adapter.setdefault(name, []).append(
            f"{sid} {row['x_floor']:.1f}x floor, copies "
            f"{row['copy_s_per_batch'] * 1e6:.0f} us/batch = {share:.0%}"
        )
        main_cause[name] = main_cause.get(name, 0) + (share >= COPY_SHARE)
    if not by_adapter:
        return ["No host loader (NumPy-loop or a peer) ran."]
    where = (
        "on this CPU backend a copy is a host memory copy (or none, when JAX can "
        "alias the NumPy buffer)"
        if backend == "cpu"
        else f"on this {backend} backend every byte crosses the host-device link"
    )
    lines = [
        "Host loaders build each batch in host memory and hand it over with "
        f"`jax.device_put`; {where}. The share is `device_put` of one batch "
        "measured alone (the fastest of 20), times the batches, over the loader's "
        "time, at most 100%."
    ]
    for name, parts in by_adapter.items():
        verdict = (
            "copies are a main part of its gap"
            if main_cause[name]
            else "its gap is host-side work (reads, transforms, Python per batch), "
            "not the copy"
        )
        lines.append(f"**{name}**: {'; '.join(parts)}: {verdict}.")
    return lines


def _peers_on_cpu(results: dict[str, Any], ok: dict) -> list[str]:
    machine = results["machine"]
    backend = machine["jax_backend"]
    peers = sorted({name for (_, name), r in ok.items() if r["kind"] == "peer"})
    if not peers:
        return ["No peer loader ran (see the skipped rows for install commands)."]

    heavy = [
        sid
        for sid in results["scenarios"]
        if sid in SCENARIOS and (SCENARIOS[sid].ops or SCENARIOS[sid].dag)
    ]
    if backend == "cpu":
        lines = [
            f"JAX's backend here is the CPU ({machine['cores']} cores): "
            f"{', '.join(peers)} and datarax compute on the same cores, so "
            "transforms compare like for like, and a peer's worker threads or "
            "processes compete with JAX for them. On a GPU or TPU datarax's "
            "transforms move onto the device while a peer's stay on the host "
            "CPU: expect the gap to widen on the transform-heavy scenarios "
            f"({', '.join(heavy)})."
        ]
    else:
        lines = [
            f"JAX's backend here is {backend}: {', '.join(peers)} computed their "
            "transforms on the host CPU while datarax computed on the device, so on "
            f"the transform-heavy scenarios ({', '.join(heavy)}) part of each gap is "
            "device against host compute, not loader design."
        ]
    for peer in peers:
        parts = []
        for sid in results["scenarios"]:
            row, scan = ok.get((sid, peer)), ok.get((sid, "Datarax-scan"))
            if row is None:
                continue
            versus = (
                f", {row['median_s'] / scan['median_s']:.1f}x Datarax-scan"
                if scan is not None
                else ""
            )
            parts.append(f"{sid} {row['x_floor']:.1f}x floor{versus}")
        lines.append(f"**{peer}**: {'; '.join(parts)}.")
    return lines


def _memory(results: dict[str, Any], ok: dict) -> list[str]:
    lines = []
    reasons = {
        r["scenario"]: r["reason"]
        for r in results["rows"]
        if r["adapter"] == "SPDL" and r["status"] != "ok"
    }
    for sid in results["scenarios"]:
        ours, spdl = ok.get((sid, "Datarax")), ok.get((sid, "SPDL"))
        if ours is None:
            continue
        if spdl is None:
            why = reasons.get(sid, "not part of this run")
            lines.append(
                f"**{sid}**: Datarax +{ours['peak_rss_mb']:.0f} MB; SPDL did not run "
                f"({why}), so there is no memory comparison."
            )
            continue
        verdict, message = classify_rss_comparison(
            datarax_rss=ours["peak_rss_mb"], spdl_rss=spdl["peak_rss_mb"]
        )
        lines.append(f"**{sid}**: {verdict}. {message}")
    return lines or ["Datarax did not run: no memory comparison."]


def _below_floor(results: dict[str, Any], ok: dict) -> list[str]:
    lines = []
    for (sid, name), r in ok.items():
        if r["x_floor"] >= 1 / SAME or name == "Floor":
            continue
        scenario = SCENARIOS.get(sid)
        if (
            scenario is not None
            and scenario.stochastic
            and r["kind"]
            in (
                "hand",
                "peer",
            )
        ):
            why = (
                "the same arithmetic with another random number generator: the "
                "Floor derives a JAX threefry key per record, a host loader draws "
                "from its own (NumPy's PCG64, TF's or torch's Philox), which costs "
                "less per number on a CPU"
            )
        elif name == "Datarax":
            why = (
                "iteration runs chunks of batches as straight-line programs, which "
                "XLA:CPU vectorises better than the body of a `lax.scan` loop"
            )
        else:
            why = "noise, or a cheaper way to the same result; check the spread"
        lines.append(f"**{sid} {name}** at {r['x_floor']:.2f}x floor: {why}.")
    return lines or [f"No adapter ran faster than 1/{SAME:g} of the floor."]


def _noise(results: dict[str, Any], ok: dict) -> list[str]:
    noisy = [
        f"{sid} {name} ({r['max_s'] / r['min_s']:.1f}x)"
        for (sid, name), r in ok.items()
        if r["min_s"] > 0 and r["max_s"] / r["min_s"] > 1.5
    ]
    if not noisy:
        return ["Every measurement's slowest repeat is within 1.5x of its fastest."]
    return [
        "Slowest repeat more than 1.5x the fastest (other processes, page cache, "
        f"garbage collection): {', '.join(noisy)}. Read their medians with the "
        "spread in mind."
    ]


def interpretation_notes(results: dict[str, Any]) -> str:
    """The "Interpretation notes" section of a report, in Markdown.

    Args:
        results: a run's results (as in ``results.json``).

    Returns:
        Markdown: one subsection per category, a bullet per finding.
    """
    ok = _ok(results)
    sections = [
        ("Per-call Python overhead (Datarax against Datarax-scan)", _python_overhead),
        ("Inside the compiled program (Datarax-scan against Floor)", _in_program),
        ("Host-to-device copies (host loaders)", _copies),
        ("Peers iterate on the CPU whatever JAX's backend", _peers_on_cpu),
        ("Below the floor", _below_floor),
        ("Memory (Datarax against SPDL)", _memory),
        ("Noise", _noise),
    ]
    parts = ["## Interpretation notes", ""]
    parts.append(
        "Generated from the figures above; the categories are explained in "
        "`docs/benchmarks/interpretation.md`."
    )
    for title, make in sections:
        parts += ["", f"### {title}", ""]
        parts += [f"- {line}" for line in make(results, ok)]
    return "\n".join(parts) + "\n"
