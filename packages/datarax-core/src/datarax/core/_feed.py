"""The feed: a pipeline's stream state and the assembly of its batches.

Everything between a pipeline's position and a finished batch lives here: the
window of records a run reads (start position, run keys, the source's plan), the
read of one batch or of several at once, the stages run with each record's
stream position published for stochastic operators, and the host-side
bookkeeping of position and epoch. Compiled programs and iterators call these
functions; the module knows a pipeline only through the :class:`Stream`
protocol, so it imports nothing above it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend.core import get_opaque_trace_state
from jax.sharding import NamedSharding

from datarax.core._keys import RunKeys, host_shuffle_key, run_keys
from datarax.core._records import RecordContext, batch_positions, record_context
from datarax.core._sharding import constrain, read_on_devices
from datarax.core._source import (
    MAX_POSITION,
    Batch,
    DataSource,
    SourceBase,
    checked_read,
)
from datarax.core._stages import checked_output


class Stream(Protocol):
    """What the feed needs of a pipeline."""

    source: SourceBase
    batch_size: int
    shuffle: bool
    num_epochs: int | None
    drop_last: bool
    key: nnx.Variable  # raw key data of the seed
    key_impl: str  # the seed's PRNG implementation (operator keys are of it)
    sharding: NamedSharding | None  # of every batch's leading axis
    prefetch: int  # host batches iteration reads ahead (0: none)
    position: nnx.Variable  # int32 scalar: records served
    epoch: nnx.Variable  # int32 scalar: position // len(source)

    def __call__(self, batch: Batch) -> Batch:
        """Runs the stages on one batch of records."""
        ...

    def operator_identities(self) -> dict[int, tuple]:
        """``id(operator)`` -> identity, for the stochastic operators."""
        ...


class Window(NamedTuple):
    """The records one compiled run reads: where it starts, its keys, its plan."""

    start: jax.Array  # int32 stream position of the run's first record
    keys: RunKeys
    plan: Any  # the source's plan for the run's records


def is_traced(stream: Stream) -> bool:
    """Whether the pipeline's state is being traced (inside the user's jit)."""
    return isinstance(stream.position.get_raw_value(), jax.core.Tracer)


# The trace state outside any jit, vmap or grad, taken when datarax is imported.
_TOP_LEVEL = get_opaque_trace_state(convention="flax")


def check_not_closed_over(what: str, stream: Stream) -> None:
    """Refuses to serve a host-held pipeline from inside someone else's trace.

    A function compiled by ``jax.jit`` / ``nnx.jit`` that closes over a pipeline
    (instead of taking it as an argument) would bake the batch in as a constant:
    every call would train on the same batch while the position stays put. A
    pipeline passed to ``nnx.grad`` alone keeps its position on the host but
    holds traced parameters: it is served, and advances once per call. Costs
    about a microsecond outside any trace.
    """
    if get_opaque_trace_state(convention="flax") != _TOP_LEVEL and (
        _staging()
        or not any(
            isinstance(node.get_raw_value(), jax.core.Tracer)
            for _, node in nnx.iter_graph(stream)
            if isinstance(node, nnx.Variable)
        )
    ):
        raise TypeError(
            f"{what} was called inside a traced function (jit, vmap, grad, ...) "
            "that does not take the pipeline as an argument: it would serve the "
            "same batch on every call and never move on. Pass the pipeline in, "
            "e.g. @nnx.jit def train_step(model, pipe): batch = pipe.step(); or "
            "call it outside and pass the batch."
        )


def _staging() -> bool:
    """Whether a trace that stages out a program (jit, scan, cond...) is active.

    Autodiff and batching traces hand operations on constants to the trace
    below them; only a staging trace turns them into tracers. A pipeline closed
    over by ``jax.jit(lambda: nnx.grad(f)(pipe))`` holds traced parameters but
    a constant position, so this tells it from ``nnx.grad`` alone.
    """
    return isinstance(jax.lax.add(np.int32(0), np.int32(0)), jax.core.Tracer)


def open_window(stream: Stream, num_records: int, host_plan: Any = None) -> Window:
    """The window of the next ``num_records`` records (traced, once per run)."""
    source: DataSource = stream.source  # type: ignore[assignment]
    start = jnp.asarray(stream.position[...], jnp.int32)
    keys = run_keys(stream.key[...], stream.shuffle, stream.key_impl)
    plan = source.plan(start, num_records, keys.shuffle, host_plan)
    return Window(start, keys, plan)


def host_plan(stream: Stream, num_records: int) -> Any:
    """The source's host-made plan for the next ``num_records`` records.

    ``None`` inside a trace (``scan`` within the user's own jit): the source then
    plans inside the compiled run.
    """
    if is_traced(stream):
        return None
    source: DataSource = stream.source  # type: ignore[assignment]
    key_data = host_shuffle_key(stream.key.get_raw_value(), stream.shuffle)
    return source.host_plan(int(stream.position.get_raw_value()), num_records, key_data)


def _local_size(stream: Stream) -> tuple[int, int]:
    """This process's share of a global batch and where it starts in the batch.

    With a ``sharding`` the program computes the global batch (a global
    ``jax.Array`` on every process) and XLA has each device compute its slice.
    """
    if stream.sharding is not None:
        return stream.batch_size, 0
    local = stream.batch_size // jax.process_count()
    return local, jax.process_index() * local


def read_records(stream: Stream, window: Window, start: Any, count: int) -> Batch:
    """``count`` records from stream position ``start``, checked against the spec.

    Checked at trace time (shapes and dtypes are static): a source whose reads
    contradict its ``element_spec`` is named here, not blamed on a stage later.
    """
    source: DataSource = stream.source  # type: ignore[assignment]
    with _reading(stream, window, start, count):
        raw = source.read(window.plan, start, count, window.keys.shuffle)
    return checked_read(source, raw, count)


def _reading(stream: Stream, window: Window, start: Any, count: int) -> Any:
    """The record context of a read: sources with host stages draw from its key."""
    context = RecordContext(
        positions=batch_positions(start, count),
        source_length=len(stream.source),
        op_key=window.keys.ops,
        identities={},
    )
    return record_context(context)


def read_chunk(stream: Stream, window: Window, start: Any, batches: int) -> Batch:
    """``batches`` batches of records from ``start``: ``[batches, batch_size, ...]``.

    Under a ``sharding``, a source that reads on the host is read on each
    device for its own slice (see ``read_on_devices``).
    """
    size = stream.batch_size
    if _read_per_device(stream):
        source: DataSource = stream.source  # type: ignore[assignment]
        sharding: NamedSharding = stream.sharding  # type: ignore[assignment]
        with _reading(stream, window, start, batches * size):
            return read_on_devices(
                source, window.plan, window.keys.shuffle, sharding, start, batches, size
            )
    raw = read_records(stream, window, start, batches * size)
    return {k: v.reshape(batches, size, *v.shape[1:]) for k, v in raw.items()}


def _read_per_device(stream: Stream) -> bool:
    """Whether each device reads its own slice (a host source under a sharding)."""
    return stream.sharding is not None and stream.source.reads_on_host


def read_batch(stream: Stream, window: Window, start: jax.Array) -> Batch:
    """This process's slice of the batch at stream position ``start``, staged."""
    local, low = _local_size(stream)
    if _read_per_device(stream):
        raw = {k: v[0] for k, v in read_chunk(stream, window, start, 1).items()}
    else:
        raw = read_records(stream, window, start + low, local)
    return _run_stages(stream, raw, start + low, local, window.keys)


def read_batches(stream: Stream, window: Window, count: int) -> list[Batch]:
    """The ``count`` batches from the window's start.

    Read batch by batch, so that each batch's read fuses into its stages: one
    read of the whole chunk, sliced statically, is first written out in full
    (XLA:CPU, chunks of 6, per batch: TAB-1 47 against 15 us, CV-1 88 against
    60, PC-2 76 against 48). A source whose reads cost a host callback
    (``steps_per_read`` above 1) is read once for the chunk.
    """
    size = stream.batch_size
    source: DataSource = stream.source  # type: ignore[assignment]
    if source.steps_per_read(size) == 1:
        return [
            read_batch(stream, window, window.start + k * size) for k in range(count)
        ]
    raw = read_chunk(stream, window, window.start, count)
    return [
        stage_records(
            stream,
            {name: x[k] for name, x in raw.items()},
            window.start + k * size,
            window.keys,
        )
        for k in range(count)
    ]


def stage_records(stream: Stream, raw: Batch, start: jax.Array, keys: RunKeys) -> Batch:
    """Runs the stages on this process's slice of a global batch of records."""
    local, low = _local_size(stream)
    part = {name: x[low : low + local] for name, x in raw.items()}
    return _run_stages(stream, part, start + low, local, keys)


def _run_stages(
    stream: Stream, raw: Batch, start: jax.Array, count: int, keys: RunKeys
) -> Batch:
    """Runs the stages on records read from stream positions ``start...``."""
    context = RecordContext(
        positions=batch_positions(start, count),
        source_length=len(stream.source),
        op_key=keys.ops,
        identities=stream.operator_identities(),
    )
    with record_context(context):
        batch = checked_output(stream(raw), type(stream).__name__, count)
    return constrain(batch, stream.sharding)


def traced_step(stream: Stream) -> Batch:
    """The next full batch inside the caller's trace; the position moves on."""
    window = open_window(stream, stream.batch_size)
    batch = read_batch(stream, window, window.start)
    set_traced_position(stream, window.start + stream.batch_size)
    return batch


def set_traced_position(stream: Stream, position: jax.Array) -> None:
    """Sets position and epoch inside a trace."""
    stream.position.set_value(position)
    stream.epoch.set_value(position // len(stream.source))


def advance(stream: Stream, count: int) -> None:
    """Moves the stream position forward by ``count`` records (host or trace)."""
    raw = stream.position.get_raw_value()
    if isinstance(raw, jax.core.Tracer):  # scan() inside the user's own jit
        set_traced_position(stream, raw + count)
    else:
        write_position(stream, int(raw) + count)


def check_room(stream: Stream, count: int) -> None:
    """Refuses, before any work, a run that would pass the int32 positions.

    Inside a compiled run the positions would wrap to negative ones and serve
    the wrong records before the host could notice.
    """
    raw = stream.position.get_raw_value()
    if not isinstance(raw, jax.core.Tracer) and int(raw) + count > MAX_POSITION:
        raise OverflowError(_past_the_end(int(raw) + count))


def _past_the_end(position: int) -> str:
    return (
        f"stream position {position} passed 2**31 - 1 records; build a new "
        "pipeline (the record stream of epoch e is the same in any pipeline of "
        "the same construction)."
    )


def write_position(stream: Stream, position: int) -> None:
    """Sets position and epoch from the host, outside any trace.

    Host NumPy scalars: the host advances them without a device round trip. The
    position is written once per served batch (public ``set_raw_value``), the epoch
    only when it changes.

    Raises:
        OverflowError: past 2**31 - 1 records (int32 positions).
    """
    if position > MAX_POSITION:
        raise OverflowError(_past_the_end(position))
    stream.position.set_raw_value(np.asarray(position, np.int32))
    epoch = position // len(stream.source)
    held = stream.epoch.get_raw_value()
    # A device value (left by the user's own jit) is replaced, not read back.
    if not isinstance(held, np.ndarray) or int(held) != epoch:
        stream.epoch.set_raw_value(np.asarray(epoch, np.int32))


def records_due(stream: Stream, position: int) -> int:
    """Records the next iterated batch holds (``batch_size`` but at the end).

    Raises:
        StopIteration: when ``num_epochs`` are served (or only a short batch is
            left and ``drop_last`` is set).
    """
    if stream.num_epochs is None:
        return stream.batch_size
    remaining = stream.num_epochs * len(stream.source) - position
    if remaining <= 0 or (stream.drop_last and remaining < stream.batch_size):
        raise StopIteration
    return min(stream.batch_size, remaining)
