"""Keys: the one place where a pipeline's seed becomes the keys of a run.

A pipeline holds the raw data of one seed key and the name of its PRNG
implementation. Every run (a batch, a chunk of batches, a whole ``scan``) derives
two keys from it: one for the source's shuffle order and one from which every
stochastic operator's per-record keys come. Runs derive them in-graph; the host
needs the same shuffle key to plan permutations before a run starts, or to read an
iteration-only source. Both sides go through this module, so they cannot drift
apart.

The shuffle side is always ``threefry2x32`` over the seed's key data (folded to two
words where the implementation's keys have another size), so the record order
depends on the seed alone, never on the implementation; operator keys are of the
seed's implementation, so the keys a stochastic stage draws from are the kind the
user chose (``jax.random.key(seed, impl="philox4x32")``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: ``fold_in`` data of the shuffle key and of the operators' root key.
SHUFFLE_STREAM = 0
OPERATOR_STREAM = 1

#: JAX's default implementation, and the one of every shuffle key.
DEFAULT_IMPL = "threefry2x32"
#: Implementations whose random bits, drawn under ``jax.vmap`` from a batch of
#: keys, are each key's own (pure ``jax.numpy`` hashes; checked in the tests).
PER_KEY_IMPLS = frozenset({"threefry2x32", "threefry4x32", "philox2x32", "philox4x32"})


def as_key(key: jax.Array, impl: str | None = None) -> jax.Array:
    """Returns ``key`` as a new-style typed PRNG key (legacy uint32 keys wrapped).

    ``impl`` names the implementation a legacy ``uint32[2]`` key is wrapped as
    (JAX's default when ``None``); a typed key keeps its own.

    Raises:
        TypeError: for anything but one key: a typed key of shape ``()`` or a
            legacy ``uint32[2]`` key (not a batch of keys, not an int seed).
    """
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return key
    elif dtype == jnp.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key, impl=impl)
    what = (
        f"an array of dtype {dtype} and shape {shape}"
        if dtype is not None
        else f"{type(key).__name__} {key!r}"
    )
    raise TypeError(
        "expected one PRNG key (jax.random.key(seed), or a legacy "
        f"jax.random.PRNGKey(seed) of shape (2,)), got {what}; for a batch of keys "
        "pass one of them, for an int seed pass jax.random.key(seed)."
    )


def fold_in_host(
    key_data: jax.typing.ArrayLike, data: int, impl: str = DEFAULT_IMPL
) -> np.ndarray:
    """Key data of ``jax.random.fold_in(key, data)``, computed on the host.

    Host-side plans need the keys that compiled runs derive in-graph; one eager
    ``fold_in`` costs tens of microseconds, so results are cached.

    Args:
        key_data: raw key data (``jax.random.key_data`` of a key, or a legacy key).
        data: the integer to fold in.
        impl: the PRNG implementation the key data belongs to (shuffle keys, the
            only ones sources see, are always ``threefry2x32``).

    Returns:
        The folded key's data as a NumPy array.

    Examples:
        >>> import jax
        >>> data = jax.random.key_data(jax.random.key(0))
        >>> folded = fold_in_host(data, 3)
        >>> bool((folded == jax.random.key_data(
        ...     jax.random.fold_in(jax.random.key(0), 3))).all())
        True
    """
    raw = np.asarray(key_data)
    return _fold_in_cached(raw.tobytes(), raw.dtype.str, raw.shape, data, impl)


@functools.lru_cache(maxsize=256)
def _fold_in_cached(
    raw: bytes, dtype: str, shape: tuple[int, ...], data: int, impl: str
) -> np.ndarray:
    words = jnp.asarray(np.frombuffer(raw, dtype).reshape(shape))
    key = jax.random.wrap_key_data(words, impl=impl)
    folded = np.asarray(jax.random.key_data(jax.random.fold_in(key, data)))
    folded.flags.writeable = False  # shared by every caller of the cache
    return folded


def seed_key_data(rngs: Any) -> tuple[str, jax.Array]:
    """A pipeline's seed from ``rngs``: its implementation's name and key data.

    Raises:
        ValueError: for an implementation whose random bits under ``jax.vmap``
            are not each key's own (``rbg``, ``unsafe_rbg``): a record's
            randomness would then depend on the records batched with it.
    """
    key = as_key(rngs())
    impl = str(jax.random.key_impl(key))
    if impl not in PER_KEY_IMPLS and not _draws_per_key(impl):
        raise ValueError(
            f"the seed key's PRNG implementation {impl!r} draws the random bits "
            "of a jax.vmap batch of keys from its first key, so a record's "
            "randomness would depend on the records batched with it. Use one "
            f"whose keys draw on their own: {', '.join(sorted(PER_KEY_IMPLS))}, "
            "e.g. rngs=nnx.Rngs(jax.random.key(0, impl='philox4x32'))."
        )
    return impl, jax.random.key_data(key)


@functools.cache
def _draws_per_key(impl: str) -> bool:
    """Whether ``impl``'s bits drawn under ``vmap`` equal each key's own draw."""
    keys = jax.random.split(jax.random.key(0, impl=impl), 3)
    together = jax.vmap(lambda k: jax.random.bits(k, (8,)))(keys)
    alone = [jax.random.bits(k, (8,)) for k in keys]
    return all(bool((together[i] == alone[i]).all()) for i in range(len(alone)))


class RunKeys(NamedTuple):
    """The keys of one run, derived in-graph from the pipeline's seed key."""

    shuffle: jax.Array | None  # given to the source; None when not shuffling
    ops: jax.Array  # root of every stochastic operator's per-record keys


def run_keys(key_data: jax.Array, shuffle: bool, impl: str = DEFAULT_IMPL) -> RunKeys:
    """The run keys of a pipeline whose seed key has data ``key_data`` (traced)."""
    seed_key = jax.random.wrap_key_data(key_data, impl=impl)
    ops = jax.random.fold_in(seed_key, OPERATOR_STREAM)
    if not shuffle:
        return RunKeys(shuffle=None, ops=ops)
    seed = jax.random.wrap_key_data(_two_words(key_data), impl=DEFAULT_IMPL)
    return RunKeys(shuffle=jax.random.fold_in(seed, SHUFFLE_STREAM), ops=ops)


def host_shuffle_key(
    key_data: jax.typing.ArrayLike, shuffle: bool
) -> np.ndarray | None:
    """The data of :attr:`RunKeys.shuffle`, made on the host (``None`` unshuffled)."""
    if not shuffle:
        return None
    return fold_in_host(_two_words(np.asarray(key_data)), SHUFFLE_STREAM)


def _two_words(key_data: Any) -> Any:
    """Seed key data as ``threefry2x32`` key data: two uint32 words.

    Two-word data (``threefry2x32``, ``philox4x32``) is kept as it is, so the
    default implementation's shuffle keys are those of ``fold_in(seed, 0)``;
    other sizes are padded with a leading zero word to an even count and their
    pairs folded by XOR.
    """
    xp = jnp if isinstance(key_data, jax.Array) else np
    words = key_data.reshape(-1)
    if words.shape[0] == 2:
        return words
    if words.shape[0] % 2:
        words = xp.concatenate([xp.zeros(1, words.dtype), words])
    pairs = words.reshape(-1, 2)
    folded = pairs[0]
    for row in range(1, pairs.shape[0]):
        folded = folded ^ pairs[row]
    return folded
