"""``IterableSourceBase``: iteration-only sources over streams read in order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from datarax.core import DataSource, ElementSpec


class IterableSourceBase(DataSource):
    """Base for sources that can only read their records in order.

    Some data cannot be reached by position: a streamed HuggingFace
    ``IterableDataset``, TFRecord files. Such a source feeds ``Pipeline``
    iteration (the stages still run compiled, with the same positions and keys as
    everywhere else), while ``Pipeline.scan``, ``Pipeline.step`` and
    :meth:`get_batch_at` raise a ``TypeError`` saying why and what to use instead.

    Subclasses set ``self.length`` (records per epoch), implement
    :attr:`element_spec` and :meth:`iter_epoch`; this base turns epochs into the
    endless stream of full batches a pipeline reads, checks every chunk against
    the element spec, and resumes mid-epoch by skipping records.
    """

    random_access = False
    length: int

    def __len__(self) -> int:
        return self.length

    def iter_epoch(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Chunks (any number of records each) of epoch ``epoch``, from ``skip``.

        ``key_data`` is ``None`` for natural order; otherwise a shuffling source
        serves the epoch in an order determined by ``(key_data, epoch)`` alone.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement iter_epoch.")

    def host_batches(
        self, start: int, batch_size: int, key_data: np.ndarray | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Full batches of the stream from position ``start``, epoch after epoch."""
        spec = self.element_spec
        epoch, skip = divmod(start, self.length)
        # Records received but not yet served, joined once per chunk: a batch is
        # a slice of it, so each record is copied about twice, whatever the
        # ratio of chunk size to batch size.
        held: dict[str, np.ndarray] | None = None
        while True:
            served = 0
            for chunk in self.iter_epoch(epoch, key_data, skip):
                chunk = _checked_chunk(chunk, spec, type(self).__name__, epoch)
                size = len(next(iter(chunk.values())))
                served += size
                if served > self.length - skip:
                    raise RuntimeError(
                        f"{type(self).__name__}: epoch {epoch} holds more than the "
                        f"{self.length} records the source declared."
                    )
                if held is None:
                    held = chunk
                else:
                    held = {k: np.concatenate([held[k], chunk[k]]) for k in spec}
                count = len(next(iter(held.values())))
                offset = 0
                while count - offset >= batch_size:
                    yield {k: v[offset : offset + batch_size] for k, v in held.items()}
                    offset += batch_size
                held = {k: v[offset:] for k, v in held.items()}
            if served != self.length - skip:
                raise RuntimeError(
                    f"{type(self).__name__}: epoch {epoch} ended after "
                    f"{skip + served} records, but the source declared {self.length}."
                )
            epoch, skip = epoch + 1, 0


def _checked_chunk(
    chunk: dict[str, np.ndarray], spec: ElementSpec, owner: str, epoch: int
) -> dict[str, np.ndarray]:
    """``chunk`` as NumPy arrays in spec order, or an error naming the field."""
    missing = [name for name in spec if name not in chunk]
    if missing:
        raise ValueError(
            f"{owner}: a chunk of epoch {epoch} lacks the fields {missing} of the "
            f"element spec {sorted(spec)}."
        )
    out = {}
    for name, s in spec.items():
        array = np.asarray(chunk[name])
        if array.shape[1:] != tuple(s.shape):
            raise ValueError(
                f"{owner}: field {name!r} has records of shape {array.shape[1:]} in "
                f"epoch {epoch}, but the element spec says {tuple(s.shape)}; "
                "every record must have the same shape."
            )
        out[name] = array.astype(s.dtype, copy=False)
    return out
