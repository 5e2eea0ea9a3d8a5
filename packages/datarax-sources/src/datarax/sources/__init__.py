"""Random-access, jit-traceable data sources for datarax pipelines."""

from typing import Any

from datarax.sources._disk import StreamingDiskSource
from datarax.sources._eager import EagerSourceBase
from datarax.sources._folder import ImageFolderSource
from datarax.sources._host import HostSourceBase
from datarax.sources._hostmap import HostMapSource
from datarax.sources._hostpool import HostStats
from datarax.sources._hostrecords import HostRecordSource
from datarax.sources._hostwork import HostStageError
from datarax.sources._memory import MemorySource
from datarax.sources._mix import MixDataSourcesNode
from datarax.sources._order import OrderedSource

__all__ = [
    "EagerSourceBase",
    "HostMapSource",
    "HostRecordSource",
    "HostSourceBase",
    "HostStageError",
    "HostStats",
    "ImageFolderSource",
    "MemorySource",
    "MixDataSourcesNode",
    "OrderedSource",
    "StreamingDiskSource",
]


def __getattr__(name: str) -> Any:
    # Moved names keep working for one release, with a warning naming the new home.
    if name == "IterableSourceBase":
        import warnings

        from datarax.core import IterableSource

        warnings.warn(
            "datarax.sources.IterableSourceBase moved to datarax.core.IterableSource "
            "(datarax 0.2); implement __len__ instead of setting self.length.",
            DeprecationWarning,
            stacklevel=2,
        )
        return IterableSource
    raise AttributeError(f"module 'datarax.sources' has no attribute {name!r}")
