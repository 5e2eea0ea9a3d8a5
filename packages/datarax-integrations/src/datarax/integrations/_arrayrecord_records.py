"""ArrayRecordRecords: raw ArrayRecord records as host records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datarax.integrations._arrayrecord_source import _open, _Records, _resolve
from datarax.sources import HostRecordSource

__all__ = ["ArrayRecordRecords"]


class ArrayRecordRecords(HostRecordSource):
    """The records of ArrayRecord files as ``{"record": bytes}``, undecoded.

    For files of encoded examples (a serialized ``tf.train.Example``, a JPEG, a
    protobuf of your own): decode each in a host stage of a
    :class:`~datarax.sources.HostMapSource`, on worker threads or processes,
    instead of serially inside a host callback (``ArrayRecordSource(decode=)``).
    Records are numbered across the files in order; each read asks every file
    it touches for its records in one batch. Readers open on first use, in each
    worker process of their own.

    Args:
        paths: a file, a glob, or a list of either (globs sorted).

    Raises:
        TypeError, ValueError, FileNotFoundError: as
            :class:`ArrayRecordSource`, naming the path at fault.
    """

    def __init__(self, paths: Any):
        files = _resolve(paths)
        counts = [_open(file)[0] for file in files]
        self.files = _Records(files, counts, None, None, {})

    def __len__(self) -> int:
        """Records in all the files."""
        return int(self.files.ends[-1])

    def record(self, index: int) -> dict[str, Any]:
        """``{"record": the bytes of record index}``."""
        return self.read_records([index])[0]

    def read_records(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Records ``indices`` in that order, one batched read per file touched."""
        rows = np.asarray(indices, np.int64)
        return [{"record": record} for record in self.files.read_bytes(rows)]

    def fingerprint(self) -> str:
        """The number of records in each file (not the files' places)."""
        counts = np.diff(self.files.ends, prepend=0).tolist()
        return f"ArrayRecordRecords(counts={counts})"
