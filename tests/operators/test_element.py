"""ElementOperator: vectorised records, per-record keys that follow the record."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource

N = 23


def jitter(record, key):
    return {"label": record["label"], "u": jax.random.uniform(key)}


def build(batch_size=4, stages=None, shuffle=False, seed=0):
    from flax import nnx

    stages = [ElementOperator(jitter, stochastic=True)] if stages is None else stages
    return Pipeline(
        source=MemorySource({"label": np.arange(N, dtype=np.int32)}),
        stages=stages,
        batch_size=batch_size,
        shuffle=shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


def stream(pipe, records):
    steps = -(-records // pipe.batch_size)
    out = pipe.scan(lambda b: b, length=steps)
    return {k: np.ravel(v)[:records] for k, v in out.items()}


def test_deterministic_operator_is_vectorised_over_the_batch():
    calls = []

    def double(record, key):
        calls.append(record["label"].shape)
        assert key is None
        return {"label": record["label"] * 2}

    pipe = build(stages=[ElementOperator(double)])
    assert np.asarray(pipe.step()["label"]).tolist() == [0, 2, 4, 6]
    assert calls == [()]  # traced once, on a single record: vmap, no Python loop


@given(batch_a=st.integers(1, 12), batch_b=st.integers(1, 12), shuffle=st.booleans())
def test_record_keys_do_not_depend_on_batch_size(batch_a, batch_b, shuffle):
    a = stream(build(batch_a, shuffle=shuffle), 2 * N + 3)
    b = stream(build(batch_b, shuffle=shuffle), 2 * N + 3)
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["u"], b["u"])


def test_record_keys_do_not_depend_on_mode():
    it = iter(build(5))
    by_iter = np.concatenate([np.asarray(next(it)["u"]) for _ in range(4)])
    stepper = build(5)
    by_step = np.concatenate([np.asarray(stepper.step()["u"]) for _ in range(4)])
    by_scan = np.ravel(build(5).scan(lambda b: b["u"], length=4))
    np.testing.assert_array_equal(by_iter, by_step)
    np.testing.assert_array_equal(by_iter, by_scan)


def test_same_record_gets_fresh_randomness_each_epoch():
    s = stream(build(N), 2 * N)
    assert s["label"][:N].tolist() == s["label"][N:].tolist()
    assert not np.allclose(s["u"][:N], s["u"][N:])


def test_keys_follow_stream_positions_not_record_ids():
    """Shuffling changes which record sits at a position, not that position's key."""
    plain = stream(build(7), N)
    shuffled = stream(build(7, shuffle=True), N)
    assert shuffled["label"].tolist() != plain["label"].tolist()
    np.testing.assert_array_equal(shuffled["u"], plain["u"])


def test_each_operator_gets_its_own_keys():
    two = [
        ElementOperator(jitter, stochastic=True),
        ElementOperator(
            lambda r, k: {**r, "v": jax.random.uniform(k)}, stochastic=True
        ),
    ]
    batch = build(6, stages=two).step()
    assert not np.allclose(batch["u"], batch["v"])


def test_seed_changes_the_keys():
    a = build(seed=0).step()["u"]
    b = build(seed=1).step()["u"]
    assert not np.allclose(a, b)


def test_stochastic_operator_outside_a_pipeline_says_how_to_use_it():
    op = ElementOperator(jitter, stochastic=True)
    batch = {"label": jnp.arange(3)}
    with pytest.raises(ValueError, match=re.escape("call it as a pipeline stage")):
        op(batch)


def test_deterministic_operator_works_on_its_own():
    op = ElementOperator(lambda r, k: {"y": r["x"] + 1})
    assert np.asarray(op({"x": jnp.arange(3)})["y"]).tolist() == [1, 2, 3]


def test_fn_must_be_callable():
    with pytest.raises(TypeError, match="needs a callable fn"):
        ElementOperator(3)
