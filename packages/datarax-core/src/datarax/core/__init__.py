"""The core of datarax: the data model, the source protocol, :class:`Pipeline`."""

from datarax.core._dtypes import convert_for_jax, jax_dtype
from datarax.core._iterable import IterableSource
from datarax.core._keys import as_key, fold_in_host
from datarax.core._pipeline import Pipeline, StreamVar
from datarax.core._prefetch import at_exit
from datarax.core._records import operator_key_data
from datarax.core._scan import default_unroll
from datarax.core._source import (
    Batch,
    DataSource,
    DataVar,
    ElementSpec,
    PlannedSource,
    SourceBase,
    describe_source,
)

__all__ = [
    "Batch",
    "DataSource",
    "DataVar",
    "ElementSpec",
    "IterableSource",
    "Pipeline",
    "PlannedSource",
    "SourceBase",
    "StreamVar",
    "as_key",
    "at_exit",
    "convert_for_jax",
    "default_unroll",
    "describe_source",
    "fold_in_host",
    "jax_dtype",
    "operator_key_data",
]
