"""Temporary files of atomic saves, and removing those that killed saves left.

``save`` writes ``.{name}.{host}.{pid}.{random}.tmp`` next to the target and renames
it over the target. A save killed mid-write (SIGKILL, out of memory, power loss)
leaves its temporary behind. The next save to the same target removes such files,
never one that a running save may be writing; it removes a temporary

* of this host, one whose process is gone (``os.kill(pid, 0)`` finds no process);
* of this process, one that no thread of it is writing: a restarted container
  often runs its trainer under the same pid, which then looks alive;
* of any host, and legacy names without host and pid (``.{name}.{random}.tmp``,
  written by datarax before this scheme), one untouched for :data:`STALE_AFTER_S`
  seconds: a live save writes steadily, and another host's pids cannot be asked.

A temporary whose pid is alive in another process is kept until that age, even
if the pid was reused by an unrelated process: keeping a file too long costs disk
space, removing a live one would fail that save.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

STALE_AFTER_S = 3600.0
"""Seconds after its last write when any save's temporary counts as abandoned."""

#: This host in temporary names: no dots, so a name splits unambiguously.
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"

_writing: set[str] = set()  # names of this process's temporaries being written
_lock = threading.Lock()


def create(path: Path) -> tuple[int, Path]:
    """A new temporary file next to ``path``: its open descriptor and its path.

    It stays registered as being written until :func:`release`.

    Raises:
        FileNotFoundError: naming ``path``, when its folder does not exist.
        OSError: of the type the system gave (``PermissionError``, ...), naming
            ``path``.
    """
    prefix = f".{path.name}.{HOST}.{os.getpid()}."
    try:
        # Created and registered under one lock: a concurrent clean-up in
        # another thread lists the folder first, then reads the registry.
        with _lock:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
            _writing.add(Path(name).name)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot save {os.fspath(path)!r}: its folder "
            f"{os.fspath(path.parent)!r} does not exist; create it first "
            "(Path(folder).mkdir(parents=True)).",
        ) from None
    except OSError as err:
        # OSError(errno, ...) is the subclass the errno names (PermissionError...).
        raise OSError(
            err.errno,
            f"cannot save {os.fspath(path)!r}: {err.strerror} (creating a temporary "
            "file in its folder, renamed over it once written)",
        ) from None
    return fd, Path(name)


def release(tmp: Path) -> None:
    """Marks ``tmp`` as no longer being written (renamed, or removed)."""
    with _lock:
        _writing.discard(tmp.name)


def remove_stale(path: Path) -> list[Path]:
    """Removes the temporaries of earlier saves to ``path`` that no save owns.

    Best effort: a file that vanishes meanwhile or cannot be removed is skipped.

    Returns:
        The temporaries removed.
    """
    prefix = re.escape(f".{path.name}.")
    named = re.compile(
        prefix + r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[^./]+\.tmp"
    )
    legacy = re.compile(prefix + r"[^./]+\.tmp")
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(".")]
    except OSError:
        return []
    with _lock:  # read after listing: every listed file was registered by then
        writing = set(_writing)
    now, removed = time.time(), []
    for entry in entries:
        match = named.fullmatch(entry.name)
        if entry.name in writing or not (match or legacy.fullmatch(entry.name)):
            continue
        try:
            if _abandoned(match, now - entry.stat().st_mtime):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already (another save removed it), or not ours
            continue
    return removed


def _abandoned(match: re.Match | None, age: float) -> bool:
    if age > STALE_AFTER_S:
        return True
    if match is None or match["host"] != HOST:
        return False
    pid = int(match["pid"])
    return pid == os.getpid() or not _alive(pid)


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill on Windows would end the process: rely on age
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (
        OSError,
        OverflowError,
    ):  # another user's process, or a pid too large to ask
        return True
    return True
