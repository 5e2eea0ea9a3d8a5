"""The memory verdict: Datarax's peak-RSS growth against SPDL's."""

from __future__ import annotations

import math
import numbers

#: Datarax fails above this peak-RSS growth (MB), whatever the peer measured.
HARD_CAP_MB = 4000.0
#: Below this growth (MB) the peer copied nothing: a zero-copy or pre-loaded fixture.
NULL_FLOOR_MB = 1.0
#: Below this growth (MB) a figure is allocator and page-cache noise.
NOISE_FLOOR_MB = 50.0


def classify_rss_comparison(
    *, datarax_rss: float, spdl_rss: float, max_ratio: float = 1.5
) -> tuple[str, str]:
    """Compares peak-RSS growth of Datarax and SPDL on the same scenario.

    The rules apply in this order: fail when Datarax grew above
    :data:`HARD_CAP_MB` whatever SPDL measured; skip when SPDL grew below
    :data:`NULL_FLOOR_MB` (a zero-copy / pre-loaded fixture, nothing to compare
    against); skip when either grew below :data:`NOISE_FLOOR_MB`; fail when
    Datarax grew more than ``max_ratio`` times SPDL; pass otherwise. The message
    states both figures and the rule that decided.

    Args:
        datarax_rss: Datarax's peak-RSS growth in MB.
        spdl_rss: SPDL's peak-RSS growth in MB.
        max_ratio: the largest Datarax / SPDL ratio that passes.

    Returns:
        ``(verdict, message)`` with verdict ``"pass"``, ``"skip"`` or ``"fail"``.

    Raises:
        ValueError: for a figure that is not a finite number, or ``max_ratio``
            not above zero.

    Examples:
        >>> classify_rss_comparison(datarax_rss=120.0, spdl_rss=100.0)[0]
        'pass'
        >>> classify_rss_comparison(datarax_rss=5000.0, spdl_rss=6000.0)[0]
        'fail'
    """
    for name, value in (("datarax_rss", datarax_rss), ("spdl_rss", spdl_rss)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of MB, got {value!r}.")
    if not max_ratio > 0:
        raise ValueError(f"max_ratio must be above 0, got {max_ratio!r}.")
    figures = f"Datarax {datarax_rss:.1f} MB, SPDL {spdl_rss:.1f} MB"
    if datarax_rss > HARD_CAP_MB:
        return "fail", (
            f"{figures}: Datarax is above the hard cap of {HARD_CAP_MB:.0f} MB, "
            "which fails whatever the peer measured."
        )
    if spdl_rss < NULL_FLOOR_MB:
        return "skip", (
            f"{figures}: SPDL is below the null floor of {NULL_FLOOR_MB:.0f} MB, a "
            "zero-copy / pre-loaded fixture; nothing to compare against."
        )
    if datarax_rss < NOISE_FLOOR_MB or spdl_rss < NOISE_FLOOR_MB:
        return "skip", (
            f"{figures}: below the noise floor of {NOISE_FLOOR_MB:.0f} MB, where "
            "growth is allocator and page-cache noise; not compared."
        )
    ratio = datarax_rss / spdl_rss
    if ratio > max_ratio:
        return "fail", (
            f"{figures}: Datarax grew {ratio:.2f}x SPDL's, above the max ratio "
            f"{max_ratio:g}x."
        )
    return "pass", (
        f"{figures}: Datarax grew {ratio:.2f}x SPDL's, within the max ratio "
        f"{max_ratio:g}x."
    )
