"""``Ahead``: host batches read and put on the device by a background thread."""

from __future__ import annotations

import atexit
import collections
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import jax

from datarax.core._compiled import nbytes

#: Seconds a blocked hand-off waits before it looks whether it was stopped.
_POLL = 0.1
#: Batches read in the consumer's thread first, timed, to choose how to go on.
PROBE = 3
#: A thread pays when a batch takes this long to read (seconds) or holds this
#: many bytes (its device copy then overlaps the step). Below both, a hand-off
#: between threads costs more than it hides: on a busy 2-core CPU the two
#: threads contend for the GIL, and 32 rows of 128 tokens took 145-165 us per
#: batch through a thread against 75-90 us read in the consumer's thread.
SLOW_READ = 200e-6
LARGE_BATCH = 2**20
#: Batches of a quick source travel in groups of up to this many (and bytes),
#: gathered for at most ``GROUP_SECONDS``: one hand-off and one ``device_put``
#: per group; a slow source's batches go one by one, as soon as each is read.
GROUP = 16
GROUP_BYTES = 32 * 2**20
GROUP_SECONDS = 0.002

# Threads still running at interpreter exit are stopped and joined (at_exit):
# a daemon thread that finalization kills inside jaxlib aborts the process
# ("FATAL: exception not rethrown"), even one that only frees the jax.Arrays
# left in its queue as it ends. Tracked by thread, not by Ahead: a loop left by
# an exception (Ctrl-C) drops its Ahead, whose thread then ends on its own.
# Host worker pools stop before concurrent.futures' join, and refuse to start
# again, so a thread still reading then gets an error rather than a new pool.
_RUNNING: weakref.WeakSet = weakref.WeakSet()  # live threads (threading holds them)


class Ahead:
    """Iterates ``batches`` up to ``depth`` hand-offs ahead, in a thread.

    The first :data:`PROBE` batches are read in the consumer's thread and timed.
    If a batch took :data:`SLOW_READ` or more to read, or holds
    :data:`LARGE_BATCH` bytes or more, a thread reads the rest and puts them on
    the default device (``jax.device_put``), so that reading the next batch and
    copying it to an accelerator overlap the consumer's step; else reading
    stays in the consumer's thread, where a quick small batch costs least.

    Items come out in order; an exception raised by ``batches`` is raised by
    :meth:`__next__` after the batches before it, and the end of ``batches``
    ends this iterator. The thread stops when :meth:`close` is called or this
    object is collected (a loop broken out of).
    """

    def __init__(self, batches: Iterator[dict[str, Any]], depth: int):
        self._batches = batches
        self._depth = depth
        self._ready: collections.deque = collections.deque()
        self._probed: list[tuple[float, int]] = []  # (read seconds, bytes)
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        weakref.finalize(self, self._stop.set)

    @property
    def threaded(self) -> bool:
        """Whether a thread reads ahead (decided after the first batches)."""
        return self._thread is not None

    def __iter__(self) -> Ahead:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._ready:
            return self._ready.popleft()
        if self._thread is None:
            if len(self._probed) < PROBE:
                return self._read_here()
            if not self._worth_a_thread():
                return next(self._batches)
            self._start()
        return self._take()

    def _read_here(self) -> dict[str, Any]:
        tick = time.perf_counter()
        batch = next(self._batches)
        self._probed.append((time.perf_counter() - tick, nbytes(batch)))
        return batch

    def _worth_a_thread(self) -> bool:
        # The median read: the first read of a stream also opens it.
        typical = sorted(seconds for seconds, _ in self._probed)[len(self._probed) // 2]
        largest = max(size for _, size in self._probed)
        return typical >= SLOW_READ or largest >= LARGE_BATCH

    def _start(self) -> None:
        self._thread = _Filler(self._batches, self._queue, self._stop)
        _RUNNING.add(self._thread)
        self._thread.start()

    def _take(self) -> dict[str, Any]:
        assert self._thread is not None
        while True:
            try:
                kind, value = self._queue.get(timeout=_POLL)
            except queue.Empty:
                if not self._thread.is_alive():  # it hands over its end or error
                    raise RuntimeError(
                        "datarax's prefetch thread ended without handing over a "
                        "batch, an error or the end of the stream; please report "
                        "this, and iterate with prefetch=0 meanwhile."
                    ) from None
                continue
            if kind == "batches":
                self._ready.extend(value)
                return self._ready.popleft()
            if kind == "end":
                raise StopIteration
            raise value

    def close(self) -> None:
        """Stops the thread (the batch it is reading is dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        else:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()


class _Filler(threading.Thread):
    """The thread that reads ahead (:func:`_fill`), with its stop event."""

    def __init__(
        self, batches: Iterator[dict[str, Any]], out: queue.Queue, stop: threading.Event
    ):
        args = (batches, out, stop)
        super().__init__(target=_fill, args=args, name="datarax-prefetch", daemon=True)
        self.stop = stop


def _fill(batches: Iterator[dict[str, Any]], out: queue.Queue, stop: threading.Event):
    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    group: list[dict[str, Any]] = []
    most, since = GROUP, time.perf_counter()
    try:
        for batch in batches:
            if stop.is_set():
                return
            if not group:
                most = max(1, min(GROUP, GROUP_BYTES // max(1, nbytes(batch))))
            group.append(batch)
            # since: before this group's first read, so a slow read counts.
            if len(group) < most and time.perf_counter() - since < GROUP_SECONDS:
                continue
            if not put(("batches", jax.device_put(group))):
                return
            group, since = [], time.perf_counter()
        if group and not put(("batches", jax.device_put(group))):
            return
        put(("end", None))
    except BaseException as err:  # handed to the consumer, in order
        if group and not put(("batches", group)):  # read before the error
            return
        put(("error", err))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # release the source's readers (and its work ahead)


def _stop_all() -> None:
    threads = list(_RUNNING)
    for thread in threads:
        thread.stop.set()
    for thread in threads:
        thread.join(timeout=5)


def at_exit(hook: Any) -> None:
    """Runs ``hook`` at interpreter exit, before ``concurrent.futures`` joins.

    Registered with ``threading._register_atexit``, as ``concurrent.futures``
    registers its own exit join; ``atexit`` hooks run after that join, too late
    for threads that still use its pools.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - every CPython from 3.9 has it
        atexit.register(hook)
    else:
        register(hook)


at_exit(_stop_all)
