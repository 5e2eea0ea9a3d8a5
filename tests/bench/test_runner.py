"""The runner: measured, skipped and error rows; results.json and the report."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
import pytest

from datarax.bench import (
    ADAPTERS,
    Adapter,
    IteratorAdapter,
    Scenario,
    load_results,
    measure_cell,
    run_benchmark,
    to_device,
)
from datarax.bench._runner import _in_subprocess


class Crashing(Adapter):
    """Fails in setup, like a peer with a broken install."""

    name = "Crashing"
    kind = "peer"

    def setup(self, scenario, variant, data, workdir):
        raise RuntimeError("the loader fell over")

    def run(self, num_batches):
        raise AssertionError("never reached")

    def batches(self, num_batches):
        raise AssertionError("never reached")


class Absent(Crashing):
    """Needs a library that is not installed."""

    name = "Absent"
    modules: ClassVar[tuple[str, ...]] = ("datarax_no_such_module",)
    install: ClassVar[str] = 'pip install "no-such-loader"'


class NoTokens(Crashing):
    """Cannot express integer token data."""

    name = "NoTokens"

    def unsupported(self, scenario: Scenario) -> str | None:
        return "integer fields are not supported" if scenario.id == "NLP-1" else None


class HalfBatches(IteratorAdapter):
    """Serves half of every batch: lighter work than the scenario's."""

    name = "HalfBatches"
    kind = "hand"

    def setup(self, scenario, variant, data, workdir):
        self._data, self._half = data[0], scenario.batch_size // 2

    def make_iterator(self) -> Iterator[dict[str, jax.Array]]:
        while True:
            yield to_device({k: v[: self._half] for k, v in self._data.items()})


@pytest.fixture
def registered(monkeypatch):
    for cls in (Crashing, Absent, NoTokens, HalfBatches):
        monkeypatch.setitem(ADAPTERS, cls.name, cls)


def test_rows_say_measured_skipped_or_error_and_the_run_goes_on(registered, tmp_path):
    results = run_benchmark(
        out=tmp_path,
        scenarios=["NLP-1"],
        adapters=["Crashing", "Absent", "NoTokens", "HalfBatches", "Datarax-scan"],
        variant="tiny",
        repeats=2,
        isolate=False,
        progress=False,
    )
    rows = {r["adapter"]: r for r in results["rows"]}
    assert rows["Crashing"]["status"] == "error"
    assert "setup: RuntimeError: the loader fell over" in rows["Crashing"]["reason"]
    assert "Traceback" in rows["Crashing"]["detail"]
    assert rows["Absent"] == {
        "adapter": "Absent",
        "scenario": "NLP-1",
        "variant": "tiny",
        "kind": "peer",
        "status": "skipped",
        "reason": 'datarax_no_such_module not installed: pip install "no-such-loader"',
    }
    assert rows["NoTokens"]["status"] == "skipped"
    assert rows["NoTokens"]["reason"] == "integer fields are not supported"
    assert rows["HalfBatches"]["status"] == "error"
    assert (
        "served [64] records per run of 4 batches, expected 128"
        in (rows["HalfBatches"]["reason"])
    )
    scan = rows["Datarax-scan"]
    assert scan["status"] == "ok"
    assert load_results(tmp_path) == json.loads(json.dumps(results))
    report = (tmp_path / "report.md").read_text()
    assert "| Absent | skipped |" in report and "no-such-loader" in report
    assert "### Crashing on NLP-1" in report


def test_an_adapter_that_fails_leaves_no_memory_sampler_running(registered):
    # A sampler left running outlives the row: it polls psutil for the rest of
    # the process, and breaks the first code that hides psutil (seen in CI).
    def samplers() -> int:
        return sum(t.name.endswith("(_sample)") for t in threading.enumerate())

    before = samplers()
    row = measure_cell("Crashing", "NLP-1", variant="tiny", repeats=1, warmup=1)
    assert row["status"] == "error"
    assert samplers() == before


def test_measurement_holds_every_figure_and_the_floor_of_its_process():
    row = measure_cell("Datarax-scan", "TAB-1", variant="tiny", repeats=3, warmup=1)
    assert row["status"] == "ok", row
    assert len(row["times_s"]) == len(row["floor"]["times_s"]) == 3
    assert row["min_s"] <= row["q1_s"] <= row["median_s"] <= row["q3_s"] <= row["max_s"]
    assert row["records_per_run"] == 4 * 256
    records = row["records_per_run"]
    assert row["records_per_s"] == pytest.approx(records / row["median_s"])
    assert row["batches_per_s"] == pytest.approx(4 / row["median_s"])
    assert row["x_floor"] == pytest.approx(row["median_s"] / row["floor"]["median_s"])
    assert row["first_batch_s"] > 0 and row["peak_rss_mb"] >= 0
    assert row["floor"]["settings"]["unroll"] in (1, 2, 4, 8)
    assert row["settings"]["mode"].startswith("Pipeline.scan")


def test_host_loader_rows_carry_the_cost_of_a_copy():
    row = measure_cell(
        "NumPy-loop", "NLP-1", variant="tiny", repeats=2, warmup=1, floor_unroll=1
    )
    assert row["status"] == "ok", row
    assert row["floor"]["settings"] == {"unroll": 1}
    assert 0 < row["copy_s_per_batch"] < row["median_s"]


def test_worker_that_dies_becomes_an_error_row_with_its_stderr():
    row = _in_subprocess(
        "NoSuchAdapter",
        "NLP-1",
        variant="tiny",
        repeats=1,
        warmup=1,
        timeout=120,
        floor_unroll=None,
    )
    assert row["status"] == "error"
    assert row["reason"].startswith("worker exited with status 1: KeyError")
    assert "NoSuchAdapter" in row["detail"]


def test_unknown_names_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown adapters \\['Gran'\\]; choose from"):
        run_benchmark(out=tmp_path, adapters=["Gran"], progress=False)
    with pytest.raises(ValueError, match="has no variant 'huge'"):
        run_benchmark(out=tmp_path, variant="huge", progress=False)


def test_results_record_machine_versions_and_command(registered, tmp_path):
    results = run_benchmark(
        out=tmp_path,
        scenarios=["NLP-1"],
        adapters=["Absent"],
        variant="tiny",
        isolate=False,
        progress=False,
        command="datarax-bench run --adapters Absent",
    )
    assert results["command"] == "datarax-bench run --adapters Absent"
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["jax_backend"] == jax.default_backend()
    assert machine["cpu"] and machine["jax_devices"]
    versions = results["versions"]
    assert versions["jax"] == jax.__version__ and versions["datarax-core"]
    assert versions["numpy"] == np.__version__
    assert versions["datarax_no_such_module"] is None
    assert Path(tmp_path / "report.md").exists()
