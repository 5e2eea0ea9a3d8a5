"""``StreamingDiskSource``: ``.npy`` files read on demand, out of core."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISDIR, S_ISREG

import jax
import numpy as np

from datarax.core import ElementSpec, jax_dtype
from datarax.sources._host import HostSourceBase


class _MemoryMaps:
    """The open memory maps of a source, kept out of the nnx graph's state.

    A plain object (not an array, not a pytree) is a static attribute of the
    module: it never enters ``nnx.state``, a checkpoint or a compiled function's
    arguments, and the host reads in the callback reach the files through it.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.memmap],
        paths: Mapping[str, Path],
        stamps: Mapping[str, tuple[int, int, int, int]],
    ):
        self.arrays = dict(arrays)
        # Absolute: a later os.chdir must not point the check at another file.
        self.paths = {name: os.path.abspath(paths[name]) for name in self.arrays}
        # The bytes each file needs: its header plus the rows the header declares.
        self.sizes = {
            name: int(array.offset) + array.nbytes
            for name, array in self.arrays.items()
        }
        # Taken before the file was mapped: a change made while it was being
        # opened is caught at the first read rather than missed.
        self.stamps = dict(stamps)

    def check_files(self) -> None:
        """Raises if a file changed in any way since the source opened it.

        A shared memory map serves whatever the file holds now: bytes rewritten
        in place, or a new array saved over the file, would be served as the
        records the source opened, under the old header. Touching a page past a
        file's end kills the process with SIGBUS. So every read first compares
        each file's size, modification time and identity with those at open:
        one ``os.stat`` per field, about 2 us, against a callback's fixed
        50-100 us. A file changed between this check and the read is not
        caught; the check closes all but that window. A file that only grew is
        refused too: an append is indistinguishable from a rewrite by its stamp.

        Raises:
            ValueError: naming the file and what changed.
        """
        for name, path in self.paths.items():
            try:
                now = os.stat(path)
            except OSError as err:
                raise ValueError(
                    f"StreamingDiskSource: {path} changed after the source opened "
                    f"it: it cannot be read any more ({err}). Do not delete, move or "
                    "rewrite the .npy files while a source reads them; open a new "
                    "source after changing them."
                ) from err
            if now.st_size < self.sizes[name]:
                raise ValueError(
                    f"StreamingDiskSource: {path} changed after the source opened "
                    f"it: it now holds {now.st_size} bytes, but its header needs "
                    f"{self.sizes[name]} (reading it would crash the process with "
                    "SIGBUS). Do not truncate or rewrite the .npy files while a "
                    "source reads them; open a new source after changing them."
                )
            if _stamp(now) != self.stamps[name]:
                raise ValueError(
                    f"StreamingDiskSource: {path} changed after the source opened "
                    f"it: {_what_changed(self.stamps[name], _stamp(now))}, so its "
                    "rows may no longer be the records the source opened. Do not "
                    "write, append to or replace the .npy files while a source "
                    "reads them; open a new source after changing them."
                )

    def read(self, index: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows ``index`` (any shape) of every field, in field order.

        One ``np.take`` per field, in the requested order. Sorting the rows first
        (for sequential disk access) cost 3x in the page cache: 2,048 random rows
        of 512 bytes took 22 us in order and 71-96 us sorted and put back.
        """
        flat = np.asarray(index, dtype=np.intp).reshape(-1)
        return tuple(
            np.take(array, flat, axis=0).reshape(*index.shape, *array.shape[1:])
            for array in self.arrays.values()
        )


def _stamp(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies a file's contents: size, mtime (ns), device and inode."""
    return (stat.st_size, stat.st_mtime_ns, stat.st_dev, stat.st_ino)


def _what_changed(then: tuple[int, ...], now: tuple[int, ...]) -> str:
    """How a file's stamp changed, in words for an error message."""
    if then[2:] != now[2:]:
        return "it was replaced by another file"
    if then[0] != now[0]:
        return f"its size went from {then[0]} to {now[0]} bytes"
    return "it was written to (its modification time changed)"


def _check_file(file: Path) -> os.stat_result:
    """``file``'s stat, if it is a regular file; else an error naming it.

    A folder or a FIFO named ``*.npy`` would fail deep in ``np.load`` (or block
    it forever), and a broken link with a bare "No such file".
    """
    try:
        stat = os.stat(file)
    except FileNotFoundError as err:
        if file.is_symlink():
            raise FileNotFoundError(
                f"StreamingDiskSource: {file} is a broken symbolic link: its "
                f"target {os.readlink(file)} does not exist. Point the link at a "
                ".npy file, or remove it."
            ) from err
        raise FileNotFoundError(f"StreamingDiskSource: {file} does not exist.") from err
    if not S_ISREG(stat.st_mode):
        what = "a folder" if S_ISDIR(stat.st_mode) else "not a regular file"
        raise ValueError(
            f"StreamingDiskSource: {file} is {what}, not a .npy file; move or "
            "rename it (in a folder, every *.npy entry is read as a field)."
        )
    return stat


def _open(path: Path) -> np.memmap:
    """Opens one ``.npy`` file as a memory map, with errors that name it."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        # np.load would try such a file as a pickle and blame pickling.
        raise ValueError(
            f"{path}: is not a valid .npy file (no NumPy header); write it with "
            "np.save."
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if any(
            hint in str(err)
            for hint in ("allow_pickle", "Object arrays", "Python objects")
        ):
            raise ValueError(
                f"{path}: holds Python objects (a pickled or object-dtype array); "
                "save numeric arrays instead (np.save with a numeric dtype)."
            ) from err
        raise ValueError(
            f"{path}: is truncated or not a valid .npy file ({err}); write it again "
            "with np.save."
        ) from err
    except (OSError, EOFError) as err:
        raise ValueError(
            f"{path}: is truncated or not a valid .npy file ({err}); write it again "
            "with np.save."
        ) from err
    if not isinstance(array, np.memmap):
        raise ValueError(f"{path}: could not be memory-mapped; save it with np.save.")
    if array.dtype.hasobject or array.dtype.kind in "OUSVMm":
        raise ValueError(
            f"{path}: has dtype {array.dtype}, which JAX cannot hold; save a numeric "
            "or bool array."
        )
    if array.ndim == 0:
        raise ValueError(f"{path}: holds a 0-d array; records need a leading axis.")
    return array


class StreamingDiskSource(HostSourceBase):
    """Records in ``.npy`` files, memory-mapped and read on demand.

    ``path`` is a folder holding one ``<field>.npy`` per field (all of the same
    length), or a single ``.npy`` file (one field, named after the file's stem).
    Nothing is loaded whole: each batch reads just its rows from the page cache or
    the disk, so a dataset larger than memory streams through a pipeline.

    :meth:`get_batch_at` is traceable: the record indices are computed in JAX
    (natural order, or the same per-epoch permutations as every eager source) and
    the host read happens through ``jax.pure_callback``, one gather per field per
    read. Inside a pipeline, ``scan`` reads about 8 MiB (up to 64 batches) per
    callback and iteration a chunk of batches per callback.

    Rows are served in native byte order (big-endian files are converted as they
    are read). Without x64, JAX holds 64-bit fields in 32 bits: each read checks
    the rows it serves, so a value that does not fit (an int64 beyond int32, a
    finite float64 beyond float32) stops the read that reaches it with an error
    naming the field and record, rather than being served wrapped or as inf.
    Checking the whole file at open would read all of it before the first batch.

    Args:
        path: a folder of ``.npy`` files, or one ``.npy`` file.

    Raises:
        TypeError: if ``path`` is not a ``str`` or ``os.PathLike`` (``bytes``
            paths included).
        FileNotFoundError: if ``path`` does not exist, or it or a ``*.npy`` entry
            of the folder is a broken symbolic link.
        ValueError: naming the file, for a folder without ``.npy`` files, a
            ``*.npy`` entry that is a folder or other non-regular file, files of
            different lengths, 0-d arrays, object or pickled arrays, and
            truncated or corrupt files. At a read (inside a compiled run it
            arrives wrapped in a ``JaxRuntimeError`` carrying the message): for a
            value 32 bits cannot hold, or a file changed in any way after the
            source opened it (written to, appended to, truncated, replaced or
            removed: the memory map would serve the new bytes as the old rows).

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> np.save(folder / "x.npy", np.arange(6))
        >>> source = StreamingDiskSource(folder)
        >>> len(source), source.get_batch_at(4, 4)["x"].tolist()
        (6, [4, 5, 0, 1])
    """

    def __init__(self, path: str | os.PathLike):
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            # Path(b"...") and Path(3) fail with pathlib's own TypeError, which
            # names neither this source nor the argument.
            raise TypeError(
                "StreamingDiskSource: path must be a str or os.PathLike (a folder "
                f"of .npy files, or one .npy file), got {type(path).__name__} "
                f"{path!r}."
            )
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise ValueError(
                    f"StreamingDiskSource: the folder {path} holds no .npy files; "
                    "save one <field>.npy per field with np.save."
                )
        else:
            files = [path]
        # Stamped before mapping; see _MemoryMaps.__init__.
        stamps = {file.stem: _stamp(_check_file(file)) for file in files}
        arrays = {file.stem: _open(file) for file in files}
        lengths = {file.name: int(arrays[file.stem].shape[0]) for file in files}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"StreamingDiskSource: the .npy files in {path} differ in length "
                f"{lengths}; every field needs the same number of records."
            )
        self.length = next(iter(lengths.values()))
        if self.length == 0:
            raise ValueError(f"StreamingDiskSource: {path} holds no records {lengths}.")
        self.path = str(path)
        self.files = _MemoryMaps(arrays, {f.stem: f for f in files}, stamps)

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field (dtypes as JAX holds them)."""
        return {
            name: jax.ShapeDtypeStruct(array.shape[1:], jax_dtype(array.dtype))
            for name, array in self.files.arrays.items()
        }

    def host_read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``rows`` of every field, gathered from the memory maps.

        Raises:
            ValueError: naming the file, when a file changed since the source
                opened it (rewritten, grown, shrunk, replaced or removed).
        """
        self.files.check_files()
        return dict(zip(self.files.arrays, self.files.read(rows), strict=True))
