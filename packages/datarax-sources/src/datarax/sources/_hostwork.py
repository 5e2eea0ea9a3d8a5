"""What one host worker does: read records, run the host stages, stack the result.

Runs in a worker thread or a worker process. Everything here is plain Python and
NumPy; a process worker receives the record source, the stages and the expected
output once (:func:`init_process`) and then only positions per task.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datarax.core import convert_for_jax


class HostStageError(Exception):
    """A host stage (or the read of a record) failed on one record.

    The message names the stage, the record's stream position and index, and
    holds the original traceback (from a worker process too, where the
    original exception object cannot travel); ``__cause__`` is the original
    exception when the worker was a thread.

    Attributes:
        position: the record's stream position.
        stage: the stage's name (``"read"`` for the record source's read).
        index: the record's index in the source.
    """

    def __init__(self, message: str, position: int, stage: str, index: int):
        super().__init__(message)
        self.position, self.stage, self.index = position, stage, index

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.position, self.stage, self.index))


@dataclass(frozen=True)
class FieldSpec:
    """Shape and dtype (as JAX holds it) of one output field of the host stages."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class Task:
    """The records of one task: stream positions and their record indices."""

    positions: np.ndarray  # int64
    indices: np.ndarray  # int64
    length: int  # records per epoch
    seed: np.ndarray | None  # uint32 words of the operators' key; None: no draws


@dataclass
class TaskResult:
    """A task's stacked fields and where its time went."""

    fields: dict[str, np.ndarray]
    seconds: list[float]  # reading, then each stage in order


def stage_rng(
    seed: np.ndarray, stage: int, position: int, length: int
) -> np.random.Generator:
    """The generator of host stage ``stage`` for the record at ``position``."""
    epoch, offset = divmod(int(position), length)
    sequence = np.random.SeedSequence(
        entropy=[int(w) for w in seed], spawn_key=(stage_hash(stage), epoch, offset)
    )
    return np.random.default_rng(sequence)


def stage_hash(stage: int) -> int:
    """A 31-bit tag of host stage ``stage``, apart from every device identity."""
    return zlib.crc32(repr(("host", stage)).encode()) & 0x7FFFFFFF


def run_task(
    records: Any,
    stages: Sequence[Any],
    spec: Mapping[str, FieldSpec] | None,
    task: Task,
    out: Mapping[str, np.ndarray] | None = None,
) -> TaskResult:
    """Reads the task's records, runs every stage on each, stacks the outputs.

    With ``spec`` ``None`` (the probe) the outputs are stacked as they come.
    With ``out`` (field -> this task's rows of the whole read's arrays: worker
    threads) they are stacked into it, and the result's fields are ``out``.

    Raises:
        HostStageError: naming the stage, position and index of the first record
            that failed, with the original traceback in the message.
    """
    seconds = [0.0] * (len(stages) + 1)
    tick = time.perf_counter()
    try:
        rows = records.read_records(task.indices)
    except Exception as err:
        position, index = int(task.positions[0]), int(task.indices[0])
        raise _failed(stage="read", position=position, index=index, err=err) from err
    seconds[0] = time.perf_counter() - tick
    if len(rows) != len(task.indices):
        position, index = int(task.positions[0]), int(task.indices[0])
        raise HostStageError(
            f"{type(records).__name__}.read_records returned {len(rows)} records "
            f"for the {len(task.indices)} indices it was asked for (from stream "
            f"position {position}, record {index}); return one record per index, "
            "in the order asked.",
            position,
            "read",
            index,
        )
    outputs = []
    for position, index, record in zip(task.positions, task.indices, rows, strict=True):
        for number, stage in enumerate(stages):
            tick = time.perf_counter()
            rng = None
            if stage.stochastic:
                assert task.seed is not None
                rng = stage_rng(task.seed, number, int(position), task.length)
            try:
                record = stage(record, rng)
            except Exception as err:
                raise _failed(
                    stage=stage.name, position=int(position), index=int(index), err=err
                ) from err
            if not isinstance(record, Mapping):
                raise HostStageError(
                    f"host stage {stage.name!r} returned a {type(record).__name__} "
                    f"for the record at stream position {int(position)} (record "
                    f"{int(index)}); a host stage returns a dict of field -> value.",
                    int(position),
                    stage.name,
                    int(index),
                )
            seconds[number + 1] += time.perf_counter() - tick
        outputs.append(record)
    last = stages[-1].name if stages else "read"
    return TaskResult(_stacked(outputs, spec, last, task, out), seconds)


def _failed(
    stage: str, position: int, index: int, err: BaseException
) -> HostStageError:
    trace = "".join(traceback.format_exception(err)).rstrip()
    return HostStageError(
        f"host stage {stage!r} failed on the record at stream position {position} "
        f"(record {index}): {type(err).__name__}: {err}\n\nOriginal traceback:\n"
        f"{trace}",
        position,
        stage,
        index,
    )


def _stacked(
    outputs: list[Mapping[str, Any]],
    spec: Mapping[str, FieldSpec] | None,
    last: str,
    task: Task,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The records' fields stacked (into ``out`` if given), checked against ``spec``."""
    names = list(outputs[0]) if spec is None else list(spec)
    fields = {}
    for name in names:
        column = []
        for position, index, record in zip(
            task.positions, task.indices, outputs, strict=True
        ):
            value = _array(record, name, last, int(position), int(index))
            if spec is not None and value.shape != spec[name].shape:
                raise HostStageError(
                    f"the host stages end in field {name!r} of shape {value.shape} "
                    f"for the record at stream position {int(position)} (record "
                    f"{int(index)}), but of shape {spec[name].shape} for the first "
                    f"record: the last host stage ({last!r}) must return the same "
                    "shape for every record (crop, pad or resize to a fixed size).",
                    int(position),
                    last,
                    int(index),
                )
            column.append(value)
        target = None if out is None else out[name]
        if target is not None and all(v.dtype == target.dtype for v in column):
            fields[name] = np.stack(column, out=target)  # nothing to check or cast
            continue
        stacked = np.stack(column)
        if spec is not None:
            stacked = convert_for_jax(
                stacked,
                spec[name].dtype,
                owner=f"host stage {last!r}",
                field=name,
                records=task.indices,
            )
        if target is not None:
            target[...] = stacked
            stacked = target
        fields[name] = stacked
    return fields


def _array(record: Mapping[str, Any], name: str, last: str, position: int, index: int):
    """One field of one record as a numeric NumPy array, or an error naming it."""
    if name not in record:
        raise HostStageError(
            f"the last host stage ({last!r}) returned no field {name!r} for the "
            f"record at stream position {position} (record {index}); it returned "
            f"{sorted(record)}. Return the same fields for every record.",
            position,
            last,
            index,
        )
    value = np.asarray(record[name])
    if value.dtype.kind not in "biufc":
        raise HostStageError(
            f"the last host stage ({last!r}) returned field {name!r} as "
            f"{type(record[name]).__name__} (NumPy dtype {value.dtype}) for the "
            f"record at stream position {position} (record {index}); the host "
            "stages must end in numeric arrays of a fixed shape. Decode or "
            "tokenize it in a host stage, or drop the field.",
            position,
            last,
            index,
        )
    return value


# -- process workers ---------------------------------------------------------------

_WORKER: tuple[Any, Sequence[Any], Mapping[str, FieldSpec]] | None = None


def init_process(
    records: Any, stages: Sequence[Any], spec: Mapping[str, FieldSpec]
) -> None:
    """Receives what every task of this worker process needs, once.

    A terminal's Ctrl-C reaches the whole process group: the main process gets
    its KeyboardInterrupt and stops the workers, so a worker lets SIGINT pass (a
    worker interrupted mid-task would only print a second traceback). A handler
    that does nothing, not SIG_IGN, which programs a stage starts would inherit.
    And a worker ends when the main process does, however it ended: killed, or
    by a signal that skipped its clean-up.
    """
    global _WORKER
    signal.signal(signal.SIGINT, _let_pass)
    parent = multiprocessing.parent_process()
    if parent is not None:
        watch = threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="datarax-parent"
        )
        watch.daemon = True
        watch.start()
    _WORKER = (records, stages, spec)


def _let_pass(signum: int, frame: Any) -> None:
    """SIGINT in a worker process: the main process handles it."""


def _exit_with(parent_sentinel: int) -> None:
    """Ends this worker process once the main process has ended."""
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


def run_in_process(task: Task) -> TaskResult:
    """:func:`run_task` with the source, stages and spec :func:`init_process` kept."""
    assert _WORKER is not None, "init_process did not run in this worker"
    return run_task(*_WORKER, task)
