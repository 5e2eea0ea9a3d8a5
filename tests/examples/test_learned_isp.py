"""The learned-ISP flagship trains its ISP and keeps up with the fixed ISP."""

from __future__ import annotations

import math

INITIAL_GAMMA = 1 / 2.2


def test_learned_isp_trains_jointly_and_keeps_up_with_the_fixed_isp(
    run_flagship, tmp_path
):
    results = run_flagship("learned_isp")
    assert results["steps"] == 200
    fixed = results["fixed_isp_accuracy"]
    learned = results["learned_isp_accuracy"]
    # Seeds 0-3 gave fixed 0.77-0.87 and learned 0.82-0.88 (10 classes: chance 0.1).
    assert fixed > 0.7
    assert learned > 0.78
    # The learned ISP led by 1.7 to 9.1 points on every seed checked; a run where
    # it falls clearly behind the ISP it started from means the joint training
    # broke.
    assert learned >= fixed - 0.02
    # Every stage's parameters moved from their initialisation, and stay finite.
    params = {k: v for k, v in results.items() if not k.endswith("accuracy")}
    assert all(math.isfinite(v) for v in params.values())
    gains = [results[f"wb_gain_{c}"] for c in "rgb"]
    assert max(abs(g - 1.0) for g in gains) > 0.2
    assert abs(results["gamma"] - INITIAL_GAMMA) > 0.05
    assert results["demosaic_change"] > 0.1
    assert abs(results["denoise_centre"] - 0.6) > 0.05
    assert abs(results["tone_contrast"] - 4.0) > 0.2
    figure = tmp_path / "learned_isp.png"
    assert figure.is_file() and 0 < figure.stat().st_size < 150_000
