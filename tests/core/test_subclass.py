"""Pipelines with their own __call__: custom topology on the same machinery."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


def noise():
    return ElementOperator(
        lambda r, k: {**r, "u": jax.random.uniform(k)}, stochastic=True
    )


class TwoBranches(Pipeline):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.left = noise()
        self.right = noise()

    def __call__(self, batch):
        left, right = self.left(batch), self.right(batch)
        return {"x": left["x"], "ul": left["u"], "ur": right["u"]}


def build(**kwargs):
    kwargs.setdefault("batch_size", 4)
    return TwoBranches(
        source=MemorySource({"x": np.arange(10, dtype=np.int32)}),
        num_epochs=None,
        **kwargs,
    )


def test_subclass_call_runs_in_every_mode():
    it = iter(build())
    by_iter = [next(it) for _ in range(3)]
    by_scan = build().scan(lambda b: b, length=3)
    for k in range(3):
        for field in ("x", "ul", "ur"):
            np.testing.assert_array_equal(by_iter[k][field], by_scan[field][k])


def test_subclass_operators_get_distinct_keys():
    batch = build().step()
    assert not np.allclose(batch["ul"], batch["ur"])


def test_subclass_keys_follow_records_not_batches():
    small = build(batch_size=2).scan(lambda b: b["ul"], length=5)
    large = build(batch_size=5).scan(lambda b: b["ul"], length=2)
    np.testing.assert_array_equal(np.ravel(small), np.ravel(large))


def test_subclass_is_an_nnx_module_with_state():
    pipe = build()
    assert isinstance(pipe, nnx.Module)
    pipe.step()
    assert int(nnx.state(pipe)["position"][...]) == 4
