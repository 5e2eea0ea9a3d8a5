"""Benchmarks of datarax against the hand-written floor and peer loaders.

The ``datarax-bench`` command is the entry point; scenarios, adapters, the runner
and reports arrive with the benchmarking issue.
"""

__all__: list[str] = []
