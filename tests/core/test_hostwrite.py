"""The iteration path's fast position write: correct, and loud when flax changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core._hostwrite import FAST_HOST_WRITE, write_host_value


def test_the_fast_host_write_is_active_on_this_flax():
    # If this fails, flax changed how a Variable stores its value: iteration now
    # pays the public set_raw_value per batch. Measure it again (floor_bench.py)
    # and update or drop datarax/core/_hostwrite.py.
    assert FAST_HOST_WRITE, "datarax.core._hostwrite fell back to set_raw_value"


def test_a_fast_write_is_what_every_flax_reader_sees():
    variable = nnx.Variable(np.asarray(0, np.int32))
    write_host_value(variable, np.asarray(7, np.int32))
    assert int(variable.get_raw_value()) == 7
    assert int(variable[...]) == 7

    class Holder(nnx.Module):
        def __init__(self, v):
            self.v = v

    holder = Holder(variable)
    assert int(nnx.state(holder)["v"][...]) == 7
    graphdef, state = nnx.split(holder)
    assert int(nnx.merge(graphdef, state).v[...]) == 7
    assert int(nnx.jit(lambda h: h.v[...] + 1)(holder)) == 8
    assert int(jax.jit(lambda x: x + 1)(variable[...])) == 8
    variable.set_value(jnp.asarray(3, jnp.int32))  # the public path still works
    assert int(variable[...]) == 3
