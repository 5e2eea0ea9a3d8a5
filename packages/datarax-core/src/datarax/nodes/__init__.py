"""DAG wiring for :meth:`datarax.Pipeline.from_dag`."""

from datarax.nodes._dag import validate_dag

__all__ = ["validate_dag"]
