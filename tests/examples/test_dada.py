"""The DADA flagship example trains three ways and learns a policy (small size)."""

from __future__ import annotations

import math

OPS = ("rotate", "shift", "zoom", "noise", "cutout", "flip")


def test_dada_learns_a_policy_and_every_run_trains(run_flagship, tmp_path):
    results = run_flagship("dada")
    # Same model, steps and data for the three runs; at the small size all
    # reach 0.93-0.95 on 1,297 test digits (seeds 0-2), an untrained one 0.1.
    for name in ("none", "fixed", "dada"):
        assert results[f"accuracy_{name}"] > 0.9, (name, results)
    probabilities = [results[f"probability_{op}"] for op in OPS]
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-3)
    # The policy starts uniform (1/6 each, magnitudes 0.5) and moved: total
    # variation 0.36-0.49 from uniform at seeds 0-2, zero if no gradient reached
    # it; flips, which turn digits into other shapes, fell to 0.005 or less.
    distance = sum(abs(p - 1 / len(OPS)) for p in probabilities) / 2
    assert distance > 0.15, probabilities
    assert results["probability_flip"] < 0.05, probabilities
    magnitudes = [value for name, value in results.items() if name.startswith("mag")]
    assert len(magnitudes) == 5
    # All fell from 0.5 to 0.08-0.18 at seeds 0-2.
    assert all(0.0 < m < 0.35 and math.isfinite(m) for m in magnitudes), magnitudes
    assert (tmp_path / "dada.png").stat().st_size > 10_000
