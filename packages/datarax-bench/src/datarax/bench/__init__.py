"""Benchmarks of datarax against the hand-written floor and peer loaders.

A :class:`Scenario` fixes the work (data, batch size, order, transforms); an
:class:`Adapter` does it with one loader; :func:`run_benchmark` measures every
adapter on every scenario, each in its own process beside the :class:`FloorAdapter`
(the hand-written jitted ``lax.scan`` that is the unit of every ratio), and
:func:`render_report` writes ``report.md`` with tables, charts and interpretation
notes. The ``datarax-bench`` command drives all of it.

Importing this package registers the peer adapters (Grain, tf.data, PyTorch, SPDL,
HF datasets) without importing their libraries; matplotlib is imported only when a
report is rendered.
"""

from datarax.bench._adapter import (
    ADAPTERS as ADAPTERS,
    Adapter as Adapter,
    IteratorAdapter as IteratorAdapter,
    endless as endless,
    register_adapter as register_adapter,
    to_device as to_device,
)
from datarax.bench._compare import (
    RatioChange as RatioChange,
    compare_results as compare_results,
)
from datarax.bench._consumers import (
    Consumer as Consumer,
    batch_sharding as batch_sharding,
    consumer_of as consumer_of,
)
from datarax.bench._datarax import (
    DataraxAdapter as DataraxAdapter,
    DataraxScanAdapter as DataraxScanAdapter,
    build_pipeline as build_pipeline,
)
from datarax.bench._floor import FloorAdapter as FloorAdapter
from datarax.bench._measure import measure_cell as measure_cell
from datarax.bench._numpy_loop import NumPyLoopAdapter as NumPyLoopAdapter
from datarax.bench._report import render_report as render_report
from datarax.bench._results import load_results as load_results
from datarax.bench._rss import classify_rss_comparison as classify_rss_comparison
from datarax.bench._runner import run_benchmark as run_benchmark
from datarax.bench._scenarios import (
    SCENARIOS as SCENARIOS,
    Scenario as Scenario,
    apply_jax as apply_jax,
    apply_numpy as apply_numpy,
    output_spec as output_spec,
    reduce_batch as reduce_batch,
)

# isort: off
# Registered after our own adapters, so lists and reports show Floor and datarax
# first. Each peer module imports its library lazily; a missing one is skipped.
import datarax.bench._peers  # noqa: F401
# isort: on


__all__ = [
    "ADAPTERS",
    "SCENARIOS",
    "Adapter",
    "Consumer",
    "DataraxAdapter",
    "DataraxScanAdapter",
    "FloorAdapter",
    "IteratorAdapter",
    "NumPyLoopAdapter",
    "RatioChange",
    "Scenario",
    "apply_jax",
    "apply_numpy",
    "batch_sharding",
    "build_pipeline",
    "classify_rss_comparison",
    "compare_results",
    "consumer_of",
    "endless",
    "load_results",
    "measure_cell",
    "output_spec",
    "reduce_batch",
    "register_adapter",
    "render_report",
    "run_benchmark",
    "to_device",
]
