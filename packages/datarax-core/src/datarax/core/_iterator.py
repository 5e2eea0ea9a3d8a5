"""Python iteration over a pipeline, several batches per compiled dispatch."""

from __future__ import annotations

import collections
from collections.abc import Generator, Iterator
from typing import Any

import jax
import numpy as np

from datarax.core._compiled import (
    Compiled,
    Program,
    build_apply,
    build_chunk,
    cached_program,
    nbytes,
    probe_batch,
    steps_per_read,
)
from datarax.core._feed import Stream, host_plan, records_due, write_position
from datarax.core._graph import Graph, GraphSpec
from datarax.core._iterable import IterableSource
from datarax.core._keys import OPERATOR_STREAM, fold_in_host, host_shuffle_key
from datarax.core._prefetch import Ahead
from datarax.core._source import Batch

#: At most this many batches are computed per dispatch. Each batch is an output
#: buffer of the compiled chunk; on XLA:CPU the cost per output jumps past about 8
#: kernels (16 token batches took 9.6 us each to serve, 6 took 8.0 us).
MAX_CHUNK = 6
#: The same for sources that read through a host callback.
MAX_HOST_CHUNK = 16
#: ... and at most this many bytes of them are held at once.
CHUNK_BYTES = 32 * 2**20


def iterate(stream: Stream) -> Iterator[Batch]:
    """The iterator that suits the pipeline's kind of source."""
    source = stream.source
    if isinstance(source, IterableSource) or (
        source.serves_host_batches
        # Sharded or on several processes, the compiled reads take only each
        # device's (process's) records; host batches hold the global batch.
        and stream.sharding is None
        and jax.process_count() == 1
    ):
        return StreamIterator(stream)
    return PipelineIterator(stream)


class PipelineIterator:
    """Serves a pipeline's batches, computing up to ``MAX_CHUNK`` per dispatch.

    One ``jax.jit`` dispatch costs more than a whole batch of a small workload, so
    when building a batch changes no state (no RNG streams or counters in the
    stages, found by tracing one batch), the iterator computes a chunk of batches
    at once and hands them out one by one, advancing the pipeline's ``position``
    and ``epoch`` Variables per batch.

    Precomputed batches are only valid while nothing that builds them changes.
    Before serving each one the iterator checks that the position is the one it
    left, that every other carried value of the pipeline still holds (by
    identity) the value it held when the chunk was computed, and that the
    pipeline's structure is unchanged. Any write in between (an optimizer step on
    a stage's parameters, ``nnx.update``, a ``scan`` or ``step()``, a restored
    checkpoint) drops the chunk and recomputes from the new state. Stages with
    state of their own are computed one batch per dispatch, so that state is
    exact after every batch.
    """

    def __init__(self, stream: Stream):
        self._stream = stream
        self._nodes = (stream,)
        self._buffer: collections.deque = collections.deque()
        self._expected: list[tuple[Any, Any]] = []  # (Variable, value it held)
        self._position = -1  # where the buffered batches start
        self._program: Program | None = None

    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> Batch:
        stream = self._stream
        position = int(stream.position.get_raw_value())  # host scalar: no sync
        if self._buffer and (position != self._position or not self._still_valid()):
            self._buffer.clear()
        served = records_due(stream, position)
        if not self._buffer:
            self._fill()
        batch = self._buffer.popleft()
        if served < stream.batch_size:
            self._buffer.clear()
            batch = _head(batch, served)
        write_position(stream, position + served)
        self._position = position + served
        return batch

    def _still_valid(self) -> bool:
        assert self._program is not None
        if not self._program.graph.matches(self._nodes):
            return False
        for variable, value in self._expected:
            if variable.get_raw_value() is not value:
                return False
        return True

    def _fill(self) -> None:
        stream = self._stream
        program = cached_program(stream, ("chunk",), (stream,), None, _build_chunk)
        self._program = program
        records = program.compiled.length * stream.batch_size
        # Program.__call__ writes back what the stages changed (chunk of 1 then).
        (batches,) = program(host_plan(stream, records))
        self._buffer.extend(batches)
        self._expected = [
            (v, v.get_raw_value())
            for v in program.graph.carry_vars
            if v is not stream.position and v is not stream.epoch
        ]
        self._position = int(stream.position.get_raw_value())


def _build_chunk(spec: GraphSpec, graph: Graph) -> Compiled:
    """A chunk program: as many batches per dispatch as memory and state allow."""
    stateful, shapes = probe_batch(graph)
    stream: Stream = graph.nodes()[0]
    most = MAX_CHUNK
    if steps_per_read(stream) > 1:
        # A source whose every read costs a host callback (50-100 us) gains more
        # from fewer reads than it loses to extra output buffers.
        most = MAX_HOST_CHUNK
    chunk = 1 if stateful else max(1, min(most, CHUNK_BYTES // max(1, nbytes(shapes))))
    return build_chunk(spec, length=chunk)


class StreamIterator:
    """Serves a pipeline over a source of host batches.

    For an :class:`~datarax.core.IterableSource`, or a random-access source
    whose host work runs ahead on workers (``serves_host_batches``). Reads host
    batches from ``source.host_batches`` (opened at the pipeline's
    position, reopened whenever the position moved under it, e.g. after a
    restored checkpoint), then runs the stages in one cached compiled function
    per batch, with the same positions and keys as a random-access pipeline. A
    short last batch is padded to full size for the stages (one compiled shape)
    and cut after. With the pipeline's ``prefetch`` above 0 a background thread
    reads the host batches and puts them on the device that many batches ahead
    of the consumer (:class:`~datarax.core._prefetch.Ahead`).
    """

    def __init__(self, stream: Stream):
        self._stream = stream
        self._records: Generator[dict[str, np.ndarray]] | Ahead | None = None
        self._position = -1  # where self._records continues

    def __iter__(self) -> StreamIterator:
        return self

    def close(self) -> None:
        """Stops reading ahead and releases the source's reader."""
        if self._records is not None:
            self._records.close()
        self._records = None

    def __next__(self) -> Batch:
        stream = self._stream
        source: IterableSource = stream.source  # type: ignore[assignment]
        position = int(stream.position.get_raw_value())
        batch_size = stream.batch_size
        try:
            wanted = records_due(stream, position)
        except StopIteration:
            self.close()  # the stream ended: stop reading ahead
            raise
        if self._records is None or position != self._position:
            if self._records is not None:
                self._records.close()  # release the backend's reader now
            batches = _generator(_host_batches(stream, position))
            if stream.prefetch:
                batches = Ahead(batches, stream.prefetch)
            self._records = batches
        try:
            raw = next(self._records, None)
        except BaseException:
            self._records = None  # a failed read ends the generator: reopen next time
            raise
        count = 0 if raw is None else len(next(iter(raw.values())))
        if raw is None or count < wanted:
            raise RuntimeError(
                f"{type(source).__name__} served {count} records at stream position "
                f"{position} where {wanted} were due: the iterable holds fewer "
                f"records than the {len(source)} per epoch it declared."
            )
        if wanted < batch_size:  # the stream's last batch (on the host: rare)
            raw = {k: _pad(np.asarray(v)[:wanted], batch_size) for k, v in raw.items()}
        program = cached_program(
            stream, ("apply",), (stream,), None, lambda spec, g: build_apply(spec)
        )
        (batch,) = program(raw, np.asarray(position, np.int32))
        if wanted < batch_size:
            batch = _head(batch, wanted)
        write_position(stream, position + wanted)
        self._position = position + wanted
        return batch


def _host_batches(stream: Stream, position: int) -> Iterator[dict[str, np.ndarray]]:
    """The source's host batches from ``position``, with the keys they need."""
    seed = stream.key.get_raw_value()
    key = host_shuffle_key(seed, stream.shuffle)
    source = stream.source
    if isinstance(source, IterableSource):
        return source.host_batches(position, stream.batch_size, key)
    # A random-access source with host work (stages on workers) draws from the
    # operator key every compiled read of it gets from its record context.
    ops = fold_in_host(seed, OPERATOR_STREAM, stream.key_impl)
    return source.host_batches(position, stream.batch_size, key, ops)  # type: ignore[attr-defined]


def _generator(batches: Iterator) -> Generator:
    """``batches`` as a generator, so that it can be closed when dropped."""
    yield from batches


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` grown to ``size`` rows by repeating its last row."""
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), 0)])


def _head(batch: Batch, count: int) -> Batch:
    """The first ``count`` records of a full batch: the stream's short last batch."""
    # Never on several processes or devices: construction refused a stream
    # that would end on a batch they cannot split (check_sharding).
    return jax.tree.map(lambda x: x[:count], batch)
