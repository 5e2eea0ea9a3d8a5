"""Keys: the one place where a pipeline's seed becomes the keys of a run.

A pipeline holds the raw data of one seed key. Every run (a batch, a chunk of
batches, a whole ``scan``) derives two keys from it: one for the source's shuffle
order and one from which every stochastic operator's per-record keys come. Runs
derive them in-graph; the host needs the same shuffle key to plan permutations
before a run starts, or to read an iteration-only source. Both sides go through
this module, so they cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: ``fold_in`` data of the shuffle key and of the operators' root key.
SHUFFLE_STREAM = 0
OPERATOR_STREAM = 1


def as_key(key: jax.Array) -> jax.Array:
    """Returns ``key`` as a new-style typed PRNG key (legacy uint32 keys wrapped).

    Raises:
        TypeError: for anything but one key: a typed key of shape ``()`` or a
            legacy ``uint32[2]`` key (not a batch of keys, not an int seed).
    """
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return key
    elif dtype == jnp.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key)
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


def fold_in_host(key_data: jax.typing.ArrayLike, data: int) -> np.ndarray:
    """Key data of ``jax.random.fold_in(key, data)``, computed on the host.

    Host-side plans need the keys that compiled runs derive in-graph; one eager
    ``fold_in`` costs tens of microseconds, so results are cached.

    Args:
        key_data: raw key data (``jax.random.key_data`` of a key, or a legacy key).
        data: the integer to fold in.

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
    return _fold_in_cached(raw.tobytes(), raw.dtype.str, raw.shape, data)


@functools.lru_cache(maxsize=256)
def _fold_in_cached(
    raw: bytes, dtype: str, shape: tuple[int, ...], data: int
) -> np.ndarray:
    key = as_key(jnp.asarray(np.frombuffer(raw, dtype).reshape(shape)))
    folded = np.asarray(jax.random.key_data(jax.random.fold_in(key, data)))
    folded.flags.writeable = False  # shared by every caller of the cache
    return folded


class RunKeys(NamedTuple):
    """The keys of one run, derived in-graph from the pipeline's seed key."""

    shuffle: jax.Array | None  # given to the source; None when not shuffling
    ops: jax.Array  # root of every stochastic operator's per-record keys


def run_keys(key_data: jax.Array, shuffle: bool) -> RunKeys:
    """The run keys of a pipeline whose seed key has data ``key_data`` (traced)."""
    key = as_key(key_data)
    return RunKeys(
        shuffle=jax.random.fold_in(key, SHUFFLE_STREAM) if shuffle else None,
        ops=jax.random.fold_in(key, OPERATOR_STREAM),
    )


def host_shuffle_key(
    key_data: jax.typing.ArrayLike, shuffle: bool
) -> np.ndarray | None:
    """The data of :attr:`RunKeys.shuffle`, made on the host (``None`` unshuffled)."""
    return fold_in_host(key_data, SHUFFLE_STREAM) if shuffle else None
