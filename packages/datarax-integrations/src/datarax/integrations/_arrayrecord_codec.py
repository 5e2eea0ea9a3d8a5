r"""The record encoding of ``write_array_record``: a fixed layout of raw arrays.

A record is one ArrayRecord entry (bytes)::

    offset  size  content
    0       4     magic b"\x93DRX"
    4       2     format version, uint16 little-endian (1)
    6       2     reserved, zero
    8       4     header length H, uint32 little-endian
    12      H     header: UTF-8 JSON [[name, dtype name, shape], ...] in field order
    12 + H  ...   each field's values in header order, C order, little-endian,
                  back to back, no padding

Every record of a file written by ``write_array_record`` has the same fields,
dtypes and shapes, so the same header bytes and the same length. A batch of
records is therefore decoded without a Python loop per record: the records are
joined into one buffer, viewed as a ``[n, record_bytes]`` uint8 array, the
headers compared in one vectorised test, and each field is a column slice viewed
with ``np.frombuffer`` semantics (``ndarray.view(dtype)``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAGIC = b"\x93DRX"
VERSION = 1
_PREFIX = struct.Struct("<4sHHI")

#: NumPy dtype kinds a record may hold: bool, ints, floats, complex.
_NUMERIC_KINDS = "biufc"


def is_numeric(dtype: np.dtype) -> bool:
    """Whether JAX can hold ``dtype`` (numbers, bool, ml_dtypes such as bfloat16)."""
    if dtype.kind in _NUMERIC_KINDS:
        return True
    # bfloat16, float8_*, int4 ...: registered by ml_dtypes with kind "V".
    return dtype.type.__module__ == "ml_dtypes"


class Layout:
    """Field names, dtypes and shapes of a record, and where each field lies.

    Args:
        fields: ``(name, dtype, shape)`` per field, in record order.
    """

    def __init__(self, fields: Sequence[tuple[str, np.dtype, tuple[int, ...]]]):
        # Native byte order: the dtype a reader hands to JAX.
        self.fields = tuple(
            (n, np.dtype(d).newbyteorder("="), tuple(s)) for n, d, s in fields
        )
        header = json.dumps(
            [[n, d.name, list(s)] for n, d, s in self.fields],
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        self.header = _PREFIX.pack(MAGIC, VERSION, 0, len(header)) + header
        # Stored little-endian whatever the host: a file reads the same anywhere.
        self.stored = tuple(d.newbyteorder("<") for _, d, _ in self.fields)
        self.offsets = []
        offset = len(self.header)
        for (_, dtype, shape), stored in zip(self.fields, self.stored, strict=True):
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            self.offsets.append((offset, size, stored, shape))
            offset += size
        self.nbytes = offset
        self._header_row = np.frombuffer(self.header, np.uint8)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.header == other.header

    def __hash__(self) -> int:
        return hash(self.header)

    def describe(self) -> str:
        """``{name: dtype[shape]}`` for error messages."""
        return (
            "{"
            + ", ".join(f"{n!r}: {d.name}{list(s)}" for n, d, s in self.fields)
            + "}"
        )

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        """The layout of a record given as NumPy arrays."""
        return cls([(n, a.dtype, a.shape) for n, a in arrays.items()])

    @classmethod
    def parse(cls, record: bytes) -> Layout | None:
        """The layout a record was written with; ``None`` if it has no datarax header.

        Raises:
            ValueError: for a datarax header that is damaged, of another format
                version, or whose record length does not match it.
        """
        if len(record) < _PREFIX.size or not record.startswith(MAGIC):
            return None
        _, version, _, size = _PREFIX.unpack_from(record)
        if version != VERSION:
            raise ValueError(
                f"written in datarax record format version {version}, which this "
                f"datarax (format {VERSION}) cannot read; upgrade datarax."
            )
        try:
            raw = json.loads(record[_PREFIX.size : _PREFIX.size + size])
            layout = cls([(n, np.dtype(d), tuple(s)) for n, d, s in raw])
        except (ValueError, TypeError) as err:
            raise ValueError(f"has a damaged datarax record header ({err}).") from err
        if layout.nbytes != len(record):
            raise ValueError(
                f"is {len(record)} bytes long, but its header {layout.describe()} "
                f"says {layout.nbytes}: the record is damaged."
            )
        return layout

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        """The record bytes of ``arrays`` (already checked against this layout)."""
        parts = [self.header]
        for (name, _, _), stored in zip(self.fields, self.stored, strict=True):
            parts.append(np.ascontiguousarray(arrays[name], dtype=stored).tobytes())
        return b"".join(parts)

    def decode(self, record: bytes) -> dict[str, np.ndarray]:
        """One record as arrays (views of ``record``)."""
        return {
            name: np.frombuffer(record, stored, int(np.prod(shape)), offset).reshape(
                shape
            )
            for (name, _, _), (offset, _, stored, shape) in zip(
                self.fields, self.offsets, strict=True
            )
        }

    def decode_batch(self, records: Sequence[bytes]) -> dict[str, np.ndarray] | int:
        """``records`` stacked per field, or the first position off this layout.

        Returns an ``int``, the position in ``records`` of the first record whose
        length or header differs, so that the caller can say what is wrong.
        """
        n = len(records)
        lengths = np.fromiter(map(len, records), np.int64, n)
        bad = np.flatnonzero(lengths != self.nbytes)
        if bad.size:
            return int(bad[0])
        rows = np.frombuffer(b"".join(records), np.uint8).reshape(n, self.nbytes)
        head = rows[:, : len(self.header)]
        same = (head == self._header_row).all(axis=1)
        if not same.all():
            return int(np.flatnonzero(~same)[0])
        return {
            name: rows[:, offset : offset + size].view(stored).reshape(n, *shape)
            for (name, _, _), (offset, size, stored, shape) in zip(
                self.fields, self.offsets, strict=True
            )
        }


def as_record(record: Any, what: str) -> dict[str, np.ndarray]:
    """A record (a mapping of names to array-likes) as NumPy arrays.

    ``what`` names the record in the errors, e.g. ``"record 3"``.

    Raises:
        TypeError: if ``record`` is not a mapping or a name is not a string.
        ValueError: for a record without fields, or a field that is ragged or
            whose dtype is not numeric (object, strings, ...), naming the field.
    """
    if not isinstance(record, Mapping):
        raise TypeError(
            f"{what} is a {type(record).__name__}, not a dict of arrays; give each "
            "record as {field name: array}."
        )
    if not record:
        raise ValueError(f"{what} has no fields; give it at least one.")
    arrays = {}
    for name, value in record.items():
        if not isinstance(name, str):
            raise TypeError(f"{what} has a field name {name!r} that is not a string.")
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nested lists
            raise ValueError(
                f"{what} field {name!r} is not an array ({err}); pad it to a fixed "
                "shape."
            ) from err
        if not is_numeric(array.dtype):
            raise ValueError(
                f"{what} field {name!r} has dtype {array.dtype}, which JAX cannot "
                "hold; give numeric or bool arrays (encode text as token ids)."
            )
        arrays[name] = array
    return arrays


def difference(first: Layout, arrays: Mapping[str, np.ndarray]) -> str | None:
    """How ``arrays`` differ from the fields of ``first`` (``None``: they match)."""
    names = [n for n, _, _ in first.fields]
    if len(arrays) != len(names) or any(n not in arrays for n in names):
        return f"has fields {sorted(arrays)} where record 0 has {sorted(names)}"
    for name, dtype, shape in first.fields:
        array = arrays[name]
        if array.dtype.name != dtype.name or array.shape != shape:
            return (
                f"field {name!r} is {array.dtype.name}{list(array.shape)} where "
                f"record 0 has {dtype.name}{list(shape)}"
            )
    return None
