"""classify_rss_comparison: one test per rule, in the contract's order."""

from __future__ import annotations

import math
import re

import pytest

from datarax.bench import classify_rss_comparison


def test_datarax_above_the_hard_cap_fails_whatever_the_peer_measured():
    verdict, message = classify_rss_comparison(datarax_rss=4500.0, spdl_rss=0.2)
    assert verdict == "fail"
    assert "Datarax 4500.0 MB" in message and "SPDL 0.2 MB" in message
    assert "hard cap of 4000 MB" in message


def test_peer_below_the_null_floor_is_skipped_as_a_zero_copy_fixture():
    verdict, message = classify_rss_comparison(datarax_rss=300.0, spdl_rss=0.5)
    assert verdict == "skip"
    assert "Datarax 300.0 MB" in message and "SPDL 0.5 MB" in message
    assert "null floor of 1 MB" in message
    assert "zero-copy / pre-loaded fixture" in message


@pytest.mark.parametrize(("ours", "theirs"), [(30.0, 200.0), (200.0, 20.0)])
def test_either_side_below_the_noise_floor_is_skipped(ours, theirs):
    verdict, message = classify_rss_comparison(datarax_rss=ours, spdl_rss=theirs)
    assert verdict == "skip"
    assert f"Datarax {ours:.1f} MB" in message and f"SPDL {theirs:.1f} MB" in message
    assert "noise floor of 50 MB" in message


def test_datarax_above_max_ratio_fails():
    verdict, message = classify_rss_comparison(
        datarax_rss=400.0, spdl_rss=100.0, max_ratio=2.0
    )
    assert verdict == "fail"
    assert message == (
        "Datarax 400.0 MB, SPDL 100.0 MB: Datarax grew 4.00x SPDL's, above the max "
        "ratio 2x."
    )


def test_datarax_within_max_ratio_passes():
    verdict, message = classify_rss_comparison(datarax_rss=140.0, spdl_rss=100.0)
    assert verdict == "pass"
    assert message == (
        "Datarax 140.0 MB, SPDL 100.0 MB: Datarax grew 1.40x SPDL's, within the max "
        "ratio 1.5x."
    )


def test_boundaries_belong_to_the_milder_verdict():
    # "above" the cap / ratio and "below" the floors are strict.
    assert classify_rss_comparison(datarax_rss=4000.0, spdl_rss=4000.0)[0] == "pass"
    assert classify_rss_comparison(datarax_rss=50.0, spdl_rss=1.0)[0] == "skip"
    assert classify_rss_comparison(datarax_rss=75.0, spdl_rss=50.0)[0] == "pass"


def test_figures_must_be_finite_numbers():
    with pytest.raises(ValueError, match=re.escape("spdl_rss must be a finite")):
        classify_rss_comparison(datarax_rss=10.0, spdl_rss=math.nan)
    with pytest.raises(ValueError, match=re.escape("datarax_rss must be a finite")):
        classify_rss_comparison(datarax_rss="10", spdl_rss=10.0)
