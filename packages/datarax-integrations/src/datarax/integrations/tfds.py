"""Sources over prepared TensorFlow Datasets (TFDS) builders.

``TFDSSource`` materialises a split as device arrays; ``TFDSStreamingSource``
reads records on demand, for splits too large to hold in memory. Both read a
builder prepared with ``file_format="array_record"`` without TensorFlow, by
random access (``scan``, ``step``, shuffling, exact resume). A builder prepared in
TFDS's default ``tfrecord`` format can only be read in order, through TensorFlow:
``TFDSSource`` reads it whole, and ``TFDSStreamingSource`` over it is
iteration-only. ``TFDSRecords`` serves any feature (``Image`` bytes, ``Text``,
variable-length tensors) as host records, for a ``datarax.sources.HostMapSource``
that decodes them on worker threads or processes.

Needs the ``[tfds]`` extra: ``pip install "datarax-integrations[tfds]"``.
"""

from datarax.integrations._extras import require

require("tfds", "tensorflow_datasets")

from datarax.integrations._tfds_records import TFDSRecords as TFDSRecords  # noqa: E402
from datarax.integrations._tfds_source import (  # noqa: E402 (after the guard)
    TFDSIterableSource as TFDSIterableSource,
    TFDSRandomAccessSource as TFDSRandomAccessSource,
    TFDSSource as TFDSSource,
    TFDSStreamingSource as TFDSStreamingSource,
)

__all__ = [
    "TFDSIterableSource",
    "TFDSRandomAccessSource",
    "TFDSRecords",
    "TFDSSource",
    "TFDSStreamingSource",
]
