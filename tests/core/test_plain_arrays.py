"""Plain array attributes of stages and step modules behave as under ``nnx.jit``.

nnx treats a module's plain ``jax.Array`` attributes as state: ``nnx.jit`` carries
them in and writes new values back. Compiled runs of a pipeline do the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import DataSource, Pipeline
from datarax.core._compiled import _PROGRAMS
from datarax.sources import MemorySource


class Scale(nnx.Module):
    """A stage holding a plain array, not a Variable."""

    def __init__(self):
        self.factor = jnp.array(2.0)

    def __call__(self, batch):
        return {"x": batch["x"] * self.factor}


class Counter(nnx.Module):
    """A stage counting its calls in a plain array attribute."""

    def __init__(self):
        self.calls = jnp.array(0, jnp.int32)

    def __call__(self, batch):
        self.calls = self.calls + 1
        return batch


class Model(nnx.Module):
    """A step module with a parameter and a plain-array step counter."""

    def __init__(self):
        self.w = nnx.Param(jnp.ones(()))
        self.count = jnp.array(0, jnp.int32)

    def __call__(self, x):
        self.count = self.count + 1
        return (x * self.w[...]).sum()


def source():
    return MemorySource({"x": np.arange(8, dtype=np.float32)})


def make(stages, **kwargs):
    return Pipeline(source=source(), stages=stages, batch_size=4, **kwargs)


def test_a_stage_with_a_plain_array_serves_every_mode():
    expected = [[0.0, 2.0, 4.0, 6.0], [8.0, 10.0, 12.0, 14.0]]
    assert [b["x"].tolist() for b in make([Scale()])] == expected
    pipe = make([Scale()], num_epochs=None)
    assert np.asarray(pipe.scan(lambda b: b["x"], length=2)).tolist() == expected
    assert pipe.step()["x"].tolist() == expected[0]


def test_a_step_module_counter_persists_as_under_nnx_jit():
    reference = Model()
    step = nnx.jit(lambda m, x: m(x))
    for x in (jnp.arange(4.0), jnp.arange(4.0, 8.0), jnp.arange(4.0)):
        step(reference, x)

    model = Model()
    pipe = make([], num_epochs=None)
    out = pipe.scan(lambda m, b: m(b["x"]), length=3, modules=(model,))
    assert int(model.count) == int(reference.count) == 3
    assert np.asarray(out).tolist() == [6.0, 22.0, 6.0]
    pipe.scan(lambda m, b: m(b["x"]), length=3, modules=(model,))
    assert int(model.count) == 6


def test_writing_a_plain_array_back_is_not_a_structural_change():
    model = Model()
    pipe = make([], num_epochs=None)

    def step(m, b):
        return m(b["x"])

    pipe.scan(step, length=2, modules=(model,))
    (key,) = [k for k in _PROGRAMS[pipe].keys() if k[0] == "scan"]
    graph = _PROGRAMS[pipe].get(key).graph
    pipe.scan(step, length=2, modules=(model,))
    assert _PROGRAMS[pipe].get(key).graph is graph  # not flattened again
    assert int(model.count) == 4


def test_a_stage_updating_a_plain_array_is_exact_after_every_batch():
    counter = Counter()
    pipe = make([counter], num_epochs=3)
    seen = []
    for _ in pipe:
        seen.append(int(counter.calls))
    assert seen == [1, 2, 3, 4, 5, 6]
    pipe = make([Counter()], num_epochs=None)
    pipe.scan(lambda b: b["x"].sum(), length=5)
    assert int(pipe.stages[0].calls) == 5
    pipe.step()
    assert int(pipe.stages[0].calls) == 6


def test_a_replaced_plain_array_is_read_fresh():
    scale = Scale()
    pipe = make([scale], num_epochs=None)
    batches = iter(pipe)
    assert next(batches)["x"].tolist() == [0.0, 2.0, 4.0, 6.0]
    scale.factor = jnp.array(10.0)
    assert next(batches)["x"].tolist() == [40.0, 50.0, 60.0, 70.0]
    assert np.asarray(pipe.scan(lambda b: b["x"], length=1)).tolist() == [
        [0.0, 10.0, 20.0, 30.0]
    ]


class Containers(nnx.Module):
    """Plain arrays inside a list and a dict attribute, one of them updated."""

    def __init__(self):
        self.scales = nnx.data([jnp.array(2.0), jnp.array(3.0)])
        self.totals = nnx.data({"calls": jnp.array(0, jnp.int32)})

    def __call__(self, batch):
        self.totals["calls"] = self.totals["calls"] + 1
        return {"x": batch["x"] * self.scales[0] * self.scales[1]}


def test_arrays_in_list_and_dict_attributes_are_carried_too():
    stage = Containers()
    pipe = make([stage], num_epochs=None)
    out = pipe.scan(lambda b: b["x"], length=2)
    assert np.asarray(out).tolist() == [
        [0.0, 6.0, 12.0, 18.0],
        [24.0, 30.0, 36.0, 42.0],
    ]
    assert int(stage.totals["calls"]) == 2
    assert pipe.step()["x"].tolist() == [0.0, 6.0, 12.0, 18.0]
    assert int(stage.totals["calls"]) == 3


def test_a_list_that_grows_between_calls_is_seen():
    class Product(nnx.Module):
        def __init__(self):
            self.scales = nnx.data([jnp.array(2.0)])

        def __call__(self, batch):
            total = 1.0
            for scale in self.scales:
                total = total * scale
            return {"x": batch["x"] * total}

    stage = Product()
    pipe = make([stage], num_epochs=None)
    batches = iter(pipe)
    assert next(batches)["x"].tolist() == [0.0, 2.0, 4.0, 6.0]
    stage.scales.append(jnp.array(10.0))
    assert next(batches)["x"].tolist() == [80.0, 100.0, 120.0, 140.0]
    assert pipe.step()["x"].tolist() == [0.0, 20.0, 40.0, 60.0]


def test_arrays_in_other_containers_are_refused_with_the_fix():
    from typing import NamedTuple

    class Pair(NamedTuple):
        a: jnp.ndarray
        b: jnp.ndarray

    class Holder(nnx.Module):
        def __init__(self):
            self.pair = nnx.data(Pair(jnp.array(2.0), jnp.array(3.0)))

        def __call__(self, batch):
            return {"x": batch["x"] * self.pair.a}

    pipe = make([Holder()], num_epochs=None)
    with pytest.raises(TypeError) as info:
        pipe.step()
    message = info.exconly()
    assert "an array inside a Pair at 'stages/0/pair/a'" in message
    assert "nnx.Variable" in message


def test_a_source_holding_its_data_as_a_plain_array_is_refused():
    class Naive(DataSource):
        def __init__(self):
            self.rows = jnp.arange(10)

        def __len__(self):
            return 10

        @property
        def element_spec(self):
            return {"x": jax.ShapeDtypeStruct((), jnp.int32)}

        def get_batch_at(self, start, batch_size, key=None):
            index = (start + jnp.arange(batch_size)) % 10
            return {"x": self.rows[index]}

    pipe = Pipeline(source=Naive(), batch_size=4)
    with pytest.raises(TypeError) as info:
        next(iter(pipe))
    message = info.exconly()
    assert "the source Naive of the pipeline holds an array" in message
    assert "'source/rows'" in message and "DataVar" in message


def test_a_written_back_counter_does_not_reflatten_other_programs():
    model = Model()
    pipe = make([], num_epochs=None)

    def train(m, b):
        return m(b["x"])

    def evaluate(m, b):
        return (b["x"] * m.w[...]).sum()

    for _ in range(2):
        pipe.scan(train, length=1, modules=(model,))
        pipe.scan(evaluate, length=1, modules=(model,))
    graphs = {k[1]: _PROGRAMS[pipe].get(k).graph for k in _PROGRAMS[pipe].keys()}
    pipe.scan(train, length=1, modules=(model,))
    pipe.scan(evaluate, length=1, modules=(model,))
    after = {k[1]: _PROGRAMS[pipe].get(k).graph for k in _PROGRAMS[pipe].keys()}
    assert after == graphs  # the same Graph objects: nothing flattened again
    assert int(model.count) == 3
