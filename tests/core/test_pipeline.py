"""Pipeline: construction, iteration, step() and scan, and that they share a stream."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from datarax import DataVar, Pipeline
from datarax.core import StreamVar
from datarax.core._feed import _staging
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


def make(data, **kwargs) -> Pipeline:
    kwargs.setdefault("batch_size", 8)
    return Pipeline(source=MemorySource(data), **kwargs)


def labels(batches) -> list[int]:
    return [int(x) for b in batches for x in np.asarray(b["label"])]


# -- construction -------------------------------------------------------------------


def test_source_must_be_a_datasource():
    with pytest.raises(TypeError, match=re.escape("wrap arrays in")):
        Pipeline(source={"x": np.arange(3)}, batch_size=2)


@pytest.mark.parametrize("bad", [0, -3])
def test_batch_size_must_be_positive(tokens, bad):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        make(tokens, batch_size=bad)


def test_batch_size_must_be_an_int(tokens):
    with pytest.raises(TypeError, match="batch_size must be a Python int"):
        make(tokens, batch_size=8.0)


def test_num_epochs_must_be_positive_or_none(tokens):
    with pytest.raises(ValueError, match="num_epochs must be at least 1"):
        make(tokens, num_epochs=0)


def test_stage_must_be_callable(tokens):
    with pytest.raises(TypeError, match=re.escape("stage 1 is a int")):
        make(tokens, stages=[lambda b: b, 3])


def test_stage_returning_non_dict_names_the_stage(tokens):
    pipe = make(tokens, stages=[lambda b: b, lambda b: b["label"]])
    with pytest.raises(TypeError, match=re.escape("stage 1 (<lambda>) returned")):
        next(iter(pipe))


def test_public_attributes(tokens):
    stage = ElementOperator(lambda r, k: r)
    pipe = make(tokens, stages=[stage], batch_size=5)
    assert pipe.batch_size == 5
    assert pipe.stages[0] is stage
    assert isinstance(pipe.source, MemorySource)
    assert pipe.nodes is None and pipe.edges is None and pipe.sink is None


def test_dataset_is_not_carried_state(tokens):
    pipe = make(tokens)
    carried = nnx.state(pipe, nnx.Not(DataVar))
    leaves = jax.tree.leaves(carried)
    # position, epoch and the seed key: nothing the size of the dataset.
    assert sum(np.asarray(x).size for x in leaves) <= 4
    assert len(jax.tree.leaves(nnx.state(pipe, StreamVar))) == 3
    assert jax.tree.leaves(nnx.state(pipe, DataVar))[0].shape == (50, 4)


# -- iteration ----------------------------------------------------------------------


def test_iteration_serves_one_epoch_in_order_with_short_last_batch(tokens):
    batches = list(make(tokens, batch_size=16))
    assert [len(b["label"]) for b in batches] == [16, 16, 16, 2]
    assert labels(batches) == list(range(50))
    np.testing.assert_array_equal(batches[0]["tokens"], tokens["tokens"][:16])


def test_drop_last_drops_only_the_final_short_batch(tokens):
    batches = list(make(tokens, batch_size=16, num_epochs=2, drop_last=True))
    # 100 records: batches cross the epoch boundary; only the last 4 are dropped.
    assert [len(b["label"]) for b in batches] == [16] * 6
    assert labels(batches) == list(range(50)) + list(range(46))


def test_num_epochs_bounds_records_exactly(tokens):
    batches = list(make(tokens, batch_size=7, num_epochs=3))
    assert sum(len(b["label"]) for b in batches) == 150
    assert labels(batches) == list(range(50)) * 3


def test_position_and_epoch_are_variables_and_iteration_resumes(tokens):
    pipe = make(tokens, batch_size=8, num_epochs=2)
    first = iter(pipe)
    head = [next(first) for _ in range(7)]
    assert int(pipe.position[...]) == 56 and int(pipe.epoch[...]) == 1
    rest = list(iter(pipe))  # a second iter() continues where the first stopped
    assert labels(head + rest) == list(range(50)) * 2
    assert int(pipe.position[...]) == 100 and int(pipe.epoch[...]) == 2
    assert list(iter(pipe)) == []


def test_endless_stream_runs_past_many_epochs(tokens):
    pipe = make(tokens, batch_size=32, num_epochs=None)
    it = iter(pipe)
    got = labels(next(it) for _ in range(10))
    assert got == [i % 50 for i in range(320)]


def test_shuffled_iteration_is_a_permutation_per_epoch(tokens):
    pipe = make(tokens, batch_size=9, num_epochs=3, shuffle=True)
    got = labels(pipe)
    epochs = [got[i * 50 : (i + 1) * 50] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(50))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != list(range(50))


def test_shuffle_needs_a_source_that_can(tokens):
    class Plain(MemorySource):
        supports_shuffle = False

    with pytest.raises(ValueError, match="shuffle=True needs a source that can"):
        Pipeline(source=Plain(tokens), batch_size=4, shuffle=True)


def test_seed_changes_the_order(tokens):
    a = labels(make(tokens, shuffle=True, rngs=nnx.Rngs(0)))
    b = labels(make(tokens, shuffle=True, rngs=nnx.Rngs(1)))
    assert a != b and sorted(a) == sorted(b)


def test_prefetched_batches_see_parameter_updates(tokens):
    """A write to a stage's parameter between batches is never served stale."""

    class Scale(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.float32(1.0))

        def __call__(self, batch):
            return {"x": batch["label"].astype(jnp.float32) * self.w[...]}

    stage = Scale()
    pipe = make(tokens, stages=[stage], batch_size=4, num_epochs=None)
    it = iter(pipe)
    np.testing.assert_allclose(next(it)["x"], [0, 1, 2, 3])
    stage.w[...] = jnp.float32(10.0)
    np.testing.assert_allclose(next(it)["x"], [40, 50, 60, 70])
    np.testing.assert_allclose(next(it)["x"], [80, 90, 100, 110])


def test_stage_replaced_between_batches_is_never_served_stale(tokens):
    pipe = make(tokens, stages=[lambda b: b], batch_size=4, num_epochs=None)
    it = iter(pipe)
    next(it)
    pipe.stages[0] = lambda b: {"label": b["label"] * 0}
    assert np.asarray(next(it)["label"]).tolist() == [0, 0, 0, 0]


def test_stateful_stage_state_is_exact_after_each_batch(tokens):
    """A stage with its own RNG stream: iterate 3 batches, then scan 2, equals 5."""

    class Noise(nnx.Module):
        def __init__(self):
            self.rngs = nnx.Rngs(noise=7)

        def __call__(self, batch):
            noise = jax.random.uniform(self.rngs.noise(), batch["label"].shape)
            return {"label": batch["label"], "noise": noise}

    def build():
        return make(tokens, stages=[Noise()], batch_size=4, num_epochs=None)

    mixed = build()
    it = iter(mixed)
    first = [next(it)["noise"] for _ in range(3)]
    then = mixed.scan(lambda b: b["noise"], length=2)
    whole = build().scan(lambda b: b["noise"], length=5)
    np.testing.assert_array_equal(np.stack(first), whole[:3])
    np.testing.assert_array_equal(then, whole[3:])


# -- one stream, three modes --------------------------------------------------------


@given(
    batch_size=st.integers(1, 23),
    steps=st.integers(1, 9),
    shuffle=st.booleans(),
)
def test_iteration_step_and_scan_serve_the_same_records(batch_size, steps, shuffle):
    data = {"label": np.arange(37, dtype=np.int32)}

    def build():
        return make(data, batch_size=batch_size, num_epochs=None, shuffle=shuffle)

    it = iter(build())
    by_iter = labels(next(it) for _ in range(steps))
    stepper = build()
    by_step = labels(stepper.step() for _ in range(steps))
    by_scan = np.asarray(build().scan(lambda b: b["label"], length=steps)).ravel()
    assert by_iter == by_step == by_scan.tolist()


@given(batch_a=st.integers(1, 20), batch_b=st.integers(1, 20))
def test_record_stream_does_not_depend_on_batch_size(batch_a, batch_b):
    data = {"label": np.arange(29, dtype=np.int32)}
    total = 60

    def stream(batch_size):
        pipe = make(data, batch_size=batch_size, num_epochs=None, shuffle=True)
        steps = -(-total // batch_size)
        return np.asarray(pipe.scan(lambda b: b["label"], length=steps)).ravel()[:total]

    np.testing.assert_array_equal(stream(batch_a), stream(batch_b))


def test_scan_and_iteration_continue_each_other(tokens):
    pipe = make(tokens, batch_size=6, num_epochs=None, shuffle=True)
    first = pipe.scan(lambda b: b["label"], length=4)
    it = iter(pipe)
    middle = [next(it)["label"] for _ in range(3)]
    last = pipe.step()["label"]
    got = np.concatenate([np.ravel(first), *middle, last])
    whole = make(tokens, batch_size=6, num_epochs=None, shuffle=True)
    expected = np.ravel(whole.scan(lambda b: b["label"], length=8))
    np.testing.assert_array_equal(got, expected)
    assert int(pipe.position[...]) == 48


# -- step() -------------------------------------------------------------------------


def test_step_inside_user_jit_advances_the_position(tokens):
    pipe = make(tokens, batch_size=8, num_epochs=None)

    @nnx.jit
    def fetch(pipe):
        return pipe.step()["label"]

    assert np.asarray(fetch(pipe)).tolist() == list(range(8))
    assert np.asarray(fetch(pipe)).tolist() == list(range(8, 16))
    assert int(pipe.position[...]) == 16
    # Eager step and iteration continue from the jitted position.
    assert np.asarray(pipe.step()["label"]).tolist() == list(range(16, 24))


def test_gradients_reach_stage_parameters_through_step(tokens):
    class Affine(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.float32(2.0))

        def __call__(self, batch):
            return {"x": batch["label"].astype(jnp.float32) * self.w[...]}

    pipe = make(tokens, stages=[Affine()], batch_size=4, num_epochs=None)

    @nnx.jit
    def grads(pipe):
        return nnx.grad(lambda p: p.step()["x"].sum())(pipe)

    g = grads(pipe)
    # d/dw sum(w * [0, 1, 2, 3]) = 6
    assert float(g["stages"][0]["w"][...]) == pytest.approx(6.0)
    # nnx.grad alone, without a jit: the pipeline is an argument (its
    # parameters are traced, its position stays on the host) and is served.
    g = nnx.grad(lambda p: p.step()["x"].sum())(pipe)
    # d/dw sum(w * [4, 5, 6, 7]) = 22: the jitted call moved the position on.
    assert float(g["stages"][0]["w"][...]) == pytest.approx(22.0)
    assert int(pipe.position[...]) == 8
    # What tells nnx.grad alone from a staging trace around it (a jit closing
    # over the pipeline, which would bake the batch in).
    seen = []
    jax.grad(lambda w: seen.append(_staging()) or w)(1.0)
    jax.jit(lambda: seen.append(_staging()))()
    assert seen == [False, True] and not _staging()


# -- scan ---------------------------------------------------------------------------


class Counter(nnx.Module):
    def __init__(self):
        self.count = nnx.Variable(jnp.int32(0))
        self.total = nnx.Variable(jnp.int32(0))

    def __call__(self, batch):
        self.count[...] += 1
        self.total[...] += batch["label"].sum()
        return self.total[...]


def test_scan_module_mutations_persist(tokens):
    pipe = make(tokens, batch_size=10, num_epochs=None)
    counter = Counter()
    outs = pipe.scan(lambda c, b: c(b), length=7, modules=(counter,))
    assert int(counter.count[...]) == 7
    expected = np.cumsum(
        [sum(j % 50 for j in range(i * 10, i * 10 + 10)) for i in range(7)]
    )
    np.testing.assert_array_equal(outs, expected)
    assert int(counter.total[...]) == expected[-1]
    assert int(pipe.position[...]) == 70 and int(pipe.epoch[...]) == 1


def test_scan_with_init_carry_returns_carry_and_stacked_outputs(tokens):
    pipe = make(tokens, batch_size=5, num_epochs=None)

    def step(carry, batch):
        carry = carry + batch["label"].sum()
        return carry, batch["label"][0]

    carry, firsts = pipe.scan(step, length=4, init_carry=jnp.int32(0))
    assert int(carry) == sum(range(20))
    assert np.asarray(firsts).tolist() == [0, 5, 10, 15]


def test_scan_trains_a_model(tokens):
    data = {
        "x": (tokens["tokens"] % 7).astype(np.float32),
        "y": (tokens["label"] % 2).astype(np.float32),
    }
    pipe = make(data, batch_size=10, num_epochs=None, shuffle=True)
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))

    def step(model, batch):
        def loss_fn(model):
            return ((model(batch["x"])[:, 0] - batch["y"]) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.01 * g, params, grads))
        return loss

    kernel = np.asarray(model.kernel[...]).copy()
    losses = pipe.scan(step, length=50, modules=(model,))
    assert losses.shape == (50,)
    assert not np.allclose(model.kernel[...], kernel)  # the update persisted
    assert float(losses[-10:].mean()) < float(losses[:10].mean())


def test_stage_parameters_updated_in_scan_feed_the_next_batches(tokens):
    class Scale(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.float32(1.0))

        def __call__(self, batch):
            return {"x": jnp.ones_like(batch["label"], jnp.float32) * self.w[...]}

    stage = Scale()
    pipe = make(tokens, stages=[stage], batch_size=2, num_epochs=None)

    def step(stage, batch):
        stage.w[...] += 1.0
        return batch["x"][0]

    assert np.asarray(pipe.scan(step, length=4, modules=(stage,))).tolist() == [
        1,
        2,
        3,
        4,
    ]
    assert float(stage.w[...]) == 5.0


def test_scan_does_not_trace_step_fn_again(tokens):
    pipe = make(tokens, batch_size=4, num_epochs=None)
    traces = []

    def step(batch):
        traces.append(1)
        return batch["label"].sum()

    pipe.scan(step, length=3)
    first = len(traces)
    assert first >= 1
    for _ in range(3):
        pipe.scan(step, length=3)
    assert len(traces) == first
    pipe.scan(step, length=4)  # another length is another program
    assert len(traces) > first


def test_scan_cache_never_runs_a_stale_body_for_a_recycled_id(tokens):
    pipe = make(tokens, batch_size=4, num_epochs=None)
    results = []
    for k in range(3):
        # Fresh lambdas often reuse the id of the collected previous one.
        results.append(
            int(pipe.scan(lambda b, k=k: b["label"].sum() * 0 + k, length=1)[0])
        )
    assert results == [0, 1, 2]


def test_scan_cache_key_and_step_fn_reference(tokens):
    from datarax.core._compiled import _PROGRAMS

    pipe = make(tokens, batch_size=4, num_epochs=None)

    def step(b):
        return b["label"].sum()

    pipe.scan(step, length=2)
    keys = [k for k in _PROGRAMS[pipe].keys() if k[0] == "scan"]
    assert len(keys) == 1
    kind, fn_id, length, num_modules, has_carry, _ = keys[0]
    assert (fn_id, length, num_modules, has_carry) == (id(step), 2, 0, False)
    assert _PROGRAMS[pipe].get(keys[0]).owner is step


def test_scan_sees_a_structural_change_between_calls(tokens):
    class Gate(nnx.Module):
        def __init__(self):
            self.on = True

        def __call__(self, batch):
            return {"label": batch["label"] * (1 if self.on else 0)}

    gate = Gate()
    pipe = make(tokens, stages=[gate], batch_size=4, num_epochs=None)

    def step(b):
        return b["label"].sum()

    assert int(pipe.scan(step, length=1)[0]) == 6
    gate.on = False  # a static attribute: part of the graph's structure
    assert int(pipe.scan(step, length=1)[0]) == 0


def test_scan_rejects_structure_changes_inside_the_step(tokens):
    pipe = make(tokens, batch_size=4, num_epochs=None)
    counter = Counter()

    def step(c, b):
        c.extra = nnx.Variable(jnp.int32(1))
        return b["label"].sum()

    with pytest.raises(ValueError, match="changed the structure"):
        pipe.scan(step, length=2, modules=(counter,))


def test_scan_argument_errors(tokens):
    pipe = make(tokens)
    with pytest.raises(ValueError, match="length must be a Python int >= 1"):
        pipe.scan(lambda b: b, length=0)
    with pytest.raises(TypeError, match=re.escape("modules[0] is a ndarray")):
        pipe.scan(lambda m, b: b, length=1, modules=(np.zeros(2),))
    with pytest.raises(ValueError, match="unroll must be"):
        pipe.scan(lambda b: b, length=2, unroll=0)


@pytest.mark.parametrize("unroll", [1, 3, 8])
def test_unroll_does_not_change_results(tokens, unroll):
    pipe = make(tokens, batch_size=6, num_epochs=None, shuffle=True)
    got = pipe.scan(lambda b: b["label"], length=10, unroll=unroll)
    ref = make(tokens, batch_size=6, num_epochs=None, shuffle=True)
    np.testing.assert_array_equal(
        got, ref.scan(lambda b: b["label"], length=10, unroll=1)
    )


def test_scan_batches_are_full_and_run_past_num_epochs(tokens):
    pipe = make(tokens, batch_size=16, num_epochs=1)
    out = pipe.scan(lambda b: b["label"], length=5)
    assert out.shape == (5, 16)
    assert np.ravel(out).tolist() == [i % 50 for i in range(80)]


def test_traced_step_plans_the_same_shuffle_as_the_host(tokens):
    """step() inside the user's jit permutes in-graph; iteration uses the
    per-epoch tables made on the host. Both are the same permutation."""
    jitted = make(tokens, batch_size=7, shuffle=True, num_epochs=None)
    fetch = nnx.jit(lambda p: p.step()["label"])
    by_jit = np.concatenate([np.asarray(fetch(jitted)) for _ in range(16)])
    it = iter(make(tokens, batch_size=7, shuffle=True, num_epochs=None))
    by_iter = labels(next(it) for _ in range(16))
    assert by_jit.tolist() == by_iter
    assert sorted(by_iter[:50]) == list(range(50))
