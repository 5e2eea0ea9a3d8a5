"""No silent wrong data: bad options and shapes are named errors, state owns memory.

Each test here once served wrong or surprising data without a word (issue 10);
the silent ones assert the records served, not only that something raises.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, state_dict
from datarax.operators import ElementOperator
from datarax.sources import MemorySource, MixDataSourcesNode


def source(n=10):
    return MemorySource({"x": np.arange(n, dtype=np.int32)})


def make(**kwargs):
    kwargs.setdefault("batch_size", 4)
    return Pipeline(source=source(), **kwargs)


def labels(pipe, count):
    batches = iter(pipe)
    return [np.asarray(next(batches)["x"]).tolist() for _ in range(count)]


@pytest.mark.parametrize("option", ["shuffle", "drop_last"])
@pytest.mark.parametrize("value", ["False", 0, 1, None, np.array([True])])
def test_bool_options_must_be_bools(option, value):
    with pytest.raises(TypeError, match=re.escape(f"{option} must be a bool")):
        make(**{option: value})


def test_numpy_bools_are_bools():
    assert labels(make(shuffle=np.bool_(False), num_epochs=None), 1) == [[0, 1, 2, 3]]


@pytest.mark.parametrize("batch_size", [2**31, 2**40])
def test_batch_size_beyond_the_int32_position_range_is_refused(batch_size):
    with pytest.raises(ValueError, match="int32 stream positions"):
        make(batch_size=batch_size)


def test_a_stream_too_short_for_one_batch_with_drop_last_is_refused():
    with pytest.raises(ValueError, match=r"would serve no batch.*drop_last=False"):
        make(batch_size=11, drop_last=True, num_epochs=1)
    # Two epochs hold 20 records: one full batch of 11 is served.
    assert [len(b["x"]) for b in make(batch_size=11, drop_last=True, num_epochs=2)] == [
        11
    ]


def test_a_stage_that_changes_the_record_count_is_named():
    def keep_two(batch):
        return {"x": batch["x"][:2]}

    pipe = make(stages=[lambda b: b, keep_two])
    with pytest.raises(ValueError) as info:
        next(iter(pipe))
    message = info.exconly()
    assert "stage 1 (keep_two)" in message
    assert "field 'x' with 2 records" in message
    assert "a batch of 4 records" in message
    dag = Pipeline.from_dag(
        source=source(),
        nodes={"cut": keep_two},
        edges={"cut": []},
        sink="cut",
        batch_size=4,
        num_epochs=None,
    )
    with pytest.raises(ValueError, match=re.escape("DAG node 'cut'")):
        dag.scan(lambda b: b["x"], length=1)


def aligned(array):
    """A copy of ``array`` in a 64-byte-aligned buffer."""
    array = np.asarray(array)
    raw = np.zeros(array.nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    out = raw[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def test_restored_state_owns_its_memory():
    pipe = make(shuffle=True, num_epochs=None, rngs=nnx.Rngs(5))
    expected = labels(make(shuffle=True, num_epochs=None, rngs=nnx.Rngs(5)), 4)[2:]
    labels(pipe, 2)
    # 64-byte-aligned buffers are the ones a jax array could share.
    saved = jax.tree.map(aligned, state_dict(pipe))
    fresh = make(shuffle=True, num_epochs=None, rngs=nnx.Rngs(5))
    load_state_dict(saved, fresh)
    for leaf in jax.tree.leaves(saved):
        leaf[...] = 0  # the caller reuses its buffers after loading
    assert labels(fresh, 2) == expected


class TestMixArguments:
    def children(self):
        return [source(6), source(4)]

    @pytest.mark.parametrize(
        "weights, message",
        [
            ("13", "a sequence of numbers, got str"),
            ({1: 1.0, 2: 2.0}, "a sequence of numbers, got dict"),
            ([1, 1e308, 1e308], "sum to inf"),
            ([1, "2"], "weights[1] is '2'"),
            ([True, 1], "weights[0] is True"),
        ],
    )
    def test_weights_are_finite_real_numbers(self, weights, message):
        if isinstance(weights, list) and len(weights) == 3:
            children = [*self.children(), source(3)]
        else:
            children = self.children()
        with pytest.raises((TypeError, ValueError), match=re.escape(message)):
            MixDataSourcesNode(children, weights)

    @pytest.mark.parametrize("block_size", ["10", 2.5, True])
    def test_block_size_is_an_int(self, block_size):
        with pytest.raises(TypeError, match="block_size must be a Python int"):
            MixDataSourcesNode(self.children(), [1, 1], block_size=block_size)


class TestGetBatchAtArguments:
    @pytest.mark.parametrize("start", [2.7, "3", np.float32(1.0), jnp.arange(2)])
    def test_start_is_one_integer(self, start):
        with pytest.raises(TypeError, match="start must be an integer scalar"):
            source().get_batch_at(start, 2)

    def test_integer_starts_of_every_kind_work(self):
        for start in (3, np.int64(3), jnp.int32(3), np.asarray(3)):
            assert source().get_batch_at(start, 2)["x"].tolist() == [3, 4]

    @pytest.mark.parametrize(
        "key",
        [
            jax.random.split(jax.random.key(0), 2),
            jnp.zeros((3, 2), jnp.uint32),
            42,
            jnp.zeros(2, jnp.float32),
        ],
    )
    def test_key_is_one_key(self, key):
        with pytest.raises(TypeError, match="one PRNG key"):
            source().get_batch_at(0, 2, key)

    def test_both_key_styles_give_the_same_order(self):
        typed = source().get_batch_at(0, 10, jax.random.key(1))["x"]
        legacy = source().get_batch_at(0, 10, jax.random.PRNGKey(1))["x"]
        assert typed.tolist() == legacy.tolist()
        assert sorted(typed.tolist()) == list(range(10))


def test_a_stochastic_stage_still_works_after_the_checks():
    noise = ElementOperator(
        lambda r, key: {"x": r["x"] + jax.random.randint(key, (), 0, 2)},
        stochastic=True,
    )
    pipe = make(stages=[noise], num_epochs=None)
    first = np.asarray(pipe.scan(lambda b: b["x"], length=2)).ravel()
    assert ((first - np.arange(8)) >= 0).all() and ((first - np.arange(8)) <= 1).all()


def mixed(weights=(3, 1), lengths=(6, 4), swap=False, inner=None):
    children = [
        MemorySource({"x": np.arange(n, dtype=np.int32) + 100 * i})
        for i, n in enumerate(lengths)
    ]
    if swap:
        children.reverse()
    if inner is not None:
        children.append(MixDataSourcesNode([source(3), source(5)], inner))
        weights = (*weights, 1)
    return Pipeline(
        source=MixDataSourcesNode(children, list(weights), block_size=4),
        batch_size=4,
        shuffle=True,
        num_epochs=None,
        rngs=nnx.Rngs(2),
    )


@pytest.mark.parametrize(
    "other",
    [
        {"weights": (1, 3)},
        {"swap": True},
        {"lengths": (7, 3)},
    ],
    ids=["weights", "swapped", "child-lengths"],
)
def test_a_mix_checkpoint_restores_only_into_the_same_mix(other):
    pipe = mixed()
    expected = labels(mixed(), 4)[2:]
    labels(pipe, 2)
    saved = state_dict(pipe)
    same = mixed()
    load_state_dict(saved, same)
    assert labels(same, 2) == expected
    with pytest.raises(ValueError, match=r"source: .MixDataSourcesNode\(weights"):
        load_state_dict(saved, mixed(**other))


def test_a_nested_mix_is_part_of_the_fingerprint():
    saved = state_dict(mixed(inner=[1, 1]))
    load_state_dict(saved, mixed(inner=[1, 1]))
    with pytest.raises(ValueError, match=r"source: .MixDataSourcesNode\(weights"):
        load_state_dict(saved, mixed(inner=[1, 2]))
