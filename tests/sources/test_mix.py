"""MixDataSourcesNode: quotas per block, children in their own order, no replacement."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from flax import nnx
from hypothesis import assume, given, settings, strategies as st

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, state_dict
from datarax.sources import MemorySource, MixDataSourcesNode, StreamingDiskSource

BASES = (0, 1000, 2000, 3000)


def read(mix, start, batch_size, key=None):
    """``mix.get_batch_at`` compiled (eager runs every op of the plan on its own)."""
    fn = jax.jit(lambda s, k: mix.get_batch_at(s, batch_size, k)["x"])
    return np.asarray(fn(jnp.int32(start), key))


def children(lengths):
    """Child i holds records BASES[i] + 0 .. BASES[i] + length - 1."""
    return [
        MemorySource({"x": BASES[i] + np.arange(n, dtype=np.int32)})
        for i, n in enumerate(lengths)
    ]


def draws(stream, child, length):
    """The records of ``child`` in the order the mix drew them."""
    mine = stream[(stream >= BASES[child]) & (stream < BASES[child] + length)]
    return (mine - BASES[child]).tolist()


def test_len_spec_and_quotas():
    mix = MixDataSourcesNode(children([10, 7, 5]), [0.5, 0.3, 0.2], block_size=10)
    assert len(mix) == 22  # one epoch of the mix: the children's records, summed
    assert mix.element_spec == {"x": jax.ShapeDtypeStruct((), jnp.int32)}
    assert mix.quotas == (5, 3, 2)
    assert sum(MixDataSourcesNode(children([3, 3]), [1, 2], block_size=7).quotas) == 7


@settings(max_examples=examples(6))
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    raw_weights=st.lists(st.integers(1, 9), min_size=4, max_size=4),
    block_size=st.integers(1, 40),
    shuffle=st.booleans(),
)
def test_each_child_served_in_its_own_epochs_without_replacement(
    lengths, raw_weights, block_size, shuffle
):
    weights = raw_weights[: len(lengths)]
    try:
        mix = MixDataSourcesNode(children(lengths), weights, block_size=block_size)
    except ValueError as err:  # a child whose quota rounds to 0 is refused
        assert "would never be drawn" in str(err)
        assume(False)
    key = jax.random.key(1) if shuffle else None
    stream = read(mix, 0, 6 * block_size + 17, key)
    for child, length in enumerate(lengths):
        got = draws(stream, child, length)
        for e in range(len(got) // length):
            epoch = got[e * length : (e + 1) * length]
            assert sorted(epoch) == list(range(length))
            if not shuffle:
                assert epoch == list(range(length))  # the child's own stream order
        assert len(got) == pytest.approx(
            len(stream) * mix.quotas[child] / block_size, abs=block_size
        )


@settings(max_examples=examples(6))
@given(
    raw_weights=st.lists(st.integers(0, 20), min_size=2, max_size=4).filter(any),
    start=st.integers(0, 5000),
)
def test_proportions_within_one_percent_on_windows_of_three_blocks(raw_weights, start):
    lengths = [13, 29, 7, 50][: len(raw_weights)]
    mix = MixDataSourcesNode(children(lengths), raw_weights, block_size=500)
    stream = read(mix, start, 1500, jax.random.key(0))
    total = sum(raw_weights)
    for child, length in enumerate(lengths):
        share = len(draws(stream, child, length)) / len(stream)
        assert share == pytest.approx(raw_weights[child] / total, abs=0.01)


@functools.cache
def reader(batch_size, instance=0):
    """A compiled read of ``batch_size`` records of a mix, kept across examples.

    The start is an argument: an example compiles only its new batch sizes.
    Each ``(batch_size, instance)`` has a mix object of its own.
    """
    mix = MixDataSourcesNode(children([11, 6, 9]), [2, 1, 1], block_size=16)
    return jax.jit(lambda s, k: mix.get_batch_at(s, batch_size, k)["x"])


@settings(max_examples=examples(6))
@given(split=st.integers(1, 39), start=st.integers(0, 300))
def test_deterministic_and_batch_size_invariant(split, start):
    key = jax.random.key(9)

    def read_at(first, batch_size, instance=0):
        return np.asarray(reader(batch_size, instance)(jnp.int32(first), key))

    whole = read_at(start, 40)
    again = read_at(start, 40, instance=1)  # another mix of the same children
    head = read_at(start, split)
    tail = read_at(start + split, 40 - split)
    np.testing.assert_array_equal(whole, again)
    np.testing.assert_array_equal(whole, np.concatenate([head, tail]))


def jitted_18(mix, key):
    return jax.jit(lambda k: mix.get_batch_at(5, 18, k)["x"])(key)


@pytest.mark.parametrize("legacy", [False, True])
def test_traceable_under_jit_vmap_and_nnx_scan(legacy):
    mix = MixDataSourcesNode(children([11, 6, 9]), [2, 1, 1], block_size=8)
    key = jax.random.PRNGKey(3) if legacy else jax.random.key(3)
    eager = np.asarray(mix.get_batch_at(5, 6, key)["x"])
    jitted = jax.jit(lambda s, k: mix.get_batch_at(s, 6, k)["x"])
    np.testing.assert_array_equal(jitted(jnp.int32(5), key), eager)
    starts = jnp.array([5, 11, 17], jnp.int32)
    # Under jit: called eagerly, each of the mix's primitives compiles on its
    # own (7 s a call on 2 cores); the eager reference above is enough.
    vmapped = jax.jit(jax.vmap(lambda s: mix.get_batch_at(s, 6, key)["x"]))(starts)
    np.testing.assert_array_equal(np.ravel(vmapped), np.asarray(jitted_18(mix, key)))

    @nnx.scan(in_axes=(None, 0), out_axes=0)
    def scanned(m, start):
        return m.get_batch_at(start, 6, key)["x"]

    np.testing.assert_array_equal(scanned(mix, starts), vmapped)


def test_pipeline_over_a_mix_iterates_and_scans_one_stream():
    def build(batch_size):
        mix = MixDataSourcesNode(children([11, 6, 9]), [0.5, 0.25, 0.25], block_size=12)
        return Pipeline(source=mix, batch_size=batch_size, shuffle=True, num_epochs=2)

    by_iter = np.concatenate([np.asarray(b["x"]) for b in build(5)])
    assert len(by_iter) == 2 * 26  # num_epochs counts epochs of len(mix) positions
    by_scan = np.ravel(build(4).scan(lambda b: b["x"], length=13))
    np.testing.assert_array_equal(by_iter, by_scan)


def test_mix_of_disk_and_memory(tmp_path):
    np.save(tmp_path / "x.npy", 1000 + np.arange(6, dtype=np.int32))
    disk = StreamingDiskSource(tmp_path)
    memory = MemorySource({"x": np.arange(9, dtype=np.int32)})
    ref = MixDataSourcesNode(children([9, 6]), [1, 1], block_size=6)
    mix = MixDataSourcesNode([memory, disk], [1, 1], block_size=6)
    key = jax.random.key(2)
    np.testing.assert_array_equal(
        mix.get_batch_at(3, 20, key)["x"], ref.get_batch_at(3, 20, key)["x"]
    )

    def scan(source):
        pipe = Pipeline(source=source, batch_size=4, shuffle=True, num_epochs=None)
        return np.ravel(pipe.scan(lambda b: b["x"], length=5))

    np.testing.assert_array_equal(scan(mix), scan(ref))


def test_checkpoint_resume_of_a_mix():
    def build(batch_size):
        mix = MixDataSourcesNode(children([11, 6, 9]), [3, 2, 1], block_size=10)
        return Pipeline(
            source=mix, batch_size=batch_size, shuffle=True, num_epochs=None
        )

    original = build(3)
    it = iter(original)
    for _ in range(7):
        next(it)
    d = state_dict(original)
    expected = np.concatenate([np.asarray(next(it)["x"]) for _ in range(8)])
    restored = build(4)
    load_state_dict(d, restored)
    np.testing.assert_array_equal(
        np.ravel(restored.scan(lambda b: b["x"], length=6)), expected
    )


def test_different_element_specs_name_the_fields():
    a = MemorySource({"x": np.zeros((4, 3), np.float32), "y": np.zeros(4)})
    b = MemorySource({"x": np.zeros((4, 2), np.float32), "z": np.zeros(4)})
    with pytest.raises(ValueError) as info:
        MixDataSourcesNode([a, b], [1, 1])
    message = info.exconly()
    assert (
        "field 'x': ((3,), 'float32') in source 0, ((2,), 'float32') in source 1"
        in (message)
    )
    assert "field 'y'" in message and "field 'z'" in message


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1, -1], "weights must be finite and non-negative, got {1: -1.0}"),
        ([0, 0], "weights [0.0, 0.0] sum to zero"),
        ([1], "1 weights for 2 sources"),
        ([1, float("nan")], "must be finite"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MixDataSourcesNode(children([3, 3]), weights)


def test_sources_must_be_datasources():
    with pytest.raises(TypeError, match=re.escape("sources[1] is a dict")):
        MixDataSourcesNode([children([3])[0], {"x": np.zeros(3)}], [1, 1])
