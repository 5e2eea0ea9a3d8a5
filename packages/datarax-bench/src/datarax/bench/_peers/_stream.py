"""NumPy helpers the peer adapters share: the record stream and batched reads.

Several peers (PyTorch's sampler, SPDL's source) take the order of records from
a plain Python iterable. :class:`IndexStream` is that iterable for every
scenario: it serves batches of record indices along an endless stream whose
epochs follow the scenario (natural order or a fresh permutation per epoch,
several sources mixed by weight). Batches run across epoch boundaries, as
datarax's own stream does, so every batch is full.

Nothing here imports a peer framework.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from datarax.bench._scenarios import Scenario


class IndexStream:
    """An endless stream of batches of record indices, as ``(step, indices)``.

    Indices are global positions in the concatenation of the sources (see
    :func:`concat_sources`). Each source is read in its own stream order, epoch
    after epoch (a new permutation per epoch when ``shuffle``), so within a
    source every record appears once per that source's epoch. With ``weights``,
    each position of a batch draws its source with those probabilities.

    Iterating twice gives the same stream: the state lives in the iterator.

    Args:
        sizes: the number of records of each source.
        batch_size: indices per batch.
        shuffle: a fresh permutation of each source every epoch.
        weights: the mixing weights, one per source (None for a single source).
        seed: seeds the permutations and the source draws.

    Examples:
        >>> from datarax.bench._peers._stream import IndexStream
        >>> stream = iter(IndexStream([5], 2))
        >>> [next(stream)[1].tolist() for _ in range(3)]  # crosses into epoch 1
        [[0, 1], [2, 3], [4, 0]]
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = False,
        weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if weights is not None and len(weights) != len(sizes):
            raise ValueError(
                f"IndexStream: {len(weights)} weights for {len(sizes)} sources; "
                "give one weight per source."
            )
        self.sizes = tuple(int(s) for s in sizes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        offsets = np.cumsum((0, *self.sizes[:-1]))
        readers = [
            _SourceReader(size, int(offset), shuffle=self.shuffle, seed=(self.seed, i))
            for i, (size, offset) in enumerate(zip(self.sizes, offsets, strict=True))
        ]
        if self.weights is None:
            (reader,) = readers  # one source: no draws needed
            step = 0
            while True:
                yield step, reader.take(self.batch_size)
                step += 1
        probs = np.asarray(self.weights) / sum(self.weights)
        # One generator for the draws, separate from the per-epoch permutations, so
        # the mix does not change the order in which each source is read.
        draws = np.random.default_rng((self.seed, len(self.sizes), 1))
        step = 0
        while True:
            choice = draws.choice(len(readers), size=self.batch_size, p=probs)
            batch = np.empty(self.batch_size, np.int64)
            for i, reader in enumerate(readers):
                where = choice == i
                count = int(where.sum())
                if count:
                    batch[where] = reader.take(count)
            yield step, batch
            step += 1


class _SourceReader:
    """One source's endless stream of global indices, epoch after epoch."""

    def __init__(
        self, size: int, offset: int, *, shuffle: bool, seed: tuple[int, int]
    ) -> None:
        self.size, self.offset, self.shuffle, self.seed = size, offset, shuffle, seed
        self.epoch, self.pos = 0, 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.offset, self.offset + self.size, dtype=np.int64)
        # Per-epoch seed, so every epoch is a fresh permutation and epoch e's
        # order does not depend on how many records earlier batches took.
        rng = np.random.default_rng((*self.seed, epoch))
        return self.offset + rng.permutation(self.size).astype(np.int64)

    def take(self, count: int) -> np.ndarray:
        parts = []
        while count:
            n = min(count, self.size - self.pos)
            parts.append(self.order[self.pos : self.pos + n])
            self.pos += n
            count -= n
            if self.pos == self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = self._order(self.epoch)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def stream_for(scenario: Scenario, sizes: Sequence[int], seed: int = 0) -> IndexStream:
    """The :class:`IndexStream` a scenario asks for over sources of ``sizes``."""
    return IndexStream(
        sizes,
        scenario.batch_size,
        shuffle=scenario.shuffle,
        weights=scenario.mix_weights,
        seed=seed,
    )


def concat_sources(data: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The sources as one table (global index = source offset + local index).

    A single source is returned as it is (no copy).
    """
    if len(data) == 1:
        return dict(data[0])
    return {name: np.concatenate([d[name] for d in data]) for name in data[0]}


def load_npy(workdir: Path, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``<field>.npy`` files of ``workdir``, memory-mapped (read on demand)."""
    return {name: np.load(workdir / f"{name}.npy", mmap_mode="r") for name in fields}


def source_arrays(
    scenario: Scenario, data: list[dict[str, np.ndarray]], workdir: Path
) -> dict[str, np.ndarray]:
    """The arrays a NumPy-reading peer gathers from: on disk for ``on_disk``."""
    if scenario.on_disk:
        return load_npy(workdir, list(scenario.fields))
    return concat_sources(data)


def gather(arrays: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    """One batch: the rows ``indices`` of every field, in one vectorised read each.

    On a memory-mapped array this reads just those rows from the file.
    """
    return {name: np.asarray(array[indices]) for name, array in arrays.items()}
