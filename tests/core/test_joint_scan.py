"""Pipeline.scan with the pipeline among its modules: stages trained in the loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import Brightness
from datarax.sources import MemorySource

N = 40


class Scale(nnx.Module):
    """A learnable stage: x * w."""

    def __init__(self):
        self.w = nnx.Param(jnp.float32(2.0))

    def __call__(self, batch):
        return {**batch, "x": batch["x"] * self.w[...]}


def data():
    rng = np.random.default_rng(0)
    return {
        "x": rng.random((N, 2, 2, 1)).astype(np.float32),
        "label": np.arange(N, dtype=np.int32),
    }


def make(stages, batch_size=4):
    return Pipeline(
        source=MemorySource(data()),
        stages=stages,
        batch_size=batch_size,
        shuffle=True,
        num_epochs=None,
        rngs=nnx.Rngs(7),
    )


def loss_fn(pipe):
    # Pulls w toward 1: d/dw mean((x w - x)^2) is non-zero until w = 1.
    batch = pipe.step()
    return ((batch["x"] - batch["x"] / pipe.stages[1].w[...]) ** 2).mean()


def train_step(pipe, opt):
    loss, grads = nnx.value_and_grad(loss_fn)(pipe)
    opt.update(pipe, grads)
    return loss


def test_gradients_reach_stage_parameters_inside_scan():
    pipe = make([Brightness(0.2, field="x"), Scale()])
    opt = nnx.Optimizer(pipe, optax.sgd(0.5), wrt=nnx.Param)
    losses = pipe.scan(train_step, length=6, modules=(pipe, opt))
    # The same steps one by one, each its own jitted call: the same losses and
    # parameters (the stream and the updates are the same).
    ref = make([Brightness(0.2, field="x"), Scale()])
    ref_opt = nnx.Optimizer(ref, optax.sgd(0.5), wrt=nnx.Param)
    step = nnx.jit(train_step)
    expected = [float(step(ref, ref_opt)) for _ in range(6)]
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-5)
    assert losses.shape == (6,) and float(losses[-1]) < float(losses[0])
    for name in ("w",):
        got, want = pipe.stages[1].w[...], ref.stages[1].w[...]
        assert float(got) == pytest.approx(float(want), rel=1e-5), name
    assert float(pipe.stages[1].w[...]) != 2.0
    # Both learned Brightness's magnitude too, and advanced by one batch a step.
    assert float(pipe.stages[0].max_delta[...]) != pytest.approx(0.2)
    assert int(pipe.position[...]) == int(ref.position[...]) == 24


def test_the_stream_is_the_batch_passing_scans():
    joint, plain = (
        make([Brightness(0.2, field="x")], 5),
        make([Brightness(0.2, field="x")], 5),
    )

    def fetch(pipe):
        batch = pipe.step()
        return batch["label"], batch["x"]

    labels, xs = joint.scan(fetch, length=11, modules=(joint,))
    want_labels, want_xs = plain.scan(lambda b: (b["label"], b["x"]), length=11)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(xs, want_xs, rtol=1e-6)
    # 55 records of 40: the stream ran into the second epoch in both.
    assert int(joint.epoch[...]) == int(plain.epoch[...]) == 1
    # Iteration continues where the joint scan stopped.
    np.testing.assert_array_equal(next(iter(joint))["label"], plain.step()["label"])


def test_carry_and_a_second_pipeline_among_the_modules():
    train, valid = make([Scale()], 4), make([Scale()], 2)
    traced = []

    def step(total, train, valid):
        traced.append(1)
        got = train.step()["label"].sum() + valid.step()["label"].sum()
        return total + got, got

    total, each = train.scan(step, length=5, modules=(train, valid), init_carry=0)
    assert int(total) == int(each.sum()) and each.shape == (5,)
    assert int(train.position[...]) == 20 and int(valid.position[...]) == 10
    # The compiled loop is reused: a second call does not trace step again.
    train.scan(step, length=5, modules=(train, valid), init_carry=0)
    assert len(traced) == 1 and int(train.position[...]) == 40


def test_a_step_fn_that_takes_a_batch_is_told_none_comes():
    pipe = make([Scale()])
    with pytest.raises(TypeError) as info:
        pipe.scan(lambda pipe, batch: 0.0, length=2, modules=(pipe,))
    assert info.exconly() == (
        "TypeError: Pipeline.scan calls step_fn(modules[0]) -> out (1 positional "
        "argument), which step_fn cannot take; the pipeline is among "
        "modules=(...), so scan passes no batch: step_fn takes one parameter per "
        "module and fetches its batches with pipe.step(), and init_carry= only if "
        "step_fn takes a carry first."
    )


def test_an_error_in_step_fn_says_how_scan_called_it():
    pipe = make([Scale()])

    def step(pipe):
        return pipe.step()["missing"]

    with pytest.raises(KeyError) as info:
        pipe.scan(step, length=2, modules=(pipe,))
    assert (
        "datarax: Pipeline.scan called step_fn(modules[0]) -> out, with modules "
        "in the order given (Pipeline)." in info.value.__notes__
    )
    assert int(pipe.position[...]) == 0
    assert jax.tree.leaves(nnx.state(pipe, nnx.Param))
