"""Random-access, jit-traceable data sources for datarax pipelines."""

from datarax.sources._disk import StreamingDiskSource
from datarax.sources._eager import EagerSourceBase
from datarax.sources._host import HostSourceBase
from datarax.sources._memory import MemorySource
from datarax.sources._mix import MixDataSourcesNode
from datarax.sources._stream import IterableSourceBase

__all__ = [
    "EagerSourceBase",
    "HostSourceBase",
    "IterableSourceBase",
    "MemorySource",
    "MixDataSourcesNode",
    "StreamingDiskSource",
]
