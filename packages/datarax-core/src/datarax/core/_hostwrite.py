"""The one workaround over flax internals: writing the stream position per batch.

Iteration advances the pipeline's ``position`` Variable once per batch, between
compiled calls, on the host. The public ``Variable.set_raw_value`` checks the
trace level twice per write (once itself, once in ``Variable.__setattr__``):
3.4 us per write on the test machine (flax 0.12.8), against 0.3 us for storing
the value in the Variable's ``_raw_value`` slot, and a measured 50 -> 60 us per
served TAB-1 batch when iteration used the public call. Outside any trace that
check cannot fail, so this write, and only this one, stores the value directly
where this flax version keeps it (0.12.8 and 0.12.12 do), and falls back to the
public call elsewhere. ``tests/core/test_hostwrite.py`` fails loudly when the fast
path stops working on a new flax, so the fallback never goes unnoticed.
"""

from __future__ import annotations

from typing import Any

from flax import nnx


def _fast_write_works() -> bool:
    """Whether storing ``_raw_value`` directly is what ``set_raw_value`` does."""
    probe, reference = nnx.Variable(0), nnx.Variable(0)
    reference.set_raw_value(1)
    try:
        object.__setattr__(probe, "_raw_value", 1)
    except (AttributeError, TypeError):
        return False
    return probe.get_raw_value() == reference.get_raw_value() == 1


FAST_HOST_WRITE = _fast_write_works()


def write_host_value(variable: nnx.Variable, value: Any) -> None:
    """Sets ``variable`` to ``value`` from the host, outside any trace."""
    if FAST_HOST_WRITE:
        object.__setattr__(variable, "_raw_value", value)
    else:
        variable.set_raw_value(value)
