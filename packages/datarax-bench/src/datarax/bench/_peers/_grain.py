"""The Grain adapter: a ``grain.MapDataset`` pipeline read by threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datarax.bench._adapter import Batch, IteratorAdapter, register_adapter
from datarax.bench._consumers import batch_sharding, consumer_of
from datarax.bench._jpeg import decoder
from datarax.bench._peers._jpeg import grain_dataset
from datarax.bench._peers._stream import gather, source_arrays
from datarax.bench._scenarios import Scenario, apply_numpy

SEED = 0


@register_adapter
class GrainAdapter(IteratorAdapter):
    """Grain's dataset API at its best for in-memory NumPy records.

    The pipeline is built on record *indices* (``MapDataset.range``, ``shuffle``
    per epoch, ``repeat``, ``mix`` by weight) and batched by Grain's own
    ``batch``; one ``map`` then reads each batch's rows with a single vectorised
    NumPy gather and applies the scenario's transforms in NumPy (``random_map``,
    with Grain's per-element generator, when they are stochastic). Batching
    indices rather than stacking per-record row views is what Grain's batch
    push-down aims at, and is several times faster here. ``to_iter_dataset``
    reads ahead with a thread pool, and ``grain.experimental.device_put`` moves
    batches to the default device in a background thread.

    Threads, not ``mp_prefetch`` processes: every transform here is a few NumPy
    calls that release the GIL, and on a 2-core machine worker processes cost
    more in inter-process copies than they win.

    Args:
        num_threads: reader threads of ``ReadOptions`` (default: the CPU count).
        prefetch_buffer_size: batches read ahead by those threads.
    """

    name: ClassVar[str] = "Grain"
    modules: ClassVar[tuple[str, ...]] = ("grain",)
    shards_batches: ClassVar[bool] = True
    reads_files: ClassVar[bool] = True
    #: Worker processes of ``mp_prefetch`` (0: threads only).
    processes: ClassVar[int] = 0

    def __init__(
        self, *, num_threads: int | None = None, prefetch_buffer_size: int = 8
    ) -> None:
        self.num_threads = num_threads or os.cpu_count() or 1
        self.prefetch_buffer_size = prefetch_buffer_size
        self._dataset: Any = None
        self._grain_iter: Any = None
        self._encoded = False

    def settings(self) -> dict[str, Any]:
        """Grain's reader threads, buffers and pipeline shape."""
        if self._encoded:  # CV-JPEG
            return {
                "pipeline": "MapDataset.range().shuffle().repeat()"
                ".random_map(read + decode_crop + normalize).batch()"
                ".to_iter_dataset()",
                "read_options.num_threads": self.num_threads,
                "read_options.prefetch_buffer_size": 4,
                "decoder": decoder(),
                "device_put": "grain.experimental.device_put(cpu_buffer_size=4, "
                "device_buffer_size=2)",
            }
        return {
            "pipeline": "MapDataset.range(+shuffle/mix).repeat().batch()"
            ".map(gather+transform).to_iter_dataset()",
            "read_options.num_threads": self.num_threads,
            "read_options.prefetch_buffer_size": self.prefetch_buffer_size,
            "device_put": "grain.experimental.device_put(cpu_buffer_size=4, "
            "device_buffer_size=2); sharded scenarios: the same two buffers around "
            "jax.make_array_from_process_local_data, each process loading its rows",
            "transforms": "NumPy, per batch",
        }

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the Grain pipeline over ``data`` (or the ``.npy`` files)."""
        import grain
        import jax

        if scenario.encoded:
            self._encoded = True
            batches = grain_dataset(scenario, variant, self.num_threads, self.processes)
            self._dataset = grain.experimental.device_put(
                batches, jax.devices()[0], cpu_buffer_size=4, device_buffer_size=2
            )
            return
        arrays = source_arrays(scenario, data, workdir)
        sizes = [len(next(iter(d.values()))) for d in data]
        offsets = np.cumsum([0, *sizes[:-1]])
        children = []
        for i, (size, offset) in enumerate(zip(sizes, offsets, strict=True)):
            # One seed per source: each is permuted independently.
            child = grain.MapDataset.range(int(offset), int(offset + size))
            child = child.seed(SEED + i)
            if scenario.shuffle:
                # shuffle before repeat: each epoch is a fresh permutation of the
                # source, never records of two epochs interleaved.
                child = child.shuffle()
            children.append(child.repeat())
        if scenario.mix_weights is None:
            (indices,) = children
        else:
            indices = grain.MapDataset.mix(children, list(scenario.mix_weights))
        # repeat() comes before batch(), so batches run on across epochs.
        batched = indices.batch(scenario.batch_size)
        sharding = batch_sharding(scenario)
        if sharding is not None:
            # Grain's multi-host recipe: each JAX process loads only its rows of
            # every global batch (its slice of the indices, before the gather).
            local = scenario.batch_size // jax.process_count()
            low = jax.process_index() * local
            batched = batched.map(lambda idx: idx[low : low + local])
        self.consumer = consumer_of(scenario)

        if scenario.stochastic:

            def load_random(idx: np.ndarray, rng: np.random.Generator) -> dict:
                return apply_numpy(scenario, gather(arrays, idx), rng)

            loaded = batched.random_map(load_random, seed=SEED)
        else:
            no_rng = np.random.default_rng(SEED)  # unused: no stochastic op

            def load(idx: np.ndarray) -> dict:
                return apply_numpy(scenario, gather(arrays, idx), no_rng)

            loaded = batched.map(load)
        read_options = grain.ReadOptions(
            num_threads=self.num_threads,
            prefetch_buffer_size=self.prefetch_buffer_size,
        )
        batches = loaded.to_iter_dataset(read_options)
        if sharding is None:
            self._dataset = grain.experimental.device_put(
                batches, jax.devices()[0], cpu_buffer_size=4, device_buffer_size=2
            )
            return
        # grain.experimental.device_put's two buffers, with the process's rows
        # made one global array (jax.device_put would need the whole batch).
        staged = grain.experimental.ThreadPrefetchIterDataset(
            batches, prefetch_buffer_size=4
        ).map(lambda b: jax.make_array_from_process_local_data(sharding, b))
        self._dataset = grain.experimental.ThreadPrefetchIterDataset(
            staged, prefetch_buffer_size=2
        )

    def make_iterator(self) -> Iterator[Batch]:
        """Grain's iterator: endless, since every source repeats."""
        self._grain_iter = iter(self._dataset)
        return self._grain_iter

    def close(self) -> None:
        """Stops Grain's prefetch threads."""
        it, self._grain_iter, self._iterator = self._grain_iter, None, None
        if it is not None and hasattr(it, "close"):
            it.close()


@register_adapter
class GrainProcessesAdapter(GrainAdapter):
    """Grain with ``mp_prefetch``: the per-record work in worker processes.

    Grain's answer to GIL-bound per-record work (decoding): the same pipeline as
    :class:`GrainAdapter`'s ``CV-JPEG`` one, read ahead by one worker process
    per core (``MultiprocessingOptions(num_workers=...)``). Measured on
    ``CV-JPEG`` only: on in-memory arrays Grain's threads are its best.
    """

    name: ClassVar[str] = "Grain-mp_prefetch"
    shards_batches: ClassVar[bool] = False
    processes: ClassVar[int] = max(1, os.cpu_count() or 1)

    def unsupported(self, scenario: Scenario) -> str | None:
        """Only ``CV-JPEG`` (decoding); threads are Grain's best elsewhere."""
        if not scenario.encoded:
            return "mp_prefetch is measured on encoded records (CV-JPEG, TEXT-1) only"
        return super().unsupported(scenario)

    def settings(self) -> dict[str, Any]:
        """Grain's settings and its worker processes."""
        return {**super().settings(), "mp_prefetch.num_workers": self.processes}
