"""Regression check between two runs: did any ratio to the Floor grow?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RatioChange:
    """One adapter x scenario measured in both runs.

    Attributes:
        scenario: the scenario id.
        adapter: the adapter name.
        before: ratio to the Floor in the first run.
        after: ratio to the Floor in the second run.
    """

    scenario: str
    adapter: str
    before: float
    after: float

    @property
    def growth(self) -> float:
        """``after / before``: above 1 is slower relative to the Floor."""
        return self.after / self.before


def compare_results(before: dict[str, Any], after: dict[str, Any]) -> list[RatioChange]:
    """The ratio changes of every adapter x scenario measured (ok) in both runs.

    The Floor's own rows are left out (their ratio is 1 by definition).

    Args:
        before: the earlier run's results.
        after: the later run's results.

    Returns:
        One :class:`RatioChange` per pair, in the later run's order.
    """
    old = {
        (r["scenario"], r["adapter"]): r["x_floor"]
        for r in before["rows"]
        if r["status"] == "ok" and r["adapter"] != "Floor"
    }
    return [
        RatioChange(r["scenario"], r["adapter"], old[key], r["x_floor"])
        for r in after["rows"]
        if r["status"] == "ok"
        and (key := (r["scenario"], r["adapter"])) in old
        and old[key] > 0
    ]


def lost_rows(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Adapter x scenario pairs measured (ok) before that failed or skipped after.

    A loader that now crashes is a regression too, not a row to leave out.
    """
    old = {(r["scenario"], r["adapter"]) for r in before["rows"] if r["status"] == "ok"}
    return [
        f"{r['scenario']} {r['adapter']} ({r['status']})"
        for r in after["rows"]
        if r["status"] != "ok" and (r["scenario"], r["adapter"]) in old
    ]
