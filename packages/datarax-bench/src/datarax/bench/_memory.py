"""Peak resident-memory growth of a stretch of work, worker processes included."""

from __future__ import annotations

import threading
from pathlib import Path

_MB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _own_peak() -> int | None:
    """This process's peak RSS in bytes since the last reset (Linux ``VmHWM``)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _own_rss() -> int:
    """This process's current RSS in bytes (Linux ``VmRSS``; 0 where unknown)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_own_peak() -> bool:
    """Resets ``VmHWM`` to the current RSS (Linux 4.0+); False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Measures peak RSS growth from :meth:`start` to :meth:`stop`, in MB.

    This process's own peak comes from the kernel's high-water mark (reset at
    ``start``), so short spikes between samples still count. Loaders that fork
    workers (PyTorch, Grain, tf.data) hold memory in child processes, which a
    background thread samples every ``interval`` seconds together with this
    process; growth is the larger of the two measures.

    Args:
        interval: seconds between samples of the process tree.
    """

    def __init__(self, *, interval: float = 0.05):
        # Imported here: `import datarax.bench` stays free of psutil (and quick).
        # Without it (a GPU machine that can install nothing) only this process
        # is measured, from /proc: worker processes are not counted.
        try:
            import psutil
        except ImportError:
            psutil = None
        self._process = None if psutil is None else psutil.Process()
        self._error = () if psutil is None else psutil.Error
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled_peak = 0

    def _tree_rss(self) -> int:
        if self._process is None:
            return _own_rss()
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except self._error:  # a worker that exited between the two calls
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._sampled_peak = max(self._sampled_peak, self._tree_rss())

    def start(self) -> None:
        """Takes the baseline and starts sampling."""
        self._has_hwm = _reset_own_peak()
        self._own_base = (
            _own_rss() if self._process is None else self._process.memory_info().rss
        )
        self._tree_base = self._tree_rss()
        self._sampled_peak = self._tree_base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stops sampling; returns the peak growth over the baseline in MB."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sampled_peak = max(self._sampled_peak, self._tree_rss())
        growth = self._sampled_peak - self._tree_base
        own = _own_peak() if self._has_hwm else None
        if own is not None:
            growth = max(growth, own - self._own_base)
        return max(growth, 0) / _MB
