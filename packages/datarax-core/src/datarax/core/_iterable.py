"""``IterableSource``: the iteration-only kind of source."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import numpy as np

from datarax.core._dtypes import convert_for_jax
from datarax.core._source import Batch, ElementSpec, SourceBase


class IterableSource(SourceBase):
    """A source whose records can only be read in order, on the host.

    Some data cannot be reached by position: a streamed HuggingFace
    ``IterableDataset``, TFRecord files. Such a source feeds ``Pipeline``
    iteration (the stages still run compiled, with the same positions and
    per-record keys as everywhere else); ``Pipeline.scan``, ``Pipeline.step`` and
    :meth:`get_batch_at` need random access and raise a ``TypeError`` saying so.

    Implement ``__len__`` (records per epoch), :attr:`element_spec` and
    :meth:`iter_epoch`. :meth:`host_batches` turns epochs into the endless stream
    of full batches a pipeline reads, checks every chunk against the element
    spec, and resumes mid-epoch by skipping records.
    """

    #: What to use instead, named in the errors of compiled modes.
    random_access_alternative: str = "a random-access source over the same data"

    serves_host_batches = True

    def iter_epoch(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Chunks (any number of records each) of epoch ``epoch``, from ``skip``.

        ``key_data`` is ``None`` for natural order; otherwise a shuffling source
        serves the epoch in an order determined by ``(key_data, epoch)`` alone,
        so a restarted stream is the same stream.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement iter_epoch.")

    def get_batch_at(
        self, start: jax.typing.ArrayLike, batch_size: int, key: jax.Array | None = None
    ) -> Batch:
        """Not available: an iteration-only source has no random access.

        Raises:
            TypeError: always, naming what to use instead.
        """
        raise TypeError(self.needs_random_access("get_batch_at"))

    def needs_random_access(self, what: str) -> str:
        """The message for ``what`` (scan, step, ...), which needs random access."""
        return (
            f"{what} needs random access to records by stream position (it loads "
            f"data inside compiled code), but {type(self).__name__} is "
            "iteration-only: it reads its records in order, on the host. Iterate the "
            f"pipeline instead (for batch in pipe: ...), or use "
            f"{self.random_access_alternative}."
        )

    def host_batches(
        self, start: int, batch_size: int, key_data: np.ndarray | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Full NumPy batches of the stream from position ``start``, endlessly.

        Batches run on into the next epoch. ``key_data`` is the shuffle key's
        data (``None`` in natural order).

        Raises:
            RuntimeError: when an epoch holds more or fewer records than
                ``len(source)``.
            ValueError: for a chunk whose fields or shapes differ from the spec.
        """
        epoch, skip = divmod(start, len(self))
        # Records received but not yet served, joined once per chunk: a batch is
        # a slice of it, so each record is copied about twice, whatever the
        # ratio of chunk size to batch size.
        held: dict[str, np.ndarray] | None = None
        while True:
            for chunk in self._epoch_chunks(epoch, key_data, skip):
                held = chunk if held is None else _joined(held, chunk)
                count = len(next(iter(held.values())))
                offset = 0
                while count - offset >= batch_size:
                    yield {k: v[offset : offset + batch_size] for k, v in held.items()}
                    offset += batch_size
                held = {k: v[offset:] for k, v in held.items()}
            epoch, skip = epoch + 1, 0

    def _epoch_chunks(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """:meth:`iter_epoch`, each chunk checked, the epoch's length enforced."""
        spec, owner, length = self.element_spec, type(self).__name__, len(self)
        served = 0
        for chunk in self.iter_epoch(epoch, key_data, skip):
            chunk = _checked_chunk(chunk, spec, owner, epoch, skip + served)
            served += len(next(iter(chunk.values())))
            if served > length - skip:
                raise RuntimeError(
                    f"{owner}: epoch {epoch} holds more than the {length} records "
                    "the source declared."
                )
            yield chunk
        if served != length - skip:
            raise RuntimeError(
                f"{owner}: epoch {epoch} ended after {skip + served} records, but "
                f"the source declared {length}."
            )


def _joined(
    held: dict[str, np.ndarray], chunk: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {k: np.concatenate([held[k], chunk[k]]) for k in held}


def _checked_chunk(
    chunk: dict[str, np.ndarray],
    spec: ElementSpec,
    owner: str,
    epoch: int,
    first: int,
) -> dict[str, np.ndarray]:
    """``chunk`` as NumPy arrays in spec order, or an error naming the field.

    ``first`` is the chunk's first record in the epoch, for messages. Values
    are cast to the spec's dtypes by :func:`convert_for_jax`: a 64-bit value
    that 32 bits cannot hold is refused, never wrapped.
    """
    if not isinstance(chunk, Mapping):
        raise TypeError(
            f"{owner}: iter_epoch yielded a {type(chunk).__name__} in epoch "
            f"{epoch}; it yields chunks: dicts of field name -> array with the "
            "records on axis 0."
        )
    missing = [name for name in spec if name not in chunk]
    if missing:
        raise ValueError(
            f"{owner}: a chunk of epoch {epoch} lacks the fields {missing} of the "
            f"element spec {sorted(spec)}."
        )
    out = {}
    for name, s in spec.items():
        array = np.asarray(chunk[name])
        if array.ndim == 0 or array.shape[1:] != tuple(s.shape):
            raise ValueError(
                f"{owner}: field {name!r} has records of shape {array.shape[1:]} in "
                f"epoch {epoch}, but the element spec says {tuple(s.shape)}; "
                "every record must have the same shape."
            )
        records = np.arange(first, first + len(array))
        out[name] = convert_for_jax(
            array, s.dtype, owner=owner, field=name, records=records
        )
    return out
