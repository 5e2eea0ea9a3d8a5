"""The DDSP flagship trains its decoder through Pipeline.scan; YIN tracks F0."""

from __future__ import annotations


def test_ddsp_decoder_learns_and_yin_tracks_f0(run_flagship, tmp_path):
    results = run_flagship("ddsp")
    # Seeds 0-2 give ratios 0.22-0.23, final/baseline 0.72-0.78, median F0
    # error 3-4 cents with no gross error: the bounds leave a wide margin.
    assert results["loss_ratio"] < 0.45, results
    assert results["loss_final"] < 0.9 * results["loss_baseline"], results
    assert results["loss_initial"] > results["loss_baseline"], results
    assert results["f0_median_error_cents"] < 15, results
    assert results["f0_gross_error_rate"] < 0.02, results
    figure = tmp_path / "ddsp.png"
    assert figure.stat().st_size > 10_000
