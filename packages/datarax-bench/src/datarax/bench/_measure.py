"""One measurement: an adapter on a scenario, and the Floor in the same process."""

from __future__ import annotations

import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import numpy as np

from datarax.bench._adapter import ADAPTERS, Adapter
from datarax.bench._floor import FloorAdapter
from datarax.bench._memory import PeakRss
from datarax.bench._scenarios import SCENARIOS, Scenario, output_spec

#: Row statuses.
OK, SKIPPED, ERROR = "ok", "skipped", "error"


def base_row(adapter: str, scenario: str, variant: str) -> dict[str, Any]:
    """The identifying fields every result row starts with."""
    cls = ADAPTERS.get(adapter)
    return {
        "adapter": adapter,
        "scenario": scenario,
        "variant": variant,
        "kind": cls.kind if cls is not None else "unknown",
    }


def skipped_row(adapter: str, scenario: str, variant: str, reason: str) -> dict:
    """A row for an adapter that does not run here (missing or unsupported)."""
    return {**base_row(adapter, scenario, variant), "status": SKIPPED, "reason": reason}


def error_row(
    adapter: str, scenario: str, variant: str, message: str, detail: str = ""
) -> dict:
    """A row for an adapter that crashed; ``detail`` keeps the traceback."""
    return {
        **base_row(adapter, scenario, variant),
        "status": ERROR,
        "reason": message,
        "detail": detail,
    }


def _stats(times: list[float]) -> dict[str, Any]:
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "q1_s": quartiles[0],
        "q3_s": quartiles[2],
    }


def _timed_runs(adapter: Adapter, num_batches: int, repeats: int) -> tuple:
    times, records = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        records.add(adapter.run(num_batches))
        times.append(time.perf_counter() - start)
    return times, records


def _copy_seconds(scenario: Scenario, repeats: int = 20) -> float:
    """Fastest ``jax.device_put`` of one host batch of the output spec.

    What a host loader pays per batch at least just to hand it to JAX, measured
    in the same process and onto the same device as the adapter; the fastest of
    ``repeats`` because a cost floor is wanted, not the scheduler's noise.
    """
    batch = {
        name: np.ones((scenario.batch_size, *shape), dtype)
        for name, (shape, dtype) in output_spec(scenario).items()
    }
    jax.block_until_ready(jax.device_put(batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jax.device_put(batch))
        times.append(time.perf_counter() - start)
    return min(times)


def measure_cell(
    adapter_name: str,
    scenario_id: str,
    *,
    variant: str,
    repeats: int,
    warmup: int,
    workdir: Path | None = None,
    num_batches: int | None = None,
    floor_unroll: int | None = None,
) -> dict[str, Any]:
    """Measures one adapter on one scenario; never raises for the adapter's faults.

    In order: the data (and its ``.npy`` files for an on-disk scenario); the
    Floor's setup (before the memory baseline, so its device copy of the data does
    not count against the adapter); the adapter's setup and first batch (the
    first-batch latency, compile included); ``warmup`` untimed runs; ``repeats``
    timed runs of ``num_batches`` batches; the adapter's peak RSS growth over that
    whole stretch; then, with the adapter closed, the Floor's own warm-up and
    repeats.

    Args:
        adapter_name: a key of :data:`ADAPTERS`.
        scenario_id: a key of :data:`SCENARIOS`.
        variant: the scenario variant.
        repeats: timed runs.
        warmup: untimed runs after the first batch (at least one: the first run
            of ``num_batches`` compiles).
        workdir: a folder for the adapter's files; a temporary one by default.
        num_batches: batches per run; the variant's by default.
        floor_unroll: the Floor's unroll factor, when a Floor measurement of the
            same scenario already chose it; else the Floor times all of them.

    Returns:
        A result row (``status`` ``"ok"``, ``"skipped"`` or ``"error"``).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="datarax-bench-") as folder:
            return measure_cell(
                adapter_name,
                scenario_id,
                variant=variant,
                repeats=repeats,
                warmup=warmup,
                workdir=Path(folder),
                num_batches=num_batches,
                floor_unroll=floor_unroll,
            )
    scenario = SCENARIOS[scenario_id]
    cls = ADAPTERS[adapter_name]
    missing = cls.missing()
    if missing is not None:
        return skipped_row(adapter_name, scenario_id, variant, missing)
    adapter: Adapter | None = None
    floor: FloorAdapter | None = None
    memory: PeakRss | None = None
    stage = "setup"
    try:
        adapter = cls()
        unsupported = adapter.unsupported(scenario)
        if unsupported is not None:
            return skipped_row(adapter_name, scenario_id, variant, unsupported)
        if scenario.devices > len(jax.devices()):
            found = f"{len(jax.devices())} {jax.devices()[0].platform} device(s)"
            return skipped_row(
                adapter_name, scenario_id, variant,
                f"needs {scenario.devices} devices, this machine has {found}",
            )  # fmt: skip
        num = num_batches or scenario.variants[variant].num_batches
        data = scenario.data(variant)
        if scenario.on_disk:
            scenario.write_npy(workdir, variant)
        stage = "Floor setup"
        floor = FloorAdapter(unroll=floor_unroll)
        floor.setup(scenario, variant, data, workdir)
        if isinstance(adapter, FloorAdapter):
            # Measure a Floor that does not tune in its setup, like any adapter.
            adapter, floor = floor.tuned(), None
        stage = "setup"
        memory = PeakRss()
        memory.start()
        start = time.perf_counter()
        adapter.setup(scenario, variant, data, workdir)
        stage = "first batch"
        adapter.run(1)
        first_batch = time.perf_counter() - start
        stage = "warm-up"
        for _ in range(max(warmup, 1)):  # the first run of `num` batches compiles
            adapter.run(num)
        stage = "timed runs"
        times, records = _timed_runs(adapter, num, repeats)
        peak = memory.stop()
        settings = adapter.settings()
        stage = "close"
        adapter.close()
        adapter = None
        expected = num * scenario.batch_size
        if records != {expected}:
            return error_row(
                adapter_name,
                scenario_id,
                variant,
                f"served {sorted(records)} records per run of {num} batches, "
                f"expected {expected}: not the scenario's work",
            )
        if floor is not None:
            stage = "Floor runs"
            for _ in range(max(warmup, 1)):
                floor.run(num)
            floor_times, _ = _timed_runs(floor, num, repeats)
            floor_settings = floor.settings()
        else:
            floor_times, floor_settings = times, settings
    except Exception as err:  # any fault of the adapter becomes an error row
        return error_row(
            adapter_name,
            scenario_id,
            variant,
            f"{stage}: {type(err).__name__}: {err}",
            traceback.format_exc(),
        )
    finally:
        if memory is not None:  # an adapter that failed mid-measure: stop sampling
            memory.stop()
        for each in (adapter, floor):
            if each is not None:
                try:
                    each.close()
                except Exception:  # already reporting the first fault
                    pass
    row = {
        **base_row(adapter_name, scenario_id, variant),
        "status": OK,
        "settings": settings,
        "num_batches": num,
        "batch_size": scenario.batch_size,
        "records_per_run": expected,
        **_stats(times),
        "first_batch_s": first_batch,
        "peak_rss_mb": peak,
        "floor": {**_stats(floor_times), "settings": floor_settings},
    }
    median = row["median_s"]
    row["batches_per_s"] = num / median
    row["records_per_s"] = expected / median
    row["x_floor"] = median / row["floor"]["median_s"]
    if cls.kind in ("hand", "peer"):
        try:
            row["copy_s_per_batch"] = _copy_seconds(scenario)
        except Exception as err:  # a note's input, never worth losing the row
            row["copy_error"] = f"{type(err).__name__}: {err}"
    return row
