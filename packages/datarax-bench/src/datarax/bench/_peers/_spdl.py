"""The SPDL adapter: an ``spdl.pipeline`` of thread-pool stages."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datarax.bench._adapter import Batch, IteratorAdapter, register_adapter, to_device
from datarax.bench._peers._jpeg import JpegRecords, jpeg_files, text_records
from datarax.bench._peers._stream import gather, source_arrays, stream_for
from datarax.bench._scenarios import Scenario, apply_numpy

SEED = 0


@register_adapter
class SPDLAdapter(IteratorAdapter):
    """SPDL (Scalable and Performant Data Loading) at its best for NumPy records.

    Built with ``PipelineBuilder`` as SPDL's guide lays a pipeline out: a
    lightweight source (the endless stream of batches of record indices, a
    fresh permutation per epoch when shuffling, sources drawn by weight for
    mixes), a loading stage that gathers each batch with one vectorised NumPy
    read and transforms it in NumPy, run ``concurrency`` batches at a time on
    the pipeline's thread pool (NumPy releases the GIL), then a separate
    single-concurrency stage for the device transfer, as SPDL advises for
    transfers, and a sink buffer. ``output_order="input"`` keeps the stream's
    order. Stochastic transforms draw from a generator seeded by
    ``(seed, step)``, so concurrent stages never share one.

    Encoded records (``CV-JPEG``, ``TEXT-1``) go through the same pipeline: the
    loading stage reads, decodes and crops each batch's files with the function
    every Python loader here calls (OpenCV releases the GIL), or tokenizes each
    batch's lines with ``encode_batch`` (Rust threads). SPDL's own image
    decoders (``spdl.io``) need FFmpeg's shared libraries, which this machine
    does not have.

    Args:
        num_threads: the pipeline's thread pool (default: the CPU count).
        concurrency: batches loaded at once.
        buffer_size: batches held ready in the sink.
    """

    name: ClassVar[str] = "SPDL"
    modules: ClassVar[tuple[str, ...]] = ("spdl",)
    reads_files: ClassVar[bool] = True

    def __init__(
        self,
        *,
        num_threads: int | None = None,
        concurrency: int | None = None,
        buffer_size: int = 8,
    ) -> None:
        self.num_threads = num_threads or os.cpu_count() or 1
        self.concurrency = concurrency or self.num_threads
        self.buffer_size = buffer_size
        self._pipeline: Any = None
        self._encoded = ""

    def settings(self) -> dict[str, Any]:
        """SPDL's threads, stage concurrency and buffers."""
        return {
            "pipeline": "add_source(index batches).pipe(gather+transform)"
            ".pipe(jax.device_put).add_sink()",
            "num_threads": self.num_threads,
            "load.concurrency": self.concurrency,
            "load.output_order": "input",
            "transfer.concurrency": 1,
            "sink.buffer_size": self.buffer_size,
            "transforms": {
                "jpeg": "per file: read + decode_crop + normalize, per batch",
                "text": "encode_batch per batch",
            }.get(self._encoded, "NumPy, per batch"),
        }

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds (but does not start) the SPDL pipeline."""
        from spdl.pipeline import PipelineBuilder

        self._encoded = scenario.encoded
        if scenario.encoded:
            load, size = _encoded_loader(scenario, variant)
            sizes = [size]
        else:
            arrays = source_arrays(scenario, data, workdir)
            sizes = [len(next(iter(d.values()))) for d in data]

            def load(item: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
                step, indices = item
                rng = np.random.default_rng((SEED, step))
                return apply_numpy(scenario, gather(arrays, indices), rng)

        self._pipeline = (
            PipelineBuilder()
            .add_source(stream_for(scenario, sizes, seed=SEED))
            .pipe(load, concurrency=self.concurrency, output_order="input")
            .pipe(to_device)
            .add_sink(self.buffer_size)
            .build(num_threads=self.num_threads)
        )

    def make_iterator(self) -> Iterator[Batch]:
        """Starts the pipeline's background thread; iterates its sink."""
        self._pipeline.start()
        return self._pipeline.get_iterator()

    def close(self) -> None:
        """Stops the pipeline's event loop and threads."""
        pipeline, self._pipeline, self._iterator = self._pipeline, None, None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError:
                pass  # never started (no batch was asked for): nothing to stop


def _encoded_loader(
    scenario: Scenario, variant: str
) -> tuple[Callable[[tuple[int, np.ndarray]], dict[str, np.ndarray]], int]:
    """The loading stage of an encoded scenario, and its number of records."""
    if scenario.encoded == "text":
        lines = text_records(scenario, variant)

        def tokenize(item: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
            return lines.tokenize.batch([lines.lines[i] for i in item[1]])

        return tokenize, len(lines)
    files = JpegRecords(*jpeg_files(scenario, variant))

    def decode(item: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
        step, indices = item
        rng = np.random.default_rng((SEED, step))
        records = [files.load(int(index), rng) for index in indices]
        return {name: np.stack([r[name] for r in records]) for name in records[0]}

    return decode, len(files)
