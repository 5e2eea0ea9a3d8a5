"""Peer adapters (Grain, tf.data, PyTorch, SPDL, HF datasets), behind ``[peers]``.

Importing this package registers every peer adapter but imports no peer
framework: each adapter imports its library inside ``setup``, so
``import datarax.bench`` stays light and a missing peer is skipped with its
install command (``Adapter.missing``).
"""

from datarax.bench._peers._grain import (
    GrainAdapter as GrainAdapter,
    GrainProcessesAdapter as GrainProcessesAdapter,
)
from datarax.bench._peers._hf import HFDatasetsAdapter as HFDatasetsAdapter
from datarax.bench._peers._spdl import SPDLAdapter as SPDLAdapter
from datarax.bench._peers._tfdata import TFDataAdapter as TFDataAdapter
from datarax.bench._peers._torch import TorchAdapter as TorchAdapter

__all__ = (
    "GrainAdapter",
    "GrainProcessesAdapter",
    "HFDatasetsAdapter",
    "SPDLAdapter",
    "TFDataAdapter",
    "TorchAdapter",
)
