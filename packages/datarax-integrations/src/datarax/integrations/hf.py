"""HuggingFace ``datasets`` as datarax sources.

``HFSource`` materialises a ``datasets.Dataset`` (or a split of a ``DatasetDict``,
or a folder written by ``save_to_disk``) as device arrays, straight from its Arrow
columns: random access, shuffling, ``Pipeline.scan``. ``HFStreamingSource`` reads an
``IterableDataset`` in order, for data too large to hold: iteration only.
``HFRecords`` serves rows of any column type (strings, ``Image``, ``Audio``, ragged
lists) as host records, for a ``datarax.sources.HostMapSource`` that decodes or
tokenizes them on worker threads or processes.

Needs the ``[hf]`` extra: ``pip install "datarax-integrations[hf]"``.
"""

from datarax.integrations._extras import require

require("hf", "datasets", "pyarrow")

from datarax.integrations._hf_records import HFRecords as HFRecords  # noqa: E402
from datarax.integrations._hf_source import (  # noqa: E402 (after the guard)
    HFSource as HFSource,
    HFStreamingSource as HFStreamingSource,
)

__all__ = ["HFRecords", "HFSource", "HFStreamingSource"]
