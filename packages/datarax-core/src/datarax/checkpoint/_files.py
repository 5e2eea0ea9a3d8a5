"""Checkpoint files: a ``.npz`` archive of the state dict, written atomically."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from flax import nnx

from datarax.checkpoint import _temporaries
from datarax.checkpoint._errors import CheckpointError
from datarax.checkpoint._state import (
    StateDict,
    check_some,
    load_state_dict,
    state_dict,
)

#: How a ``.npz`` archive starts: a zip entry, or the end record of an empty zip.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")


def save(path: str | os.PathLike, *modules: nnx.Pytree) -> None:
    """Writes :func:`state_dict` of ``modules`` to ``path`` atomically.

    The file (NumPy ``.npz``, no pickled objects) is written next to ``path`` and
    renamed over it, so a crash mid-save leaves the previous checkpoint readable.
    A save killed mid-write leaves its temporary file (``.{name}.*.tmp``) behind;
    the next save to ``path`` removes such files of earlier saves to ``path``
    whose process is gone (on this host), and any untouched for an hour, never
    one that a running save is writing.

    Raises:
        FileNotFoundError: naming ``path``, when its folder does not exist.
        CheckpointError: for a Variable holding Python objects, which a checkpoint
            cannot store.
    """
    path = checked_path(path, "save")
    check_some(modules, "save")
    if path.is_dir():
        raise CheckpointError(
            f"cannot save {os.fspath(path)!r}: it is a folder; save to a file in "
            "it, e.g. folder / 'checkpoint.npz'."
        )
    write_state(path, state_dict(*modules))


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Writes a :func:`state_dict` to the file ``path`` atomically, as :func:`save`."""
    flat = dict(_flatten(state))
    _check_storable(flat, path)
    fd, tmp = _temporaries.create(path)
    try:
        with os.fdopen(fd, "wb") as f:
            # Now, before writing: frees the space killed saves held, and ours is
            # registered as being written, so it is never taken for one of them.
            _temporaries.remove_stale(path)
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _temporaries.release(tmp)


def checked_path(path: Any, what: str) -> Path:
    """``path`` as a ``Path``, refusing what is not a str or ``os.PathLike``."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{what} takes the checkpoint's path first (a str or os.PathLike), got "
            f"{type(path).__name__} {path!r:.60}; write {what}(path, pipe, ...)."
        )
    return Path(path)


def _check_storable(flat: Mapping[str, np.ndarray], path: Path) -> None:
    """Refuses Python objects, which ``np.savez`` would pickle and restore refuses."""
    for key, value in flat.items():
        if value.dtype.hasobject:
            raise CheckpointError(
                f"cannot save {os.fspath(path)!r}: state entry "
                f"{'/'.join(json.loads(key))} holds Python objects ({value!r:.60}); "
                "a checkpoint stores numeric arrays only. Keep such values out of "
                "nnx Variables."
            )


def restore(path: str | os.PathLike, *modules: nnx.Pytree) -> None:
    """Reads a file written by :func:`save` into ``modules``, in order.

    Checks as :func:`load_state_dict` does, and nothing is written into the
    modules unless the whole file reads and every check passes.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: (a ``ValueError``) naming ``path``, for a file that is
            not a datarax checkpoint (a folder, an empty file, random bytes, a
            pickle, a single ``.npy`` array, an ``.npz`` of other arrays), a
            damaged one (truncated, failing the zip checksums), or a state that
            :func:`load_state_dict` refuses.
    """
    path = checked_path(path, "restore")
    check_some(modules, "restore")
    shown = os.fspath(path)
    try:
        load_state_dict(_unflatten(read(path)), *modules)
    except CheckpointError as err:
        raise CheckpointError(f"cannot restore {shown!r}: {err}") from err.__cause__


def read(path: Path) -> dict[tuple[str, ...], np.ndarray]:
    """The arrays of a checkpoint file, by key path.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: for a folder, or a file that is not a whole ``.npz``
            archive of numeric arrays named by JSON key paths.
    """
    if path.is_dir():
        raise CheckpointError(
            "it is a folder, not a checkpoint file; pass the file that save wrote."
        )
    with open(path, "rb") as f:  # FileNotFoundError and PermissionError name it
        problem = _not_an_archive(f.read(8))
        if problem:
            raise CheckpointError(f"{problem}; pass a file that save wrote.")
        f.seek(0)
        try:
            return _read_arrays(f)
        except CheckpointError:
            raise
        except Exception as err:  # corrupt bytes raise many types; all one fault
            raise CheckpointError(
                f"the file is damaged or truncated ({type(err).__name__}: {err}); "
                "restore an intact copy (save replaces the file only once the new "
                "one is completely written, so the file was changed afterwards)."
            ) from err


def _not_an_archive(head: bytes) -> str | None:
    """What the file starting with ``head`` is instead of an archive, or ``None``."""
    if head.startswith(_ZIP_STARTS):
        return None
    if not head:
        return "the file is empty, not a datarax checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return (
            "it is a single NumPy array (.npy), not a datarax checkpoint, which is "
            "an .npz archive of the whole state"
        )
    if head.startswith(b"\x80"):
        return (
            "it holds pickled Python objects, not a datarax checkpoint (an .npz "
            "archive of arrays); datarax never loads pickles, which can run code"
        )
    return f"it is not a datarax checkpoint (an .npz archive): it starts with {head!r}"


def _read_arrays(f: BinaryIO) -> dict[tuple[str, ...], np.ndarray]:
    flat: dict[tuple[str, ...], np.ndarray] = {}
    with zipfile.ZipFile(f) as archive:
        for info in archive.infolist():
            key = _key_path(info.filename)
            if key in flat:
                raise CheckpointError(
                    f"the file is damaged: it holds {info.filename!r} twice."
                )
            with archive.open(info) as member:
                flat[key] = _read_array(member, info.filename)
    return flat


def _key_path(name: str) -> tuple[str, ...]:
    """The key path an archive member is named by, as :func:`_flatten` wrote it."""
    path = None
    if name.endswith(".npy"):
        try:
            path = json.loads(name[: -len(".npy")])
        except (ValueError, RecursionError):
            path = None
    if not (isinstance(path, list) and path and all(isinstance(p, str) for p in path)):
        raise CheckpointError(
            f"it is not a datarax checkpoint: it holds an entry named {name!r}, but "
            "save names each array by its JSON key path, such as "
            '\'["0", "position"].npy\'.'
        )
    return tuple(path)


def _read_array(member: BinaryIO, name: str) -> np.ndarray:
    """One ``.npy`` member, read to its end so that zip checks its CRC-32."""
    version = np.lib.format.read_magic(member)
    header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    _, _, dtype = header(member)
    # Checked before reading: NumPy would only read such an array by unpickling.
    if dtype.hasobject:
        raise CheckpointError(
            f"it is not a datarax checkpoint: its array {name!r} holds Python objects "
            f"(dtype {dtype}); a checkpoint holds numeric arrays only."
        )
    member.seek(0)
    array = np.lib.format.read_array(member, allow_pickle=False)
    rest = member.read()
    if rest:
        raise CheckpointError(
            f"the file is damaged: its array {name!r} is followed by {len(rest)} "
            "stray bytes."
        )
    return array


def _flatten(tree: Mapping, prefix: tuple = ()) -> Iterator[tuple[str, np.ndarray]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            # JSON paths: node names may hold any character, "/" included.
            yield json.dumps(path), np.asarray(value)


def _unflatten(flat: Mapping[tuple[str, ...], np.ndarray]) -> StateDict:
    out: StateDict = {}
    for path, value in flat.items():
        node = out
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(
                    f"the file is damaged: entry {list(path)} lies inside the array "
                    f"{list(path[: depth + 1])}."
                )
        if path[-1] in node:
            raise CheckpointError(
                f"the file is damaged: entry {list(path)} is both an array and a "
                "dict of arrays."
            )
        node[path[-1]] = value
    return out
