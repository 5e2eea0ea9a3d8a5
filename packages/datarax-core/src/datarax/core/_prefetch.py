"""``Ahead``: host batches read and put on the device by a background thread."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import jax

#: Seconds a blocked hand-off waits before it looks whether it was stopped.
_POLL = 0.1


class Ahead:
    """Iterates ``batches`` in a thread, up to ``depth`` batches ahead.

    Each batch is put on the default device (``jax.device_put``) in the thread,
    so that reading the next batch and copying it to an accelerator overlap the
    consumer's step. Items come out in order; an exception raised by
    ``batches`` is raised by :meth:`__next__` after the batches before it, and
    the end of ``batches`` ends this iterator. The thread stops when
    :meth:`close` is called or this object is collected (a loop broken out of).
    """

    def __init__(self, batches: Iterator[dict[str, Any]], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_fill,
            args=(batches, self._queue, self._stop),
            name="datarax-prefetch",
            daemon=True,
        )
        self._thread.start()
        weakref.finalize(self, self._stop.set)

    def __iter__(self) -> Ahead:
        return self

    def __next__(self) -> dict[str, Any]:
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
            if kind == "batch":
                return value
            if kind == "end":
                raise StopIteration
            raise value

    def close(self) -> None:
        """Stops the thread (the batch it is reading is dropped)."""
        self._stop.set()
        self._thread.join(timeout=5)


def _fill(batches: Iterator[dict[str, Any]], out: queue.Queue, stop: threading.Event):
    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in batches:
            if stop.is_set() or not put(("batch", jax.device_put(batch))):
                return
        put(("end", None))
    except BaseException as err:  # handed to the consumer, in order
        put(("error", err))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # release the source's readers (and its work ahead)
