"""Python iteration over a pipeline, several batches per compiled dispatch."""

from __future__ import annotations

import collections
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from datarax.core._compiled import (
    Program,
    build_apply,
    build_chunk,
    nbytes,
    probe_batch,
)
from datarax.core._source import Batch, fold_in_host

if TYPE_CHECKING:
    from datarax.core._pipeline import Pipeline

#: At most this many batches are computed per dispatch. Each batch is an output
#: buffer of the compiled chunk; on XLA:CPU the cost per output jumps past about 8
#: kernels (16 token batches took 9.6 us each to serve, 6 took 8.0 us).
MAX_CHUNK = 6
#: The same for sources that read through a host callback.
MAX_HOST_CHUNK = 16
#: ... and at most this many bytes of them are held at once.
CHUNK_BYTES = 32 * 2**20


class PipelineIterator:
    """Serves a pipeline's batches, computing up to ``MAX_CHUNK`` per dispatch.

    One ``jax.jit`` dispatch costs more than a whole batch of a small workload, so
    when building a batch changes no state (no RNG streams or counters in the
    stages, found by tracing one batch), the iterator computes a chunk of batches
    at once and hands them out one by one, advancing the pipeline's ``position``
    and ``epoch`` Variables per batch.

    Precomputed batches are only valid while nothing that builds them changes.
    Before serving each one the iterator checks that the position is the one it
    left, that every other carried Variable of the pipeline still holds (by
    identity) the value it held when the chunk was computed, and that the
    pipeline's structure is unchanged. Any write in between (an optimizer step on
    a stage's parameters, ``nnx.update``, a ``scan`` or ``step()``, a restored
    checkpoint) drops the chunk and recomputes from the new state. Stages with
    state of their own are computed one batch per dispatch, so that state is
    exact after every batch.
    """

    def __init__(self, pipe: Pipeline):
        self._pipe = pipe
        self._buffer: collections.deque = collections.deque()
        self._expected: list[tuple[Any, Any]] = []  # (Variable, value it held)
        self._position = -1  # where the buffered batches start
        self._program: Program | None = None

    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> Batch:
        pipe = self._pipe
        position = int(pipe.position.get_raw_value())  # host scalar: no device sync
        if self._buffer and (position != self._position or not self._still_valid()):
            self._buffer.clear()
        batch_size = pipe.batch_size
        served = _records_due(pipe, position)
        if not self._buffer:
            self._fill()
        batch = self._buffer.popleft()
        if served < batch_size:
            self._buffer.clear()
            batch = _head(batch, served)
        pipe._write_position(position + served)
        self._position = position + served
        return batch

    def _still_valid(self) -> bool:
        assert self._program is not None
        if not self._program.graph.matches((self._pipe,)):
            return False
        return all(v.get_raw_value() is e for v, e in self._expected)

    def _fill(self) -> None:
        pipe = self._pipe
        program, chunk = _chunk_program(pipe)
        self._program = program
        # Program.__call__ writes back what the stages changed (chunk of 1 then).
        (batches,) = program(pipe._host_plan(chunk * pipe.batch_size))
        self._buffer.extend(batches)
        self._expected = [
            (v, v.get_raw_value())
            for v in program.graph.carry_vars
            if v is not pipe.position and v is not pipe.epoch
        ]
        self._position = int(pipe.position.get_raw_value())


class StreamIterator:
    """Serves a pipeline over an iteration-only source (``random_access = False``).

    Reads host batches from ``source.host_batches`` (opened at the pipeline's
    position, reopened whenever the position moved under it, e.g. after a
    restored checkpoint), then runs the stages in one cached compiled function
    per batch, with the same positions and keys as a random-access pipeline. A
    short last batch is padded to full size for the stages (one compiled shape)
    and cut after.
    """

    def __init__(self, pipe: Pipeline):
        self._pipe = pipe
        self._records: Generator[dict[str, np.ndarray]] | None = None
        self._position = -1  # where self._records continues

    def __iter__(self) -> StreamIterator:
        return self

    def __next__(self) -> Batch:
        pipe = self._pipe
        position = int(pipe.position.get_raw_value())
        batch_size = pipe.batch_size
        wanted = _records_due(pipe, position)
        if self._records is None or position != self._position:
            if self._records is not None:
                self._records.close()  # release the backend's reader now
            key = fold_in_host(pipe.key.get_raw_value(), 0) if pipe.shuffle else None
            batches = pipe.source.host_batches(position, batch_size, key)
            self._records = _generator(batches)
        raw = next(self._records, None)
        if raw is None:  # the iterable ended early: len(source) was too large
            raise RuntimeError(
                f"{type(pipe.source).__name__} ended at stream position {position}, "
                f"before the {len(pipe.source)} records per epoch it declared."
            )
        count = len(next(iter(raw.values())))
        if count < wanted:
            raise RuntimeError(
                f"{type(pipe.source).__name__} served {count} records at stream "
                f"position {position} where {wanted} were due: the iterable holds "
                f"fewer records than the {len(pipe.source)} per epoch it declared."
            )
        raw = {k: _pad(np.asarray(v)[:wanted], batch_size) for k, v in raw.items()}
        program = pipe._program(
            ("apply",), (pipe,), None, lambda spec, c, g: build_apply(spec, c)
        )
        (batch,) = program(raw, np.asarray(position, np.int32))
        if wanted < batch_size:
            batch = _head(batch, wanted)
        pipe._write_position(position + wanted)
        self._position = position + wanted
        return batch


def _generator(batches: Iterator) -> Generator:
    """``batches`` as a generator, so that it can be closed when dropped."""
    yield from batches


def _records_due(pipe: Pipeline, position: int) -> int:
    """Records the next batch holds (``batch_size`` but at the stream's end).

    Raises StopIteration when ``num_epochs`` are served (or only a short batch
    is left and ``drop_last`` is set).
    """
    if pipe.num_epochs is None:
        return pipe.batch_size
    remaining = pipe.num_epochs * len(pipe.source) - position
    if remaining <= 0 or (pipe.drop_last and remaining < pipe.batch_size):
        raise StopIteration
    return min(pipe.batch_size, remaining)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` grown to ``size`` rows by repeating its last row."""
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), 0)])


def _chunk_program(pipe: Pipeline) -> tuple[Program, int]:
    """The cached chunk program of ``pipe`` and how many batches it computes."""

    def build(spec, compiled, graph):
        stateful, shapes = probe_batch(graph)
        batch_bytes = max(1, nbytes(shapes))
        most = MAX_CHUNK
        if pipe.source._steps_per_read(pipe.batch_size) > 1:
            # A source whose every read costs a host callback (50-100 us) gains
            # more from fewer reads than it loses to extra output buffers.
            most = MAX_HOST_CHUNK
        chunk = 1 if stateful else max(1, min(most, CHUNK_BYTES // batch_bytes))
        compiled.length = chunk
        return build_chunk(spec, compiled, length=chunk)

    program = pipe._program(("chunk",), (pipe,), None, build)
    return program, program.compiled.length


def _head(batch: Batch, count: int) -> Batch:
    """The first ``count`` records of a full batch: the stream's short last batch."""
    if jax.process_count() > 1:
        # TODO(multi-host issue): serve process i the records
        # [i*share + min(i, extra), ...) of the short batch; until then refuse.
        raise NotImplementedError(
            "a short final batch on several JAX processes is not supported yet; "
            "pass drop_last=True."
        )
    return jax.tree.map(lambda x: x[:count], batch)
