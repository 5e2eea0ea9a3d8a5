"""The PyTorch adapter: ``torch.utils.data.DataLoader`` with worker processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datarax.bench._adapter import Batch, IteratorAdapter, register_adapter, to_device
from datarax.bench._peers._stream import IndexStream, gather, source_arrays, stream_for
from datarax.bench._scenarios import Scenario, apply_numpy

SEED = 0


class BatchReader:
    """A map-style dataset whose keys are whole batches: ``(step, indices)``.

    The DataLoader's batched-read pattern (automatic batching off,
    ``batch_size=None``, a sampler yielding batches of indices): each worker
    reads a batch with one vectorised NumPy gather and transforms it in NumPy,
    instead of fetching records one by one and collating them. Stochastic
    transforms draw from a generator seeded by ``(seed, step)``, so the
    randomness does not depend on which worker serves the batch.

    Defined at module level (and free of torch) so that worker processes can
    unpickle it.

    Args:
        scenario: the scenario whose transforms are applied.
        arrays: field -> the rows of all sources (memory-mapped for ``IO-2``).
        seed: seeds the transforms' generators.
    """

    def __init__(
        self, scenario: Scenario, arrays: dict[str, np.ndarray], seed: int = SEED
    ) -> None:
        self.scenario, self.arrays, self.seed = scenario, arrays, seed

    def __getitem__(self, key: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
        step, indices = key
        rng = np.random.default_rng((self.seed, step))
        return apply_numpy(self.scenario, gather(self.arrays, indices), rng)


@register_adapter
class TorchAdapter(IteratorAdapter):
    """PyTorch's ``DataLoader`` at its best for in-memory NumPy records.

    Batches are read whole (:class:`BatchReader` with a batch sampler, the
    DataLoader's documented pattern for sources that read many records at once:
    one NumPy gather per batch instead of per-record fetches and a collate),
    come back as tensors and are put on the default device with
    ``jax.device_put`` (zero-copy ``Tensor.numpy()`` first). With worker
    processes, each keeps ``prefetch_factor`` batches in flight and sends them
    through shared memory.

    ``num_workers`` defaults to 0 (read in the main process) on machines with
    two cores or fewer, else one worker per core but one: a batch here is a
    single vectorised gather, and on 2 cores the workers compete with JAX and
    their shared-memory hand-off costs more than they parallelise (measured
    5-7x slower than in-process reads on NLP-1 and CV-1).

    The sampler is an endless stream of batches of indices (a fresh permutation
    per epoch when shuffling, sources drawn by weight for mixes, as
    ``WeightedRandomSampler`` over a ``ConcatDataset`` would, but without
    replacement within a source), so one iterator serves every epoch with full
    batches and the workers are started once.

    Workers start with the ``forkserver`` method: forking a process in which JAX
    is already running threads can deadlock (JAX warns so), and ``forkserver``
    starts them from a clean server process instead.

    Args:
        num_workers: worker processes (default: see above).
        prefetch_factor: batches in flight per worker.
    """

    name: ClassVar[str] = "PyTorch-DataLoader"
    modules: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(
        self, *, num_workers: int | None = None, prefetch_factor: int = 4
    ) -> None:
        if num_workers is None:
            cores = os.cpu_count() or 1
            num_workers = 0 if cores <= 2 else cores - 1
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self._loader: Any = None

    def settings(self) -> dict[str, Any]:
        """The DataLoader's workers, prefetch and batching."""
        return {
            "num_workers": self.num_workers,
            "prefetch_factor": self.prefetch_factor if self.num_workers else None,
            "multiprocessing_context": "forkserver" if self.num_workers else None,
            "batching": "batch sampler of indices, batch_size=None, "
            "one NumPy gather per batch",
            "pin_memory": False,
            "transforms": "NumPy, per batch, in the workers",
            "to_device": "Tensor.numpy() + jax.device_put",
        }

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the DataLoader over ``data`` (or the memory-mapped ``.npy``)."""
        from torch.utils.data import DataLoader

        sizes = [len(next(iter(d.values()))) for d in data]
        sampler: IndexStream = stream_for(scenario, sizes, seed=SEED)
        workers = {}
        if self.num_workers:
            context = multiprocessing.get_context("forkserver")
            # Import torch and this module once in the fork server (before it
            # starts), so each worker forks with them loaded instead of paying
            # seconds of imports; no effect once the server runs.
            context.set_forkserver_preload(["torch", __name__])
            workers = {
                "num_workers": self.num_workers,
                "prefetch_factor": self.prefetch_factor,
                "multiprocessing_context": context,
            }
        self._loader = DataLoader(
            BatchReader(scenario, source_arrays(scenario, data, workdir)),
            sampler=sampler,
            batch_size=None,  # the sampler's items are whole batches
            pin_memory=False,  # pinning only helps CUDA copies
            **workers,
        )

    def make_iterator(self) -> Iterator[Batch]:
        """The DataLoader's (endless) iterator, batches put on the device."""
        return (to_device({k: v.numpy() for k, v in b.items()}) for b in self._loader)

    def close(self) -> None:
        """Stops the worker processes."""
        # The DataLoader's iterator shuts its workers down when it is collected;
        # the generator around it holds the only reference.
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        self._iterator = None
        self._loader = None
        gc.collect()
