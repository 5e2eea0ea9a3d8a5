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
from datarax.bench._augment import (
    CUTOUT_SIZE,
    FLIP_P,
    IMAGE_OPS,
    JITTER,
    LUMA,
    PIXEL_MAX,
    crop_windows_numpy,
)
from datarax.bench._jpeg import decoder, default_workers
from datarax.bench._peers._jpeg import batches_of, torch_loader, torch_text_loader
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
    randomness does not depend on which worker serves the batch. A scenario
    with image augmentations (``AUG-2``) is transformed by
    :func:`augment_torch` instead.

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
        batch = gather(self.arrays, indices)
        if uses_image_ops(self.scenario):
            return augment_torch(self.scenario, batch, rng)
        return apply_numpy(self.scenario, batch, rng)


def uses_image_ops(scenario: Scenario) -> bool:
    """Whether the scenario has image augmentations (done in torch here)."""
    return any(op in IMAGE_OPS for op in scenario.ops)


def augment_torch(
    scenario: Scenario, batch: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, Any]:
    """The scenario's ops on a batch in torch ops, vectorised over the batch.

    What torchvision's v2 ``RandomResizedCrop``, ``RandomHorizontalFlip``,
    ``ColorJitter`` and ``RandomErasing`` do per image, written for the whole
    batch (torchvision is not installed beside the CPU torch this benchmark
    pins): every window in one ``affine_grid`` + ``grid_sample`` (bilinear,
    border padding: the clamped sampling of the scenario), flips and cutout as
    masks, jitter as blends with the luma. The windows' parameters are drawn on
    the host from ``rng`` (as torchvision draws them in Python), the rest from
    a torch generator seeded from it. Images go channels-first for the
    sampling and come back ``[batch, height, width, channels]`` float32.
    """
    import torch

    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    out: dict[str, Any] = {}
    for name, array in batch.items():
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
        for op in scenario.ops:
            if op == "normalize":
                x = x * scenario.scale + scenario.shift
            else:
                x = _TORCH_OPS[op](torch, x, rng, generator)
        out[name] = x.permute(0, 2, 3, 1).contiguous()
    return out


def _resized_crop(torch: Any, x: Any, rng: np.random.Generator, gen: Any) -> Any:
    size, _, rows, columns = x.shape
    top, left, height, width = crop_windows_numpy(rng, size, rows, columns)
    # Output x in [-1, 1] (align_corners=False) samples the input at
    # (width / columns) * x + (2 * left + width) / columns - 1: the window's
    # half-pixel centres; likewise along y.
    theta = np.zeros((size, 2, 3), np.float32)
    theta[:, 0, 0] = width / columns
    theta[:, 0, 2] = (2 * left + width) / columns - 1
    theta[:, 1, 1] = height / rows
    theta[:, 1, 2] = (2 * top + height) / rows - 1
    functional = torch.nn.functional
    grid = functional.affine_grid(
        torch.from_numpy(theta), list(x.shape), align_corners=False
    )
    return functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _flip(torch: Any, x: Any, rng: np.random.Generator, gen: Any) -> Any:
    flip = torch.rand(x.shape[0], generator=gen) < FLIP_P
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _jitter(torch: Any, x: Any, rng: np.random.Generator, gen: Any) -> Any:
    factors = torch.empty(x.shape[0], 3, 1, 1, 1).uniform_(
        1 - JITTER, 1 + JITTER, generator=gen
    )
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    x = (x * factors[:, 0]).clamp_(0.0, PIXEL_MAX)
    mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (mean + (x - mean) * factors[:, 1]).clamp_(0.0, PIXEL_MAX)
    grey = (x * luma).sum(1, keepdim=True)
    return (grey + (x - grey) * factors[:, 2]).clamp_(0.0, PIXEL_MAX)


def _cutout(torch: Any, x: Any, rng: np.random.Generator, gen: Any) -> Any:
    size, _, rows, columns = x.shape
    low_y = torch.randint(0, rows, (size, 1, 1), generator=gen) - CUTOUT_SIZE // 2
    low_x = torch.randint(0, columns, (size, 1, 1), generator=gen) - CUTOUT_SIZE // 2
    ys = torch.arange(rows)[None, :, None]
    xs = torch.arange(columns)[None, None, :]
    inside = (ys >= low_y) & (ys < low_y + CUTOUT_SIZE)
    inside = inside & (xs >= low_x) & (xs < low_x + CUTOUT_SIZE)
    return x.masked_fill(inside[:, None], 0.0)


_TORCH_OPS = {
    "resized_crop": _resized_crop,
    "flip": _flip,
    "jitter": _jitter,
    "cutout": _cutout,
}


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
    reads_files: ClassVar[bool] = True

    def __init__(
        self, *, num_workers: int | None = None, prefetch_factor: int = 4
    ) -> None:
        self._default_workers = num_workers is None
        self._epochs = False  # a loader of one epoch, restarted (CV-JPEG)
        if num_workers is None:
            cores = os.cpu_count() or 1
            num_workers = 0 if cores <= 2 else cores - 1
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self._loader: Any = None

    def settings(self) -> dict[str, Any]:
        """The DataLoader's workers, prefetch and batching."""
        if self._epochs:  # CV-JPEG
            return {
                "num_workers": self.num_workers,
                "prefetch_factor": self.prefetch_factor,
                "multiprocessing_context": "forkserver",
                "pipeline": "Dataset.__getitem__: read + decode_crop + normalize "
                "one file; DataLoader(batch_size, shuffle, default collate, "
                "persistent_workers)",
                "decoder": decoder(),
                "to_device": "Tensor.numpy() + jax.device_put",
            }
        return {
            "num_workers": self.num_workers,
            "prefetch_factor": self.prefetch_factor if self.num_workers else None,
            "multiprocessing_context": "forkserver" if self.num_workers else None,
            "batching": "batch sampler of indices, batch_size=None, "
            "one NumPy gather per batch",
            "pin_memory": False,
            "transforms": "NumPy, per batch, in the workers (AUG-2: torch ops, "
            "per batch: affine_grid + grid_sample, masks, blends; CV-JPEG: one "
            "file per __getitem__, Pillow decode + resize of the crop window, "
            "default collate, persistent workers)",
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

        if scenario.encoded:
            # Decoding is the work here: one worker process per core, the
            # DataLoader's documented setting for CPU-bound per-record work.
            if self._default_workers:
                self.num_workers = default_workers()
            make = torch_loader if scenario.encoded == "jpeg" else torch_text_loader
            self._loader = make(
                scenario, variant, self.num_workers, self.prefetch_factor
            )
            self._epochs = True
            return
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
        batches = batches_of(self._loader) if self._epochs else self._loader
        return (to_device({k: v.numpy() for k, v in b.items()}) for b in batches)

    def close(self) -> None:
        """Stops the worker processes."""
        # The DataLoader's iterator shuts its workers down when it is collected;
        # the generator around it holds the only reference.
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        self._iterator = None
        self._loader = None
        gc.collect()
