"""Python iteration over a pipeline, several batches per compiled dispatch."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax.core._compiled import Program, build_chunk, probe_batch
from datarax.core._source import Batch

if TYPE_CHECKING:
    from datarax.core._pipeline import Pipeline

#: At most this many batches are computed per dispatch ...
MAX_CHUNK = 16
#: ... and at most this many bytes of them are held at once.
CHUNK_BYTES = 32 * 2**20


class PipelineIterator:
    """Serves a pipeline's batches, computing up to ``MAX_CHUNK`` per dispatch.

    One ``jax.jit`` dispatch costs more than a whole batch of a small workload, so
    when building a batch changes no state but the position (no RNG streams or
    counters in the stages, found by tracing one batch), the iterator computes a
    chunk of batches at once and hands them out one by one, advancing the
    pipeline's ``position`` and ``epoch`` Variables per batch.

    Precomputed batches are only valid while nothing that builds them changes.
    Before serving each one the iterator checks, by identity, that every carried
    Variable of the pipeline still holds the value it held when the chunk was
    computed (and position/epoch the values the iterator wrote), and that the
    pipeline's structure is unchanged. Any write in between (an optimizer step on
    a stage's parameters, ``nnx.update``, a ``scan`` or ``step()``, a restored
    checkpoint) drops the chunk and recomputes from the new state. Stages with
    state of their own are computed one batch per dispatch, so that state is
    exact after every batch.
    """

    def __init__(self, pipe: Pipeline):
        self._pipe = pipe
        self._buffer: collections.deque = collections.deque()
        self._expected: list[Any] = []
        self._host_position = 0
        self._position_value: Any = None
        self._program: Program | None = None
        self._indices: tuple[int, int] = (0, 0)

    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> Batch:
        pipe = self._pipe
        raw = pipe.position.get_raw_value()
        if raw is not self._position_value:
            # Someone else moved the stream (scan, step, restore): read it once.
            self._host_position = int(raw)
            self._position_value = raw
            self._buffer.clear()
        elif self._buffer and not self._still_valid():
            self._buffer.clear()

        length = len(pipe.source)
        remaining = None
        if pipe.num_epochs is not None:
            remaining = pipe.num_epochs * length - self._host_position
            if remaining <= 0 or (pipe.drop_last and remaining < pipe.batch_size):
                raise StopIteration
        if not self._buffer:
            self._fill()
        batch, position, epoch, values = self._buffer.popleft()

        if remaining is not None and remaining < pipe.batch_size:
            self._buffer.clear()
            batch = _local_head(batch, remaining, pipe.batch_size)
            position_now = self._host_position + remaining
            position = jnp.int32(position_now)
            epoch = jnp.int32(position_now // length)
        else:
            position_now = self._host_position + pipe.batch_size

        assert self._program is not None
        graph = self._program.graph
        if values is not None:
            graph.write(values)
        position_index, epoch_index = self._indices
        graph.carry_vars[position_index].set_raw_value(position)
        graph.carry_vars[epoch_index].set_raw_value(epoch)
        self._host_position = position_now
        self._position_value = position
        if self._buffer:
            self._expected = [v.get_raw_value() for v in graph.carry_vars]
        return batch

    def _still_valid(self) -> bool:
        assert self._program is not None
        graph = self._program.graph
        if not graph.matches((self._pipe,)):
            return False
        return all(
            v.get_raw_value() is e for v, e in zip(graph.carry_vars, self._expected)
        )

    def _fill(self) -> None:
        pipe = self._pipe
        program, chunk = _chunk_program(pipe)
        self._program = program
        graph = program.graph
        self._indices = (
            next(i for i, v in enumerate(graph.carry_vars) if v is pipe.position),
            next(i for i, v in enumerate(graph.carry_vars) if v is pipe.epoch),
        )
        values, batches, positions, epochs = program.fn(*graph.read())
        if chunk == 1:
            # Stages with state: write everything after the one batch.
            self._buffer.append((batches[0], positions[0], epochs[0], values))
        else:
            self._buffer.extend(
                (b, p, e, None) for b, p, e in zip(batches, positions, epochs)
            )
        self._expected = [v.get_raw_value() for v in graph.carry_vars]


def _chunk_program(pipe: Pipeline) -> tuple[Program, int]:
    """The cached chunk program of ``pipe`` and its chunk length."""
    from datarax.core._pipeline import default_unroll  # iterator <-> pipeline

    def build(graph):
        stateful, spec = probe_batch(graph)
        batch_bytes = sum(
            int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
            for s in jax.tree.leaves(spec)
        )
        chunk = 1 if stateful else max(1, min(MAX_CHUNK, CHUNK_BYTES // batch_bytes))
        fn = build_chunk(graph, length=chunk, unroll=min(chunk, default_unroll()))
        return _Chunked(fn, chunk)

    program = pipe._program(("chunk",), (pipe,), None, build)
    return program, program.fn.chunk


class _Chunked:
    """A compiled chunk function and how many batches it computes."""

    def __init__(self, fn: Any, chunk: int):
        self.fn = fn
        self.chunk = chunk

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _local_head(batch: Batch, count: int, batch_size: int) -> Batch:
    """The first ``count`` records of a full batch: the stream's short last batch."""
    if jax.process_count() > 1:
        # TODO(multi-host issue): serve process i the records
        # [i*share + min(i, extra), ...) of the short batch; until then refuse.
        raise NotImplementedError(
            "a short final batch on several JAX processes is not supported yet; "
            "pass drop_last=True."
        )
    del batch_size
    return jax.tree.map(lambda x: x[:count], batch)
