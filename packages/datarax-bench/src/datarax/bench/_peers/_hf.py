"""The HF-datasets adapter: an Arrow-backed ``datasets.Dataset`` in JAX format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from datarax.bench._adapter import Batch, IteratorAdapter, register_adapter
from datarax.bench._peers._stream import load_npy
from datarax.bench._scenarios import FieldSpec, Scenario, apply_jax

SEED = 0


def _feature(datasets: Any, spec: FieldSpec) -> Any:
    """The ``datasets`` feature type of a fixed-shape field."""
    if len(spec.shape) == 1:
        return datasets.List(datasets.Value(spec.dtype), length=spec.shape[0])
    array_type = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D}
    return array_type[len(spec.shape)](shape=spec.shape, dtype=spec.dtype)


@register_adapter
class HFDatasetsAdapter(IteratorAdapter):
    """Hugging Face ``datasets`` as a JAX user sets it up, per its JAX guide.

    The records sit in an in-memory Arrow table (``Dataset.from_dict`` with
    fixed-shape features, so batches come out as dense arrays) and are read
    with ``with_format("jax")``, which hands out ``jax.Array`` s on the default
    device; batches are slices of the dataset (``ds[a:b]``, Arrow's zero-copy
    slice). Shuffling is ``Dataset.shuffle(seed=epoch)`` every epoch (an index
    mapping, no rewrite of the table); mixing is ``interleave_datasets`` with the
    weights as probabilities (``stopping_strategy="all_exhausted"``). The
    transforms run in JAX on the delivered batch (``apply_jax`` under
    ``jax.vmap`` and ``jax.jit``, keys folded from the step), since the format
    already gives device arrays. ``IO-2`` converts the ``.npy`` files once into
    an Arrow file on disk (``save_to_disk``) and reads it back memory-mapped
    (``load_from_disk``), HF's own on-disk format.

    HF ``datasets`` has no worker pool or prefetch for map-style datasets in
    this mode: each batch is read on the calling thread.
    """

    name: ClassVar[str] = "HF-datasets"
    modules: ClassVar[tuple[str, ...]] = ("datasets",)

    def __init__(self) -> None:
        self._dataset: Any = None
        self._scenario: Scenario | None = None
        self._transform: Any = None

    def settings(self) -> dict[str, Any]:
        """How the dataset is stored, read, shuffled, mixed and transformed."""
        return {
            "storage": "in-memory Arrow table (IO-2: save_to_disk + memory-mapped "
            "load_from_disk)",
            "format": 'with_format("jax")',
            "batching": "dataset slices ds[a:b]",
            "shuffle": "Dataset.shuffle(seed=epoch) each epoch",
            "mix": 'interleave_datasets(probabilities, "all_exhausted")',
            "transforms": "jax.jit(jax.vmap(apply_jax)) on the delivered batch",
            "workers": "none (HF map-style datasets read on the calling thread)",
        }

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the Arrow-backed dataset(s) and the jitted transform."""
        import datasets

        features = datasets.Features(
            {name: _feature(datasets, spec) for name, spec in scenario.fields.items()}
        )
        if scenario.on_disk:
            in_memory = datasets.Dataset.from_dict(
                load_npy(workdir, list(scenario.fields)), features=features
            )
            # No progress bar: it would break the runner's one-line progress.
            bars = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()
            try:
                in_memory.save_to_disk(str(workdir / "hf"))
            finally:
                if bars:
                    datasets.enable_progress_bars()
            del in_memory  # read back memory-mapped: the records live on disk
            ds = datasets.load_from_disk(str(workdir / "hf"))
        else:
            sources = [datasets.Dataset.from_dict(d, features=features) for d in data]
            if scenario.mix_weights is None:
                (ds,) = sources
            else:
                total = sum(scenario.mix_weights)
                ds = datasets.interleave_datasets(
                    sources,
                    probabilities=[w / total for w in scenario.mix_weights],
                    seed=SEED,
                    stopping_strategy="all_exhausted",
                )
        self._dataset = ds.with_format("jax")
        self._scenario = scenario
        self._transform = _jitted_transform(scenario)

    def _epoch(self, epoch: int) -> Any:
        if self._scenario is not None and self._scenario.shuffle:
            return self._dataset.shuffle(seed=SEED + epoch)
        return self._dataset

    def make_iterator(self) -> Iterator[Batch]:
        """Endless slices of the dataset; a batch crossing epochs joins two."""
        scenario = self._scenario
        if scenario is None:
            raise RuntimeError("HF-datasets: call setup() before iterating.")
        size, batch_size = len(self._dataset), scenario.batch_size
        epoch, pos, step = 0, 0, 0
        current = self._epoch(0)
        while True:
            parts = []
            need = batch_size
            while need:
                n = min(need, size - pos)
                parts.append(current[pos : pos + n])
                pos, need = pos + n, need - n
                if pos == size:
                    epoch, pos = epoch + 1, 0
                    current = self._epoch(epoch)
            batch = parts[0]
            if len(parts) > 1:
                batch = {k: jax.numpy.concatenate([p[k] for p in parts]) for k in batch}
            yield self._transform(batch, step)
            step += 1

    def close(self) -> None:
        """Drops the dataset (and its memory map)."""
        self._iterator = None
        self._dataset = None


def _jitted_transform(scenario: Scenario) -> Any:
    """``(batch, step) -> batch``: the scenario's transforms, jitted, in JAX."""
    if not scenario.ops and not scenario.dag:
        return lambda batch, step: batch
    base = jax.random.key(SEED)

    @jax.jit
    def transform(batch: dict, step: int) -> dict:
        size = next(iter(batch.values())).shape[0]
        keys = jax.random.split(jax.random.fold_in(base, step), size)
        if not scenario.stochastic:
            return jax.vmap(lambda r: apply_jax(scenario, r, None))(batch)
        return jax.vmap(lambda r, k: apply_jax(scenario, r, k))(batch, keys)

    return transform
