"""Datarax: data pipelines for JAX and Flax NNX whose loading compiles into your step.

A :class:`Pipeline` is an ``nnx.Module`` that reads a :class:`DataSource`, runs
stages and serves batches by Python iteration, by :meth:`Pipeline.step` inside your
own ``nnx.jit`` function, or by :meth:`Pipeline.scan`, which compiles a whole run of
training steps, data loading included, into one XLA program. All three serve the
same record stream.
"""

# The datarax namespace is shared by four distributions (core, sources,
# integrations, bench). In an editable install each lives in its own src/ tree;
# extend_path lets this package see the sub-packages of the others.
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from datarax.core import (  # noqa: E402
    Batch,
    DataSource,
    DataVar,
    ElementSpec,
    IterableSource,
    Pipeline,
    PlannedSource,
    SourceBase,
)

try:
    __version__ = version("datarax-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Batch",
    "DataSource",
    "DataVar",
    "ElementSpec",
    "IterableSource",
    "Pipeline",
    "PlannedSource",
    "SourceBase",
    "__version__",
]
