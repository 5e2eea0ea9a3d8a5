"""TFDSRecords: a prepared TFDS split's examples as host records, any feature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datarax.integrations._tfds_source import (
    _check_split,
    _open_builder,
    _random_access,
)
from datarax.sources import HostRecordSource

__all__ = ["TFDSRecords"]


class TFDSRecords(HostRecordSource):
    """The examples of a prepared TFDS split as host records, any feature type.

    For the features a ``TFDSSource`` cannot hold as arrays: ``Image`` (encoded
    bytes with ``decoders={"image": tfds.decode.SkipDecoding()}``, to decode on
    host workers), ``Text``, variable-length tensors. Reads through
    ``builder.as_data_source(split)`` (random access, no TensorFlow for
    array_record builders), one batched read per call; pair it with
    :class:`~datarax.sources.HostMapSource` and host stages.

    Args:
        name_or_builder: a prepared dataset's name, or a ``DatasetBuilder``.
        split: the split (sliced or joined splits too: ``"train[:80%]"``).
        data_dir: where the dataset was prepared (with a name).
        features: top-level features to keep (default: all), each named once.
        decoders: TFDS decoders per feature, as for ``as_data_source``.

    Raises:
        ValueError: an unprepared or unknown dataset, an unknown split or
            feature, or a builder without random access (tfrecord files: use
            ``TFDSStreamingSource``, iteration only).
    """

    def __init__(
        self,
        name_or_builder: str | tfds.core.DatasetBuilder,
        *,
        split: str = "train",
        data_dir: Any = None,
        features: Sequence[str] | None = None,
        decoders: Mapping[str, Any] | None = None,
    ):
        builder = _open_builder(name_or_builder, data_dir, "TFDSRecords")
        self.length = _check_split(builder, split, "TFDSRecords")
        if not _random_access(builder):
            raise ValueError(
                f"TFDSRecords: {builder.name!r} is stored in a format without random "
                "access (tfrecord); prepare it with file_format='array_record', or "
                "read it in order with TFDSStreamingSource."
            )
        available = list(builder.info.features)
        names = available if features is None else list(features)
        unknown = [n for n in names if n not in available]
        if unknown or len(set(names)) != len(names) or not names:
            raise ValueError(
                f"TFDSRecords: features={features!r} must name each of "
                f"{available} at most once, and at least one."
            )
        self.names = names
        self.source = builder.as_data_source(split=split, decoders=decoders)
        self.description = f"TFDSRecords({builder.name}, {split}, features={names})"

    def __len__(self) -> int:
        """Examples in the split."""
        return self.length

    def record(self, index: int) -> dict[str, Any]:
        """Example ``index``, the kept features only."""
        return self.read_records([index])[0]

    def read_records(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Examples ``indices`` in that order, read as one batch."""
        rows = self.source.__getitems__(np.asarray(indices, np.int64).tolist())
        return [{name: row[name] for name in self.names} for row in rows]

    def fingerprint(self) -> str:
        """The dataset, split and features (not where it was prepared)."""
        return self.description
