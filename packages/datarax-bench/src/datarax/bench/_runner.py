"""The runner: every adapter on every scenario, one fresh process each."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datarax.bench._adapter import ADAPTERS
from datarax.bench._machine import machine_info, versions
from datarax.bench._measure import OK, error_row, measure_cell, skipped_row
from datarax.bench._report import render_report
from datarax.bench._results import SCHEMA, write_results
from datarax.bench._scenarios import SCENARIOS, Scenario


def _select(names: Sequence[str] | None, known: dict[str, Any], what: str) -> list[str]:
    if names is None:
        return list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown {what} {unknown}; choose from {', '.join(known)} "
            "(`datarax-bench list` shows them)."
        )
    return list(dict.fromkeys(names))


def _in_subprocess(
    adapter: str,
    scenario: str,
    *,
    variant: str,
    repeats: int,
    warmup: int,
    timeout: float,
    floor_unroll: int | None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="datarax-bench-") as folder:
        out = Path(folder) / "row.json"
        workdir = Path(folder) / "work"
        workdir.mkdir()
        command = [
            sys.executable, "-m", "datarax.bench._worker",
            "--adapter", adapter, "--scenario", scenario, "--variant", variant,
            "--repeats", str(repeats), "--warmup", str(warmup),
            "--workdir", str(workdir), "--out", str(out),
        ]  # fmt: skip
        if floor_unroll is not None:
            command += ["--floor-unroll", str(floor_unroll)]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_worker_env(SCENARIOS[scenario]),
            )
        except subprocess.TimeoutExpired:
            return error_row(
                adapter, scenario, variant, f"timed out after {timeout:g} s"
            )
        if out.exists():
            return json.loads(out.read_text())
        tail = (done.stderr or "").strip().splitlines()[-20:]
        last = tail[-1] if tail else "no output"
        return error_row(
            adapter,
            scenario,
            variant,
            f"worker exited with status {done.returncode}: {last}",
            "\n".join(tail),
        )


def _worker_env(scenario: Scenario) -> dict[str, str]:
    """The worker's environment: on a CPU, as many devices as the scenario shards.

    XLA's CPU backend serves one device unless told otherwise before it starts;
    the flag leaves GPU and TPU backends alone (a scenario needing more devices
    than a machine has is then skipped by the worker).
    """
    env = dict(os.environ)
    if scenario.devices > 1:
        flag = f"--xla_force_host_platform_device_count={scenario.devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    return env


def _unsupported(adapter: str, scenario: str) -> str | None:
    """The adapter's refusal of the scenario, asked here to spare a process."""
    try:
        return ADAPTERS[adapter]().unsupported(SCENARIOS[scenario])
    except Exception:  # the worker asks again and reports the fault as an error row
        return None


def _summary(row: dict[str, Any]) -> str:
    if row["status"] == OK:
        return (
            f"{row['x_floor']:.2f}x floor, {row['median_s'] * 1e3:.2f} ms, "
            f"first batch {row['first_batch_s'] * 1e3:.0f} ms, "
            f"RSS +{row['peak_rss_mb']:.0f} MB"
        )
    return f"{row['status']}: {row['reason']}"


def run_benchmark(
    *,
    out: Path,
    scenarios: Sequence[str] | None = None,
    adapters: Sequence[str] | None = None,
    variant: str = "small",
    repeats: int = 7,
    warmup: int = 1,
    isolate: bool = True,
    timeout: float = 600.0,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Measures adapters on scenarios and writes ``results.json`` and the report.

    Each adapter x scenario runs in a fresh ``python -m datarax.bench._worker``
    process (``isolate=True``), the Floor beside it, so memory figures never mix
    and ratios to the Floor come from one process. Missing adapters (their library
    is not installed) and unsupported scenarios become skipped rows; an adapter
    that crashes, hangs past ``timeout`` or serves the wrong number of records
    becomes an error row, and the run goes on. ``results.json`` is rewritten after
    every measurement, so an interrupted run keeps what it measured.

    Args:
        out: the folder for ``results.json``, ``report.md`` and the charts.
        scenarios: scenario ids; all by default.
        adapters: adapter names; all registered by default (missing ones are
            reported as skipped).
        variant: ``"tiny"``, ``"small"`` or ``"full"``.
        repeats: timed runs per measurement.
        warmup: untimed runs after the first batch.
        isolate: one process per measurement; ``False`` measures in this process
            (faster, but memory figures and JIT caches are shared).
        timeout: seconds one measurement may take.
        progress: show a progress bar on stderr, one line per measurement.
        command: the command line to record in the report.

    Returns:
        The results, as written to ``results.json``.

    Raises:
        ValueError: for unknown scenario or adapter names, an unknown variant, or
            ``repeats`` below 1.
    """
    scenario_ids = _select(scenarios, SCENARIOS, "scenarios")
    adapter_names = _select(adapters, ADAPTERS, "adapters")
    for scenario_id in scenario_ids:
        if variant not in SCENARIOS[scenario_id].variants:
            raise ValueError(
                f"scenario {scenario_id} has no variant {variant!r}; choose from "
                f"{', '.join(SCENARIOS[scenario_id].variants)}."
            )
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"need repeats >= 1 and warmup >= 0, got {repeats=}, {warmup=}."
        )
    out = Path(out)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "variant": variant,
        "repeats": repeats,
        "warmup": warmup,
        "isolated": isolate,
        "machine": machine_info(),
        "versions": versions(adapter_names),
        "scenarios": {
            sid: {
                "title": SCENARIOS[sid].title,
                "batch_size": SCENARIOS[sid].batch_size,
                "num_batches": SCENARIOS[sid].variants[variant].num_batches,
            }
            for sid in scenario_ids
        },
        "adapters": {
            name: {"kind": ADAPTERS[name].kind, "install": ADAPTERS[name].install}
            for name in adapter_names
        },
        "rows": [],
    }
    # The Floor first in each scenario: it times every unroll factor once, and the
    # other measurements of the scenario reuse its choice instead of compiling four.
    order = sorted(adapter_names, key=lambda name: name != "Floor")
    cells = [(a, s) for s in scenario_ids for a in order]
    floor_unroll: dict[str, int] = {}
    bar = _progress_bar(len(cells)) if progress else None
    started = time.perf_counter()
    for adapter, scenario in cells:
        if bar is not None:
            bar.set_description(f"{scenario} {adapter}")
        missing = ADAPTERS[adapter].missing()
        unsupported = None if missing is not None else _unsupported(adapter, scenario)
        if missing is not None or unsupported is not None:
            row = skipped_row(adapter, scenario, variant, missing or unsupported)
        elif isolate:
            row = _in_subprocess(
                adapter,
                scenario,
                variant=variant,
                repeats=repeats,
                warmup=warmup,
                timeout=timeout,
                floor_unroll=floor_unroll.get(scenario),
            )
        else:
            row = measure_cell(
                adapter,
                scenario,
                variant=variant,
                repeats=repeats,
                warmup=warmup,
                floor_unroll=floor_unroll.get(scenario),
            )
        if adapter == "Floor" and row["status"] == OK:
            floor_unroll[scenario] = row["settings"]["unroll"]
        results["rows"].append(row)
        results["elapsed_s"] = time.perf_counter() - started
        write_results(results, out)
        if bar is not None:
            bar.write(f"{scenario:<6} {adapter:<20} {_summary(row)}", file=sys.stderr)
            bar.update(1)
    if bar is not None:
        bar.close()
    render_report(out)
    return results


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm  # imported here: only the command line shows progress

    return tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)
