"""report.md, the charts and the interpretation notes, from real results."""

from __future__ import annotations

import copy
import re

import matplotlib.image
import pytest

from datarax.bench import compare_results, render_report
from datarax.bench._notes import interpretation_notes
from datarax.bench._report import ratio_table
from datarax.bench._results import write_results


def row(adapter, scenario, kind, median_ms, floor_ms, rss=10.0, **extra):
    times = [median_ms / 1e3 * f for f in (0.9, 1.0, 1.2)]
    floor = [floor_ms / 1e3] * 3
    return {
        "adapter": adapter,
        "scenario": scenario,
        "variant": "small",
        "kind": kind,
        "status": "ok",
        "settings": {"workers": 2},
        "num_batches": 100,
        "batch_size": 32,
        "records_per_run": 3200,
        "times_s": times,
        "median_s": times[1],
        "min_s": times[0],
        "max_s": times[2],
        "q1_s": times[0],
        "q3_s": times[2],
        "first_batch_s": 0.3,
        "peak_rss_mb": rss,
        "floor": {"times_s": floor, "median_s": floor[0], "min_s": floor[0],
                  "max_s": floor[0], "q1_s": floor[0], "q3_s": floor[0],
                  "settings": {"unroll": 1}},
        "batches_per_s": 100 / times[1],
        "records_per_s": 3200 / times[1],
        "x_floor": times[1] / floor[0],
        **extra,
    }  # fmt: skip


@pytest.fixture
def results():
    rows = [
        row("Floor", "NLP-1", "floor", 1.0, 1.0),
        row("Datarax", "NLP-1", "datarax", 8.0, 1.0, rss=300.0),
        # Measured next to a slower floor than the Floor row's own 1.00 ms.
        row("Datarax-scan", "NLP-1", "datarax", 1.2, 1.5),
        row("NumPy-loop", "NLP-1", "hand", 20.0, 1.0, copy_s_per_batch=1e-4),
        row("SPDL", "NLP-1", "peer", 40.0, 1.0, rss=100.0, copy_s_per_batch=1e-5),
        row("Datarax", "CV-1", "datarax", 10.0, 10.0, rss=120.0),
        row("Datarax-scan", "CV-1", "datarax", 10.5, 10.0),
        {
            "adapter": "SPDL",
            "scenario": "CV-1",
            "variant": "small",
            "kind": "peer",
            "status": "error",
            "reason": "setup: RuntimeError: a | pipe",
            "detail": "Traceback ...",
        },
    ]
    return {
        "schema": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "command": "datarax-bench run --variant small",
        "variant": "small",
        "repeats": 3,
        "warmup": 1,
        "isolated": True,
        "machine": {"cpu": "Test CPU", "cores": 2, "platform": "Linux",
                    "jax_backend": "cpu", "jax_devices": ["TFRT_CPU_0"],
                    "JAX_PLATFORMS": "cpu"},
        "versions": {"python": "3.11", "jax": "0.10.2", "spdl": None},
        "scenarios": {
            "NLP-1": {"title": "tokens", "batch_size": 32, "num_batches": 100},
            "CV-1": {"title": "images", "batch_size": 32, "num_batches": 100},
        },
        "adapters": {},
        "rows": rows,
        "elapsed_s": 12.0,
    }  # fmt: skip


def test_report_has_header_tables_charts_and_notes(results, tmp_path):
    write_results(results, tmp_path)
    report = render_report(tmp_path).read_text()
    assert "`datarax-bench run --variant small`" in report
    assert "Test CPU, 2 cores" in report and "cpu (TFRT_CPU_0)" in report
    assert "jax 0.10.2" in report and "not installed: spdl" in report
    assert (
        "| Datarax | 8.00x | 8.00 | 1.00 | 7.20 – 9.60 | 12,500 | 400,000 | 300 |"
        in report
    )
    # The ratio is divided by the floor measured with it, and the row says so.
    assert "| Datarax-scan | 0.80x | 1.20 | 1.50 |" in report
    error_row = "| SPDL | error | | | | | | | | | setup: RuntimeError: a \\| pipe |"
    assert error_row in report
    for name in ("overview", "NLP-1", "CV-1"):
        assert f"(charts/{name}.png)" in report
        image = matplotlib.image.imread(tmp_path / "charts" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100
    assert "## Interpretation notes" in report and "## Errors" in report


def test_ratio_table_has_a_column_per_scenario(results):
    table = ratio_table(results).splitlines()
    assert table[0] == "| adapter | NLP-1 | CV-1 |"
    assert "| Datarax | 8.00x | 1.00x |" in table
    assert "| SPDL | 40.00x | error |" in table
    assert "| NumPy-loop | 20.00x |  |" in table


def test_notes_classify_each_gap_from_the_figures(results):
    notes = interpretation_notes(results)
    # Per-call overhead: iteration 8 ms against scan 1.2 ms over 100 batches.
    assert re.search(r"\*\*NLP-1\*\*: iteration takes 6\.7x .* 68 us more", notes)
    assert "**CV-1**: iteration and scan within 1.25x (0.95x)" in notes
    assert "**CV-1**: Datarax-scan is at the floor (1.05x)." in notes
    # Copies: 100 x 0.1 ms of 20 ms is 50 % for NumPy-loop, 2.5 % for SPDL.
    assert (
        "**NumPy-loop**: NLP-1 20.0x floor, copies 100 us/batch = 50%: copies are a "
        "main part of its gap." in notes
    )
    assert "**SPDL**: NLP-1 40.0x floor, copies 10 us/batch = 2%: its gap is" in notes
    assert "JAX's backend here is the CPU (2 cores): SPDL and datarax" in notes
    # Memory: 300 MB against 100 MB fails the 1.5x rule; CV-1 SPDL crashed.
    assert "**NLP-1**: fail. Datarax 300.0 MB, SPDL 100.0 MB" in notes
    assert "**CV-1**: Datarax +120 MB; SPDL did not run (setup: Runtime" in notes


def test_notes_on_an_accelerator_say_peers_computed_on_the_host(results):
    results["machine"]["jax_backend"] = "gpu"
    notes = interpretation_notes(results)
    assert "JAX's backend here is gpu: SPDL computed their transforms" in notes
    assert "every byte crosses the host-device link" in notes


def test_compare_reports_each_shared_ratio_and_its_growth(results):
    later = copy.deepcopy(results)
    for r in later["rows"]:
        if r["adapter"] == "Datarax" and r["scenario"] == "NLP-1":
            r["x_floor"] = 12.0
    changes = {(c.scenario, c.adapter): c for c in compare_results(results, later)}
    assert ("NLP-1", "Floor") not in changes and ("CV-1", "SPDL") not in changes
    assert changes["NLP-1", "Datarax"].growth == pytest.approx(1.5)
    assert changes["NLP-1", "Datarax-scan"].growth == pytest.approx(1.0)
