"""``HostRecordSource``: records of any Python values, read by index on the host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class HostRecordSource:
    """Records that only host code can use: bytes, strings, ragged arrays.

    An encoded image, a line of text or a variable-length audio clip cannot be a
    fixed-shape JAX array, so such records never enter a compiled program. A
    host record source reads them by index; :class:`HostMapSource` runs host
    stages (:class:`~datarax.operators.HostOperator`) on a worker pool to turn
    each record into fixed-shape arrays, and that is the source a
    :class:`~datarax.Pipeline` reads. Order and shuffling are the pipeline's, as
    for every source.

    Implement ``__len__`` and :meth:`record` (or :meth:`read_records`, when
    reading several records at once is cheaper). With process workers the source
    is pickled to each worker once: keep only picklable state (paths, not open
    files), or open lazily in the worker.
    """

    def __len__(self) -> int:
        """Records in the source."""
        raise NotImplementedError(f"{type(self).__name__} must implement __len__.")

    def record(self, index: int) -> dict[str, Any]:
        """The record at ``index`` (0 <= index < len): a dict of field -> value."""
        raise NotImplementedError(f"{type(self).__name__} must implement record.")

    def read_records(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The records at ``indices``, in order (default: :meth:`record` for each)."""
        return [self.record(int(i)) for i in indices]

    def fingerprint(self) -> str | None:
        """What decides the records beyond their number (see ``SourceBase``)."""
        return None
