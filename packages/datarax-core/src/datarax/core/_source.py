"""The source protocol: what a source implements so that a pipeline can read it.

Two kinds of source share one small base, :class:`SourceBase` (a length and the
shape of one record):

* :class:`DataSource`: random access by stream position, traceable. The minimum
  is :meth:`DataSource.get_batch_at`. Sources that can share work between the
  batches of a run (a permutation per epoch, a table of draws) subclass
  :class:`PlannedSource` and implement a ``plan`` / ``read`` pair instead; a
  ``host_plan`` made once per run on the host is an optional extra.
* :class:`~datarax.core.IterableSource`: records that can only be read in order
  (a streamed dataset, TFRecord files). They feed ``Pipeline`` iteration only.

``docs/sources.md`` ("Write your own source") walks through a complete one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core._keys import as_key

Batch = dict[str, jax.Array]
"""A batch: field name -> array with a leading batch axis."""

ElementSpec = dict[str, jax.ShapeDtypeStruct]
"""Shape and dtype of one record, per field."""

PlanT = TypeVar("PlanT")
"""What a source's ``plan`` returns (a pytree of arrays, or ``None``)."""

HostPlanT = TypeVar("HostPlanT")

MAX_POSITION = 2**31 - 1
"""The last stream position: positions (and so batch sizes) are int32."""
"""What a source's ``host_plan`` returns (a pytree of arrays, or ``None``)."""


class DataVar(nnx.Variable):
    """A Variable holding a source's dataset arrays.

    Kept apart from every other Variable so that a dataset is never carried
    through a scan, never returned from a compiled step and never written into a
    checkpoint: the pipeline broadcasts it into its compiled runs, and
    ``nnx.state(pipe, nnx.Not(DataVar))`` is the resumable state.
    """


#: The private hooks of datarax 0.1 sources and their public successors.
_RENAMED_HOOKS = {
    "_plan": "plan (subclass PlannedSource)",
    "_read": "read (subclass PlannedSource)",
    "_read_at": "read_at",
    "_host_plan": "host_plan",
    "_steps_per_read": "steps_per_read",
    "_gather": "gather (OrderedSource)",
}


class SourceBase(nnx.Module):
    """What every source has: a number of records and the shape of one.

    A source's *stream* repeats its ``len(source)`` records epoch after epoch:
    stream position ``p`` is record offset ``p % len`` of epoch ``p // len``.
    Subclass :class:`DataSource` (random access) or
    :class:`~datarax.core.IterableSource` (in order), not this class.

    Keep dataset arrays in :class:`DataVar` Variables, and file handles or
    readers behind a plain holder object, never as plain array attributes: those
    would become carried state in every compiled step and in checkpoints.
    """

    #: Whether the source can serve each epoch in a keyed permutation.
    supports_shuffle: bool = False

    #: Whether the source's reads call back into Python on the host
    #: (``jax.pure_callback``). Under a pipeline's ``sharding`` each device then
    #: reads its own slice of every batch, so each JAX process reads only the
    #: records its devices hold; other sources are read by XLA on each device.
    reads_on_host: bool = False

    #: Whether iteration reads this source's records as NumPy batches on the
    #: host (``host_batches``) and compiles only the stages: iteration-only
    #: sources, and sources whose host work runs ahead on workers.
    serves_host_batches: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        old = sorted(set(vars(cls)) & set(_RENAMED_HOOKS))
        if old:
            renames = ", ".join(f"{name} -> {_RENAMED_HOOKS[name]}" for name in old)
            raise TypeError(
                f"{cls.__name__} defines {old}, private hooks that datarax 0.2 "
                f"replaced by the public source protocol ({renames}); rename them "
                "(see 'The source protocol' in docs/sources.md)."
            )

    def __len__(self) -> int:
        """Records per epoch: ``self.length`` unless a subclass says otherwise."""
        length = getattr(self, "length", None)
        if length is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement __len__ (or set self.length)."
            )
        return int(length)

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field (no batch axis)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement the element_spec property."
        )

    def fingerprint(self) -> str | None:
        """What decides this source's stream beyond its length and element spec.

        Checkpoints record it, and restoring into a source whose fingerprint
        differs is refused. ``None`` (the default) when length and spec say it
        all; a composite source (a mix) describes its weights and children, in
        order. Leave out what may change without changing the stream (a file's
        path).
        """
        return None


def describe_source(source: SourceBase) -> str:
    """A source's fingerprint, or its type, length and element spec."""
    own = source.fingerprint()
    if own is not None:
        return own
    spec = sorted(
        (name, tuple(s.shape), str(s.dtype)) for name, s in source.element_spec.items()
    )
    return f"{type(source).__qualname__}(len={len(source)}, spec={spec})"


class DataSource(SourceBase, Generic[PlanT, HostPlanT]):
    """A random-access source: any window of its stream, read inside compiled code.

    Implement ``__len__``, :attr:`element_spec` and :meth:`get_batch_at`, a pure
    function of its arguments that works inside ``jax.jit``, ``nnx.scan`` and
    ``jax.vmap`` with ``start`` and ``key`` traced. A source that can shuffle
    sets ``supports_shuffle = True`` and, given a key, serves epoch ``e`` in a
    permutation determined by ``(key, e)`` alone.

    Pipelines read through :meth:`plan` and :meth:`read`: ``plan`` runs once per
    compiled run, ``read`` once per batch. Here ``plan`` plans nothing and
    ``read`` calls :meth:`get_batch_at`; :class:`PlannedSource` turns that
    around for sources whose batches share work.
    """

    def get_batch_at(
        self, start: jax.typing.ArrayLike, batch_size: int, key: jax.Array | None = None
    ) -> Batch:
        """Returns the records at stream positions ``start .. start+batch_size-1``.

        Traceable in ``start`` and ``key``; the batch may cross an epoch boundary.
        Same arguments, same batch: no hidden state is read or written.

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
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_batch_at (or subclass "
            "PlannedSource and implement read)."
        )

    def plan(
        self,
        start: jax.Array,
        num_records: int,
        key: jax.Array | None,
        host_plan: HostPlanT | None = None,
    ) -> PlanT | None:
        """Work shared by the batches of positions ``start .. start+num_records-1``.

        Traced once per compiled run, before its loop; ``host_plan`` is what
        :meth:`host_plan` made for the run. It is ``None`` when a pipeline traces
        a batch to learn its shapes, in :meth:`get_batch_at` and inside a
        caller's own ``jit``: then plan the same records without it. The default
        plans nothing.
        """
        del start, num_records, key, host_plan
        return None

    def read(
        self,
        plan: PlanT | None,
        start: jax.Array,
        batch_size: int,
        key: jax.Array | None,
    ) -> Batch:
        """``batch_size`` records from ``start``, inside the plan's window (traced).

        Pipelines often read several batches at once (iteration chunks, scan's
        ``steps_per_read``): a read may hold more than ``len(self)`` records and
        cross epochs. The default calls :meth:`get_batch_at`.
        """
        del plan
        return self.get_batch_at(start, batch_size, key)

    def read_at(
        self, plan: PlanT | None, positions: jax.Array, key: jax.Array | None
    ) -> Batch:
        """The records at arbitrary stream ``positions`` (int32 ``[n]``) in the plan.

        For readers that pick positions themselves (a mix). The default reads
        each position through :meth:`read` under ``jax.vmap``; sources that can
        gather override it with one gather.
        """

        def one(position: jax.Array) -> Batch:
            return {k: v[0] for k, v in self.read(plan, position, 1, key).items()}

        return jax.vmap(one)(positions)

    def host_plan(
        self, start: int, num_records: int, key_data: np.ndarray | None
    ) -> HostPlanT | None:
        """Inputs to :meth:`plan` made on the host before a compiled run.

        Called outside any trace with the run's start position, its number of
        records and the shuffle key's data (``None`` in natural order); sources
        use it to reuse work across runs, such as a permutation made once per
        epoch. It is an argument of every compiled call: return cached device
        arrays whose shapes depend only on ``num_records`` (NumPy would be copied
        on every dispatch, a new shape compiled again). The default makes
        nothing.
        """
        del start, num_records, key_data
        return None

    def steps_per_read(self, batch_size: int) -> int:
        """How many batches a compiled run should read at once (default 1).

        Sources whose every read has a fixed cost (a host callback) return more:
        ``Pipeline.scan`` reads that many steps' records in one go, and
        iteration computes larger chunks of batches per dispatch.
        """
        del batch_size
        return 1


class PlannedSource(DataSource[PlanT, HostPlanT]):
    """A random-access source read through a ``plan`` / ``read`` pair.

    Implement :meth:`read` (and usually :meth:`plan`); :meth:`get_batch_at`
    checks its arguments and reads through them. Work a run's batches share goes
    in ``plan``, made once per compiled run; ``read`` serves each batch from it.
    """

    def get_batch_at(
        self, start: jax.typing.ArrayLike, batch_size: int, key: jax.Array | None = None
    ) -> Batch:
        """Returns the records at stream positions ``start .. start+batch_size-1``.

        Plans for this one window and reads it; see :meth:`DataSource.get_batch_at`.

        Raises:
            TypeError: for a ``batch_size`` that is not a Python int, a ``start``
                that is not one integer, a ``key`` that is not one PRNG key.
            ValueError: for a ``batch_size`` below 1.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(
                f"batch_size must be a static Python int, got {batch_size!r}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        start = _checked_start(start)
        key = None if key is None else as_key(key)
        return self.read(self.plan(start, batch_size, key), start, batch_size, key)

    def read(
        self,
        plan: PlanT | None,
        start: jax.Array,
        batch_size: int,
        key: jax.Array | None,
    ) -> Batch:
        """One batch inside the window that ``plan`` was made for (traced)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read.")


def _checked_start(start: object) -> jax.Array:
    """``start`` as an int32 scalar, refusing floats, strings and arrays."""
    dtype = getattr(start, "dtype", None)
    if isinstance(start, bool) or not (
        isinstance(start, int)
        or (
            dtype is not None
            and jnp.issubdtype(dtype, jnp.integer)
            and getattr(start, "shape", None) == ()
        )
    ):
        raise TypeError(
            "start must be an integer scalar (a Python int, or an integer array of "
            f"shape ()), got {type(start).__name__} {start!r}."
        )
    # A concrete start is checked here; a traced one cannot be, and is the
    # caller's (a pipeline's positions are never negative or past the range).
    if not isinstance(start, jax.core.Tracer):
        value = int(start)  # type: ignore[call-overload]
        if not 0 <= value <= MAX_POSITION:
            raise ValueError(
                f"start must be a stream position from 0 to {MAX_POSITION} (int32), "
                f"got {value}; a negative start would wrap around to the end of an "
                "epoch without a word."
            )
    return jnp.asarray(start, jnp.int32)


def checked_read(source: SourceBase, raw: Any, count: int) -> Batch:
    """Refuses a read that is not ``count`` records of the source's element spec."""
    name = type(source).__name__
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"{name}.read returned a {type(raw).__name__}; a read returns a batch: "
            "a dict of field name -> array with the records on axis 0."
        )
    spec = source.element_spec
    if set(raw) != set(spec):
        raise ValueError(
            f"{name}.read returned the fields {sorted(raw)}, but its element_spec "
            f"declares {sorted(spec)}; make the two agree."
        )
    for field, want in spec.items():
        shape = tuple(getattr(raw[field], "shape", ()))
        dtype = getattr(raw[field], "dtype", None)
        if shape != (count, *want.shape) or dtype != want.dtype:
            raise ValueError(
                f"{name}.read returned field {field!r} as {dtype}{list(shape)} for "
                f"{count} records, but its element_spec declares {want.dtype}"
                f"{list(want.shape)} per record; a read of n records returns "
                "[n, *record shape] of the declared dtype."
            )
    return dict(raw)
