"""``HostSourceBase``: random-access sources whose records are read on the host."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from datarax.core import Batch, convert_for_jax
from datarax.sources._order import OrderedSource, host_indices

#: Bytes a compiled run reads per host callback.
READ_BYTES = 8 * 2**20


class HostSourceBase(OrderedSource):
    """Base for sources that read records on the host, on demand.

    The record indices of a batch are computed in JAX (natural order, or the
    same per-epoch permutations as every eager source); the records themselves
    come from :meth:`host_read`, called through ``jax.pure_callback``, so
    :meth:`get_batch_at` stays traceable inside ``jit`` / ``scan`` / ``vmap``.
    A callback has a fixed cost of 50-100 us, so ``Pipeline.scan`` reads about
    8 MiB (at most 64 batches) per call and iteration a chunk of batches.

    Subclasses set ``self.length``, implement :attr:`element_spec` (the dtypes
    JAX will hold) and :meth:`host_read`, which may return wider dtypes (int64
    for an int32 spec): each read is cast to the spec, and a value that would
    wrap or overflow to ``inf`` raises ``ValueError`` naming the field and
    record. Keep file handles and readers behind a
    plain holder object (not an array attribute), so they never enter nnx state,
    checkpoints or a compiled function's arguments.
    """

    reads_on_host = True
    serves_host_batches = True

    def host_read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Reads records ``rows`` (1-d int64, in the order given) on the host.

        Returns field -> array of ``len(rows)`` records, fields in
        :attr:`element_spec` order. Runs outside JAX, in the callback.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement host_read.")

    def host_batches(
        self,
        start: int,
        batch_size: int,
        key_data: np.ndarray | None,
        op_key_data: np.ndarray | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Full batches of the stream from ``start``, read on the host, endlessly.

        What iteration reads (a pipeline's ``prefetch`` thread reads them ahead
        of the consumer): the records of each batch's positions, in the same
        order as every compiled read (``key_data``: the shuffle key's data, or
        ``None``), checked and cast to the element spec like a callback's read.
        """
        del op_key_data  # records are read, not drawn
        spec = self.element_spec
        position = start
        while True:
            positions = np.arange(position, position + batch_size, dtype=np.int64)
            yield self._checked_rows(
                host_indices(positions, self.length, key_data), spec
            )
            position += batch_size

    def _checked_rows(
        self, rows: np.ndarray, spec: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """:meth:`host_read` of ``rows`` (1-d int64), checked and cast to ``spec``.

        Every host read goes through here, the callback's and iteration's.
        Checked per read, not per file at open: a scan at open would read the
        whole dataset before the first batch. Only fields the cast narrows
        (64-bit without x64) pay a min/max; see ``convert_for_jax``.
        """
        owner = type(self).__name__
        fields = _checked_host_read(owner, self.host_read(rows), spec, len(rows))
        return {
            name: convert_for_jax(
                fields[name], s.dtype, owner=owner, field=name, records=rows
            )
            for name, s in spec.items()
        }

    def steps_per_read(self, batch_size: int) -> int:
        """Batches per read: about ``READ_BYTES`` of records, at most 64."""
        record_bytes = sum(
            math.prod(s.shape) * np.dtype(s.dtype).itemsize
            for s in self.element_spec.values()
        )
        return max(1, min(64, READ_BYTES // max(1, batch_size * record_bytes)))

    def gather(self, index: jax.Array) -> Batch:
        """The records at ``index``, read on the host through one callback."""
        return self.read_records(index)

    def read_records(self, index: jax.Array) -> Batch:
        """The records at ``index`` (int32, any shape), read on the host.

        Traceable; under ``jax.vmap`` the callback receives the whole batch of
        indices at once.
        """
        spec = self.element_spec
        shapes = tuple(
            jax.ShapeDtypeStruct((*index.shape, *s.shape), s.dtype)
            for s in spec.values()
        )
        checked = self._checked_rows

        def callback(rows: np.ndarray) -> tuple[np.ndarray, ...]:
            flat = np.asarray(rows, dtype=np.int64).reshape(-1)
            held = checked(flat, spec)
            # Under vmap, rows carry the batched axes too: shape from rows.
            return tuple(
                held[name].reshape(*rows.shape, *s.shape) for name, s in spec.items()
            )

        values = jax.pure_callback(callback, shapes, index, vmap_method="expand_dims")
        return dict(zip(spec, values, strict=True))


def _checked_host_read(
    owner: str, fields: Any, spec: Mapping[str, Any], count: int
) -> Mapping[str, Any]:
    """Refuses a ``host_read`` result that is not ``count`` rows of every field."""
    if not isinstance(fields, Mapping):
        raise TypeError(
            f"{owner}.host_read returned a {type(fields).__name__}; it returns a "
            "dict of field name -> array with one row per requested index."
        )
    missing = [name for name in spec if name not in fields]
    if missing:
        raise ValueError(
            f"{owner}.host_read returned no {missing} (element_spec declares "
            f"{sorted(spec)}); return every field."
        )
    for name, want in spec.items():
        shape = np.shape(fields[name])
        if shape != (count, *want.shape):
            raise ValueError(
                f"{owner}.host_read returned field {name!r} of shape {shape} for "
                f"{count} indices; it returns one row of shape "
                f"{tuple(want.shape)} per index, in the order asked."
            )
    return fields
