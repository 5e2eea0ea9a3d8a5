"""HuggingFace ``datasets`` as datarax sources.

``HFSource`` materialises a ``datasets.Dataset`` (or a split of a ``DatasetDict``,
or a folder written by ``save_to_disk``) as device arrays, straight from its Arrow
columns: random access, shuffling, ``Pipeline.scan``. ``HFStreamingSource`` reads an
``IterableDataset`` in order, for data too large to hold: iteration only.

Needs the ``[hf]`` extra: ``pip install "datarax-integrations[hf]"``.
"""

from datarax.integrations._extras import require

require("hf", "datasets", "pyarrow")

from datarax.integrations._hf_source import (  # noqa: E402 (after the guard)
    HFSource as HFSource,
    HFStreamingSource as HFStreamingSource,
)

__all__ = ["HFSource", "HFStreamingSource"]
