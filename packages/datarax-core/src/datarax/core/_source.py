"""The data model: records, batches, element specs and the ``DataSource`` base."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Batch = dict[str, jax.Array]
"""A batch: field name -> array with a leading batch axis."""

ElementSpec = dict[str, jax.ShapeDtypeStruct]
"""Shape and dtype of one record, per field."""


class DataVar(nnx.Variable):
    """A Variable holding a source's dataset arrays.

    Kept apart from every other Variable so that a dataset is never carried
    through a scan, never returned from a compiled step and never written into a
    checkpoint: the pipeline broadcasts it into its compiled runs, and
    ``nnx.state(pipe, nnx.Not(DataVar))`` is the resumable state.
    """


def as_key(key: jax.Array) -> jax.Array:
    """Returns ``key`` as a new-style typed PRNG key (legacy uint32 keys wrapped)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"expected a PRNG key (jax.random.key(...) or a legacy uint32[2] key), got "
        f"an array of dtype {key.dtype} and shape {key.shape}."
    )


_FOLDED: collections.OrderedDict[tuple[bytes, int], np.ndarray] = (
    collections.OrderedDict()
)


def fold_in_host(key_data: jax.typing.ArrayLike, data: int) -> np.ndarray:
    """Key data of ``fold_in(key, data)``, computed outside any trace and cached.

    Host-side plans need the same derived keys the compiled runs derive in-graph;
    one eager ``fold_in`` costs tens of microseconds, so each result is kept.
    """
    raw = np.asarray(key_data)
    cache_key = (raw.tobytes(), data)
    folded = _FOLDED.get(cache_key)
    if folded is None:
        key = jax.random.fold_in(as_key(jnp.asarray(raw)), data)
        folded = np.asarray(jax.random.key_data(key))
        _FOLDED[cache_key] = folded
        if len(_FOLDED) > 256:
            _FOLDED.popitem(last=False)
    return folded


def iteration_only_message(source: DataSource, what: str) -> str:
    """The error for ``what`` (scan, step, get_batch_at) on an iteration-only source."""
    return (
        f"{what} needs random access to records by stream position (it loads data "
        f"inside compiled code), but {type(source).__name__} is iteration-only: it "
        "reads its records in order, on the host. Iterate the pipeline instead "
        f"(for batch in pipe: ...), or use {source.random_access_alternative}."
    )


class DataSource(nnx.Module):
    """Base class of datarax sources: finite, random-access and traceable.

    A source holds ``len(source)`` records. Its *stream* repeats them epoch after
    epoch: stream position ``p`` is record offset ``p % len`` of epoch
    ``p // len``. :meth:`get_batch_at` reads any window of that stream; it is a
    pure function of its arguments, so it works inside ``jax.jit``, ``nnx.jit``,
    ``nnx.scan`` and ``jax.vmap`` with ``start`` and ``key`` traced.

    Subclasses implement ``__len__``, :attr:`element_spec` and either
    :meth:`get_batch_at` or the ``_plan`` / ``_read`` hooks below (then the base
    ``get_batch_at`` checks the arguments and reads through them). Sources that
    can serve a shuffled order set ``supports_shuffle = True`` and, given a key,
    serve epoch ``e`` in an order that is a permutation determined by
    ``(key, e)`` alone.

    Pipelines read through two optional hooks, ``_plan`` and ``_read``: work that
    a run of many batches can share (per-epoch permutations) goes in ``_plan``,
    computed once per compiled run, and ``_read`` serves each batch from it. The
    defaults make ``_read`` call :meth:`get_batch_at`, so a source that implements
    only the public method works everywhere.

    Keep dataset arrays in :class:`DataVar` Variables (or behind a non-array
    holder object), never as plain array attributes: those would become carried
    state in every compiled step and in checkpoints.
    """

    supports_shuffle: bool = False
    #: False for iteration-only sources (a stream that can only be read in
    #: order): they implement :meth:`host_batches` instead of the read hooks and
    #: feed ``Pipeline`` iteration, not ``scan``, ``step()`` or ``get_batch_at``.
    random_access: bool = True
    #: What to use instead, named in the errors of an iteration-only source.
    random_access_alternative: str = "a random-access source over the same data"

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__.")

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field (no batch axis)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement the element_spec property."
        )

    def get_batch_at(
        self, start: jax.typing.ArrayLike, batch_size: int, key: jax.Array | None = None
    ) -> Batch:
        """Returns the records at stream positions ``start .. start+batch_size-1``.

        Traceable in ``start`` and ``key``; the batch may cross an epoch boundary.
        The base implementation checks the arguments and reads through
        ``_plan`` and ``_read``; a subclass overrides either those two or this.

        Args:
            start: stream position of the first record (an int32 scalar, may be
                traced).
            batch_size: number of records, a static Python int.
            key: ``None`` for natural order; with a key, a shuffling source serves
                each epoch in the permutation determined by ``(key, epoch)``
                (typed or legacy uint32 keys).

        Returns:
            A dict of arrays with a leading axis of ``batch_size``.
        """
        if not self.random_access:
            raise TypeError(iteration_only_message(self, "get_batch_at"))
        if type(self)._read is DataSource._read:
            raise NotImplementedError(
                f"{type(self).__name__} must implement get_batch_at (or _read)."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(
                f"batch_size must be a static Python int, got {batch_size!r}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        start = jnp.asarray(start, jnp.int32)
        key = None if key is None else as_key(key)
        return self._read(self._plan(start, batch_size, key), start, batch_size, key)

    def _steps_per_read(self, batch_size: int) -> int:
        """How many batches a compiled run should read from this source at once.

        1 (the default) reads each batch in its own step. Sources whose every read
        has a fixed cost (a host callback) return more, so ``Pipeline.scan`` reads
        that many steps' records in one go.
        """
        del batch_size
        return 1

    def _host_plan(
        self, start: int, num_records: int, key_data: np.ndarray | None
    ) -> Any:
        """Plan inputs made on the host before a compiled run (default: none).

        Called outside any trace with the run's start position, its number of
        records and the shuffle key's data (``None`` in natural order). What it
        returns (a pytree of arrays) is passed into the compiled run and on to
        :meth:`_plan` as ``host_plan``: sources use it to reuse work across runs,
        such as a permutation computed once per epoch.
        """
        del start, num_records, key_data
        return None

    def _plan(
        self,
        start: jax.Array,
        num_records: int,
        key: jax.Array | None,
        host_plan: Any = None,
    ) -> Any:
        """Work shared by the batches of positions ``start .. start+num_records-1``.

        Computed once per compiled run, before its loop, from ``host_plan`` when
        the pipeline made one. The default plans nothing.
        """
        del start, num_records, key, host_plan
        return None

    def _read(
        self, plan: Any, start: jax.Array, batch_size: int, key: jax.Array | None
    ) -> Batch:
        """Reads one batch inside the window that ``plan`` was made for."""
        del plan
        return self.get_batch_at(start, batch_size, key)

    def host_batches(
        self, start: int, batch_size: int, key_data: np.ndarray | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Iteration-only sources: the stream from position ``start``, on the host.

        Yields NumPy batches of ``batch_size`` records (the stream runs on into
        the next epoch; the last batch of a finite iterable may be short).
        ``key_data`` is the shuffle key's data (``None`` in natural order): a
        shuffling source serves epoch ``e`` in an order determined by
        ``(key_data, e)`` alone, so a restarted iterator serves the same stream.
        """
        del start, batch_size, key_data
        raise NotImplementedError(
            f"{type(self).__name__} sets random_access = False and must implement "
            "host_batches."
        )
