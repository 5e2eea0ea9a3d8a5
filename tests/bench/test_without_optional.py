"""The bench without psutil and matplotlib (a GPU machine that installs nothing)."""

from __future__ import annotations

import sys

import numpy as np

from datarax.bench import render_report
from datarax.bench._memory import PeakRss
from datarax.bench._results import write_results


def test_peak_rss_measures_this_process_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    memory = PeakRss(interval=0.01)
    memory.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    grown = memory.stop()
    del block
    assert 48 < grown < 1024


def test_the_report_leaves_charts_out_without_matplotlib(monkeypatch, tmp_path):
    row = {
        "adapter": "Floor", "scenario": "NLP-1", "variant": "small", "kind": "floor",
        "status": "ok", "x_floor": 1.0, "median_s": 1e-3, "min_s": 1e-3,
        "max_s": 1e-3, "batches_per_s": 1e5, "records_per_s": 3e6,
        "first_batch_s": 0.1, "peak_rss_mb": 1.0, "settings": {},
        "floor": {"median_s": 1e-3}, "num_batches": 100,
    }  # fmt: skip
    write_results(
        {
            "schema": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "command": "x",
            "variant": "small",
            "repeats": 1,
            "warmup": 0,
            "isolated": False,
            "machine": {
                "cpu": "c",
                "cores": 1,
                "platform": "p",
                "jax_backend": "gpu",
                "jax_devices": ["cuda:0"],
            },
            "versions": {},
            "adapters": {},
            "rows": [row],
            "scenarios": {
                "NLP-1": {"title": "t", "batch_size": 32, "num_batches": 100}
            },
        },  # fmt: skip
        tmp_path,
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = render_report(tmp_path).read_text()
    assert "(No charts: matplotlib is not installed.)" in report
    assert "| Floor | 1.00x | 1.00 | 1.00 |" in report
    assert not (tmp_path / "charts").exists()
