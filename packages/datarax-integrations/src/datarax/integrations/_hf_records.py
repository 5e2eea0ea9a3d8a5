"""HFRecords: a HuggingFace dataset's rows as host records, public in ``.hf``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datarax.integrations._extras import require
from datarax.integrations._hf_source import _columns, _resolve
from datarax.sources import HostRecordSource

datasets, _ = require("hf", "datasets", "pyarrow")

__all__ = ["HFRecords"]


class HFRecords(HostRecordSource):
    """The rows of a ``datasets.Dataset`` as host records, any column type.

    For the columns :class:`HFSource` cannot hold as arrays: strings, ragged
    lists, ``Image`` and ``Audio``. Each record is a dict of the selected
    columns' Python values, read in batches (one Arrow slice per read, not one
    lookup per row); pair it with :class:`~datarax.sources.HostMapSource` and host
    stages that decode or tokenize.

    Args:
        dataset_or_path: a ``datasets.Dataset``; a ``DatasetDict`` (then give
            ``split``); or a folder written by ``save_to_disk``.
        split: the split of a ``DatasetDict`` to read.
        columns: the columns to keep (default: all), each named once.
        decode: ``False`` turns ``Image`` and ``Audio`` columns into their
            encoded form, ``{"bytes": ..., "path": ...}`` (decode them in a host
            stage, e.g. with Pillow); ``True`` (default) keeps the dataset's own
            decoding (``PIL.Image`` objects for ``Image``).

    Raises:
        TypeError, ValueError, FileNotFoundError: as :class:`HFSource`, naming
            the split or column at fault.

    Examples:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"text": ["a b", "c"], "n": [1, 2]})
        >>> rows = HFRecords(ds, columns=["text"])
        >>> len(rows), rows.read_records([1, 0])
        (2, [{'text': 'c'}, {'text': 'a b'}])
    """

    def __init__(
        self,
        dataset_or_path: Any,
        *,
        split: str | None = None,
        columns: Sequence[str] | None = None,
        decode: bool = True,
    ):
        dataset = _resolve(dataset_or_path, split, "HFRecords", datasets.Dataset)
        names = _columns(list(dataset.column_names), columns, "HFRecords")
        dataset = dataset.select_columns(names)
        if not decode:
            for name, feature in dataset.features.items():
                if isinstance(feature, datasets.Image | datasets.Audio):
                    dataset = dataset.cast_column(name, type(feature)(decode=False))
        self.dataset = dataset
        self.names = names

    def __len__(self) -> int:
        """Rows in the dataset."""
        return len(self.dataset)

    def record(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict of its columns' values."""
        return self.read_records([index])[0]

    def read_records(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Rows ``indices`` in that order, read as one batch."""
        columns = self.dataset[np.asarray(indices, np.int64).tolist()]
        return [
            {name: columns[name][i] for name in self.names} for i in range(len(indices))
        ]

    def fingerprint(self) -> str:
        """The number of rows and the columns."""
        return f"HFRecords(len={len(self)}, columns={self.names})"
