"""``NumPy-loop``: the loader a user writes by hand, with no library.

Slice (or fancy-index) NumPy arrays, apply the transforms in NumPy
(:func:`~datarax.bench.apply_numpy`), ``jax.device_put`` the batch. One epoch at a
time, a fresh permutation per epoch when shuffling, the last short batch of an
epoch dropped, everything on the calling thread: no workers, no prefetch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datarax.bench._adapter import (
    Batch,
    IteratorAdapter,
    endless,
    register_adapter,
    to_device,
)
from datarax.bench._scenarios import Scenario, apply_numpy


@register_adapter
class NumPyLoopAdapter(IteratorAdapter):
    """A hand-written NumPy loop delivering batches with ``jax.device_put``.

    An on-disk scenario memory-maps the ``.npy`` files (``np.load(mmap_mode="r")``);
    a mixed one draws each record's source with ``rng.choice`` and reads the
    sources in order.

    Args:
        seed: seeds the permutations, the mix and the stochastic transforms.
    """

    name = "NumPy-loop"
    kind = "hand"
    modules = ()

    def __init__(self, *, seed: int = 0):
        self._seed = seed

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Keeps the arrays (memory maps for ``on_disk``) and seeds the generator."""
        self._scenario = scenario
        self._rng = np.random.default_rng(self._seed)
        if scenario.on_disk:
            files = sorted(workdir.glob("*.npy"))
            self._sources = [{f.stem: np.load(f, mmap_mode="r") for f in files}]
        else:
            self._sources = data

    def settings(self) -> dict[str, Any]:
        """Where the records come from; the loop itself has nothing to set."""
        on_disk = self._scenario.on_disk
        return {"read": "np.load(mmap_mode='r')" if on_disk else "memory"}

    def make_iterator(self) -> Iterator[Batch]:
        """Endless device batches, epoch after epoch (or mixed draws)."""
        if self._scenario.mix_weights is not None:
            return self._mixed()
        return endless(self._epoch)

    def _epoch(self, epoch: int) -> Iterator[Batch]:
        scenario, source = self._scenario, self._sources[0]
        size = len(next(iter(source.values())))
        batch_size = scenario.batch_size
        order = self._rng.permutation(size) if scenario.shuffle else None
        for start in range(0, size - batch_size + 1, batch_size):
            if order is None:
                batch = {k: v[start : start + batch_size] for k, v in source.items()}
            else:
                rows = order[start : start + batch_size]
                batch = {k: v[rows] for k, v in source.items()}
            yield to_device(apply_numpy(scenario, batch, self._rng))

    def _mixed(self) -> Iterator[Batch]:
        scenario = self._scenario
        weights = np.asarray(scenario.mix_weights, np.float64)
        weights = weights / weights.sum()
        lengths = [len(next(iter(s.values()))) for s in self._sources]
        drawn = [0] * len(self._sources)
        batch_size = scenario.batch_size
        while True:
            choice = self._rng.choice(len(self._sources), batch_size, p=weights)
            batch = {
                k: np.empty((batch_size, *v.shape[1:]), v.dtype)
                for k, v in self._sources[0].items()
            }
            for index, source in enumerate(self._sources):
                mine = np.flatnonzero(choice == index)
                rows = (drawn[index] + np.arange(len(mine))) % lengths[index]
                drawn[index] += len(mine)
                for k, v in source.items():
                    batch[k][mine] = v[rows]
            yield to_device(apply_numpy(scenario, batch, self._rng))
