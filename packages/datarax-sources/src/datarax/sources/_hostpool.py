"""``HostWorkers``: the worker pool of a host-mapped source, reads in stream order.

A read asks for the records at some stream positions. The pool splits them into
tasks, runs the tasks on its workers (threads, or processes when asked), and puts
the results back in position order, so the output never depends on the worker
count or on which worker finished first. After a read of a window of consecutive
positions it starts the next ``prefetch`` windows of the same size: a
pipeline reads its stream in order, so the workers prepare the next batch (or
chunk) while the caller uses this one. A read that does not continue the
prepared windows cancels them; nothing prepared ever changes what a read returns
(a record's output depends on its position and the keys alone).
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import contextlib
import math
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datarax.core import at_exit
from datarax.sources._buffers import aligned_empty
from datarax.sources._hostwork import (
    FieldSpec,
    Task,
    TaskResult,
    init_process,
    run_in_process,
    run_task,
)
from datarax.sources._order import host_indices

#: The last stream position (int32 positions).
_LAST_POSITION = 2**31 - 1
#: Tasks per worker in one read: smaller tasks even out records of unequal cost.
TASKS_PER_WORKER = 2


class Read(list):
    """One read's tasks: futures, in position order.

    For worker threads, ``out`` holds the read's output arrays, each task filling
    its rows: no concatenation after, and aligned, so that on a CPU they become
    ``jax.Array`` s without a copy.
    """

    out: dict[str, np.ndarray] | None = None


@dataclass
class HostStats:
    """Where a host-mapped source's time went since it was made (or reset).

    Times in the stages are summed over workers (CPU-ish seconds); ``waited``
    is the time callers spent blocked on results, the part the workers did not
    hide. ``records_per_second`` is records served over the time since the
    first read.
    """

    records: int = 0
    read_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    waited: float = 0.0
    reads: int = 0
    prefetched_reads: int = 0  # reads whose work had started ahead of the call
    in_flight: int = 0  # records being prepared ahead right now
    records_per_second: float = 0.0

    def bottleneck(self) -> str:
        """The stage (or ``"read"``) that took the most time."""
        times = {"read": self.read_seconds, **self.stage_seconds}
        return max(times, key=times.__getitem__)


class HostWorkers:
    """A pool of host workers that runs a record source's host stages in order.

    Made lazily: no thread or process starts before the first read. Held by a
    :class:`~datarax.sources.HostMapSource` behind a plain attribute, so it never
    enters nnx state; it shuts its pool down when closed or collected.
    """

    def __init__(
        self,
        records: Any,
        stages: Sequence[Any],
        spec: Mapping[str, FieldSpec],
        *,
        workers: int,
        processes: bool,
        prefetch: int,
    ):
        self.records, self.stages, self.spec = records, tuple(stages), dict(spec)
        self.length = len(records)
        self.workers, self.processes, self.prefetch = workers, processes, prefetch
        # Not reentrant: a finalizer run by the garbage collector inside a read
        # of the same thread must not get in (see close_with).
        self._lock = threading.Lock()
        self._closing = [False]  # every owner is gone: stop the pool when idle
        self._owners: weakref.WeakSet = weakref.WeakSet()
        self._exiting = False  # the interpreter is exiting: start no pool
        _LIVE.add(self)
        self._pool: list[futures.Executor] = []  # shared with the finalizer
        self._pending: collections.OrderedDict[tuple, Read] = collections.OrderedDict()
        self._stats = HostStats(stage_seconds={s.name: 0.0 for s in self.stages})
        self._first_read: float | None = None

    def close_with(self, owner: object) -> None:
        """Shuts the pool down when ``owner``, and every other owner, is collected.

        Tied to the source modules that read through this object, not to the
        object itself: compiled programs cached across pipelines keep their
        graphs' static attributes (this object among them) alive after the
        pipeline is gone. Copies of a source (``nnx.clone``) share this object
        and become owners when they iterate. A compiled run dispatched before
        the last owner went may still be reading: the pool then stops when that
        read ends, and a later read starts (and stops) its own.
        """
        if owner in self._owners:
            return
        self._owners.add(owner)
        self._closing[0] = False
        weakref.finalize(
            owner, _close_when_idle, self._lock, self._pool, self._closing, self._owners
        )

    # -- reads -------------------------------------------------------------------

    def window(
        self,
        start: int,
        count: int,
        shuffle: np.ndarray | None,
        seed: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        """The host stages' output for stream positions ``start .. start+count-1``.

        Starts the next ``prefetch`` windows of ``count`` positions before
        waiting for this one.
        """
        key = _window_key(start, count, shuffle, seed)
        with self._lock, self._reporting_death():
            jobs = self._pending.pop(key, None)
            prefetched = jobs is not None
            if jobs is None:
                self._cancel_pending()
                jobs = self._submit(np.arange(start, start + count), shuffle, seed)
            else:
                # Windows before this one will never be asked for again.
                while self._pending and next(iter(self._pending))[0] < start:
                    self._cancel(self._pending.popitem(last=False)[1])
            for ahead in range(1, 0 if self._closing[0] else self.prefetch + 1):
                first = start + ahead * count
                ahead_key = _window_key(first, count, shuffle, seed)
                if first + count - 1 > _LAST_POSITION or ahead_key in self._pending:
                    continue
                positions = np.arange(first, first + count)
                self._pending[ahead_key] = self._submit(positions, shuffle, seed)
            out = self._collect(jobs, count, prefetched)
        self._stop_if_closing()
        return out

    def at(
        self, positions: np.ndarray, shuffle: np.ndarray | None, seed: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """The host stages' output for arbitrary stream ``positions`` (no prefetch)."""
        with self._lock, self._reporting_death():
            jobs = self._submit(np.asarray(positions, np.int64), shuffle, seed)
            out = self._collect(jobs, len(positions), False)
        self._stop_if_closing()
        return out

    def _stop_if_closing(self) -> None:
        """Stops the pool after a read if the last owner went during it.

        Called with the lock released: the finalizer's own attempt found it
        taken.
        """
        if self._closing[0] and self._lock.acquire(blocking=False):
            try:
                self._cancel_pending()
                _shutdown(self._pool, wait=False)
            finally:
                self._lock.release()

    def indices(self, positions: np.ndarray, shuffle: np.ndarray | None) -> np.ndarray:
        """Record index at each stream position (natural order, or shuffled)."""
        return host_indices(positions, self.length, shuffle)

    # -- the pool ------------------------------------------------------------------

    def _executor(self) -> futures.Executor:
        if self._exiting:
            raise RuntimeError(
                "HostMapSource: the interpreter is exiting; no new host workers "
                "are started."
            )
        if not self._pool:
            if self.processes:
                # spawn: a forked child of a process running JAX's threads can
                # deadlock, and JAX warns on fork.
                pool: futures.Executor = futures.ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=init_process,
                    initargs=(self.records, self.stages, self.spec),
                )
            else:
                pool = futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="datarax-host"
                )
            self._pool.append(pool)
        return self._pool[0]

    def _submit(
        self, positions: np.ndarray, shuffle: np.ndarray | None, seed: np.ndarray | None
    ) -> Read:
        pool = self._executor()
        indices = self.indices(positions, shuffle)
        size = max(1, math.ceil(len(positions) / (self.workers * TASKS_PER_WORKER)))
        jobs = Read()
        if not self.processes:  # threads stack their rows into the read's arrays
            jobs.out = self._arrays(len(positions))
        for low in range(0, len(positions), size):
            rows = slice(low, low + size)
            task = Task(positions[rows], indices[rows], self.length, seed)
            if jobs.out is None:
                jobs.append(pool.submit(run_in_process, task))
            else:
                out = {name: array[rows] for name, array in jobs.out.items()}
                jobs.append(
                    pool.submit(
                        run_task, self.records, self.stages, self.spec, task, out
                    )
                )
        return jobs

    def _collect(
        self, jobs: Read, count: int, prefetched: bool
    ) -> dict[str, np.ndarray]:
        tick = time.perf_counter()
        if self._first_read is None:
            self._first_read = tick
        try:
            results: list[TaskResult] = [job.result() for job in jobs]
        except BaseException:
            self._cancel(jobs)
            self._cancel_pending()
            raise
        stats = self._stats
        stats.waited += time.perf_counter() - tick
        stats.reads += 1
        stats.prefetched_reads += prefetched
        stats.records += count
        for result in results:
            stats.read_seconds += result.seconds[0]
            for stage, seconds in zip(self.stages, result.seconds[1:], strict=True):
                stats.stage_seconds[stage.name] += seconds
        if jobs.out is not None:
            return jobs.out
        out = self._arrays(count)
        if results:
            for name, array in out.items():
                np.concatenate([r.fields[name] for r in results], out=array)
        return out

    def _arrays(self, count: int) -> dict[str, np.ndarray]:
        """Uninitialised output arrays of ``count`` records, 64-byte aligned.

        On a CPU a read's batch then becomes a ``jax.Array`` without a copy.
        """
        return {
            name: aligned_empty((count, *field.shape), field.dtype)
            for name, field in self.spec.items()
        }

    def _cancel(self, jobs: list[futures.Future]) -> None:
        for job in jobs:
            job.cancel()

    def _cancel_pending(self) -> None:
        while self._pending:
            self._cancel(self._pending.popitem()[1])

    def cancel_prefetch(self) -> None:
        """Drops the work started ahead (a reader stopped reading)."""
        with self._lock:
            self._cancel_pending()

    @contextlib.contextmanager
    def _reporting_death(self) -> Iterator[None]:
        """Turns a dead worker process into an error that says what happened."""
        try:
            yield
        except BrokenProcessPool as err:
            self._cancel_pending()
            _shutdown(self._pool)
            raise RuntimeError(
                "a host worker process died (killed, or exited without raising: "
                "os._exit, a crash in native code, out of memory) while running "
                f"the host stages {[s.name for s in self.stages]}. Nothing was "
                "served from the failed read, so no record is lost or repeated; "
                "the next read starts new workers. The system log says which "
                "signal ended it (dmesg, for the OOM killer)."
            ) from err

    # -- visibility and shutdown -------------------------------------------------

    def stats(self) -> HostStats:
        """A copy of the counters, with the current rate."""
        with self._lock:
            now = time.perf_counter()
            stats = HostStats(**{**self._stats.__dict__})
            stats.stage_seconds = dict(self._stats.stage_seconds)
            stats.in_flight = sum(key[1] for key in self._pending)
            if self._first_read is not None and now > self._first_read:
                stats.records_per_second = stats.records / (now - self._first_read)
            return stats

    def close(self) -> None:
        """Cancels prepared work and stops the workers (a new read restarts them)."""
        with self._lock:
            self._cancel_pending()
            _shutdown(self._pool)

    def __deepcopy__(self, memo: dict) -> HostWorkers:
        # A copied pipeline gets its own (not yet started) pool.
        return HostWorkers(
            self.records,
            self.stages,
            self.spec,
            workers=self.workers,
            processes=self.processes,
            prefetch=self.prefetch,
        )

    def __getstate__(self) -> dict:
        raise TypeError("HostWorkers holds a worker pool and cannot be pickled.")


def default_workers() -> int:
    """Workers when not given: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


#: Every pool's owner, stopped at interpreter exit before concurrent.futures
#: joins its own threads (a pool started after that hangs the exit).
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _close_all() -> None:
    for workers in list(_LIVE):
        workers._exiting = True
        workers.close()


def _close_when_idle(
    lock: threading.Lock,
    pool: list[futures.Executor],
    closing: list[bool],
    owners: weakref.WeakSet,
) -> None:
    """An owner's finalizer: the last one stops the pool.

    Now, or after the read in progress, which looks again once it releases
    the lock.
    """
    # Iterating yields live owners only; the dying one's entry may still count
    # in len() until its own weakref callback runs.
    if next(iter(owners), None) is not None:
        return
    closing[0] = True
    if lock.acquire(blocking=False):
        try:
            _shutdown(pool, wait=False)
        finally:
            lock.release()


def _shutdown(pool: list[futures.Executor], *, wait: bool = True) -> None:
    """Stops the pool's workers; ``wait=False`` from finalizers and inside reads.

    A finalizer may run in any thread, at any time, interpreter exit included,
    where waiting for worker processes from a collected pipeline's thread while
    ``concurrent.futures`` joins its own threads hung the process; the
    executor's manager thread ends the workers without anyone waiting.
    """
    while pool:
        pool.pop().shutdown(wait=wait, cancel_futures=True)


def _window_key(start: int, count: int, shuffle: Any, seed: Any) -> tuple:
    return (
        int(start),
        int(count),
        None if shuffle is None else np.asarray(shuffle).tobytes(),
        None if seed is None else np.asarray(seed).tobytes(),
    )


at_exit(_close_all)
