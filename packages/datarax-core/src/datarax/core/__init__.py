"""The core of datarax: the data model, :class:`Pipeline` and its compiled runs."""

from datarax.core._pipeline import Pipeline, StreamVar
from datarax.core._source import Batch, DataSource, DataVar, ElementSpec

__all__ = ["Batch", "DataSource", "DataVar", "ElementSpec", "Pipeline", "StreamVar"]
