"""The seed key's PRNG implementation: honoured for operator keys, never for order.

A pipeline seeded with ``jax.random.key(seed, impl=...)`` hands its stochastic
stages keys of that implementation; the record order depends on the seed's key
data alone. Implementations whose bits under ``jax.vmap`` come from the first
key of the batch (``rbg``, ``unsafe_rbg``) are refused: a record's randomness
would depend on its batch.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.checkpoint import CheckpointError, load_state_dict, state_dict
from datarax.core._keys import PER_KEY_IMPLS, _draws_per_key, _two_words
from datarax.core._records import identity_hash
from datarax.operators import ElementOperator
from datarax.sources import MemorySource

N = 11
IMPLS = sorted(PER_KEY_IMPLS)


def draw(record, key):
    return {**record, "bits": jax.random.bits(key, (), np.uint32)}


def build(impl: str, batch_size: int = 4, *, seed: int = 3) -> Pipeline:
    return Pipeline(
        source=MemorySource({"label": np.arange(N, dtype=np.int32)}),
        stages=[ElementOperator(draw, stochastic=True)],
        batch_size=batch_size,
        shuffle=True,
        num_epochs=None,
        rngs=nnx.Rngs(jax.random.key(seed, impl=impl)),
    )


def served(pipe: Pipeline, batches: int) -> dict[str, np.ndarray]:
    it = iter(pipe)
    got = [next(it) for _ in range(batches)]
    return {k: np.concatenate([np.asarray(b[k]) for b in got]) for k in got[0]}


def test_the_implementations_trusted_without_a_probe_draw_per_key():
    assert all(_draws_per_key(impl) for impl in PER_KEY_IMPLS)
    assert not _draws_per_key("rbg") and not _draws_per_key("unsafe_rbg")


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_a_seed_whose_vmapped_bits_come_from_one_key_is_refused(impl):
    with pytest.raises(ValueError) as info:
        build(impl)
    assert info.exconly() == (
        f"ValueError: the seed key's PRNG implementation {impl!r} draws the random "
        "bits of a jax.vmap batch of keys from its first key, so a record's "
        "randomness would depend on the records batched with it. Use one whose "
        "keys draw on their own: philox2x32, philox4x32, threefry2x32, "
        "threefry4x32, e.g. rngs=nnx.Rngs(jax.random.key(0, impl='philox4x32'))."
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_operator_keys_are_of_the_seeds_implementation(impl):
    pipe = build(impl, batch_size=N)
    batch = pipe.step()
    seed = jax.random.wrap_key_data(pipe.key[...], impl=impl)
    root = jax.random.fold_in(
        jax.random.fold_in(seed, 1), identity_hash(("stage", 0, 0))
    )
    expected = [
        jax.random.bits(
            jax.random.fold_in(jax.random.fold_in(root, 0), offset), (), np.uint32
        )
        for offset in range(N)
    ]
    assert pipe.key_impl == impl
    np.testing.assert_array_equal(np.asarray(batch["bits"]), np.asarray(expected))


# Keys of one and of four words (the default's two are tested everywhere else).
@pytest.mark.parametrize("impl", ["philox2x32", "threefry4x32"])
def test_any_implementation_serves_one_stream_in_every_mode_and_batch_size(impl):
    by_iter = served(build(impl, 4), 8)  # 32 records: into the third epoch
    by_other_size = served(build(impl, 8), 4)
    by_scan = build(impl, 4).scan(lambda b: b, length=8)
    for name in ("label", "bits"):
        np.testing.assert_array_equal(by_iter[name], by_other_size[name])
        np.testing.assert_array_equal(by_iter[name], np.ravel(by_scan[name]))
    for epoch in range(2):  # every record once per epoch
        labels = by_iter["label"][epoch * N : (epoch + 1) * N]
        assert sorted(labels.tolist()) == list(range(N))


@pytest.mark.parametrize("impl", IMPLS)
def test_the_order_is_threefry_over_the_seeds_key_data_whatever_its_impl(impl):
    pipe = build(impl, batch_size=N)
    words = _two_words(np.asarray(pipe.key[...]))
    shuffle_key = jax.random.fold_in(jax.random.wrap_key_data(words), 0)
    expected = pipe.source.get_batch_at(0, N, shuffle_key)["label"]
    np.testing.assert_array_equal(served(pipe, 1)["label"], np.asarray(expected))
    assert np.asarray(expected).tolist() != list(range(N))


def test_a_checkpoint_restores_only_into_a_seed_of_its_implementation():
    philox = build("philox4x32")
    served(philox, 3)
    saved = state_dict(philox)
    expected = served(philox, 3)

    again = build("philox4x32")
    load_state_dict(saved, again)
    got = served(again, 3)
    for name in ("label", "bits"):
        np.testing.assert_array_equal(got[name], expected[name])

    # The same key data under JAX's default implementation: the same order but
    # other randomness, so the checkpoint must not restore into it.
    default = Pipeline(
        source=MemorySource({"label": np.arange(N, dtype=np.int32)}),
        stages=[ElementOperator(draw, stochastic=True)],
        batch_size=4,
        shuffle=True,
        num_epochs=None,
    )
    default.key[...] = philox.key[...]
    with pytest.raises(CheckpointError) as info:
        load_state_dict(saved, default)
    assert info.exconly() == (
        "datarax.checkpoint.CheckpointError: cannot restore module 0: it was saved "
        "from another construction (key impl: 'philox4x32' in the checkpoint, the "
        "default here). Build the pipeline exactly as when it was saved (the batch "
        "size may differ)."
    )
