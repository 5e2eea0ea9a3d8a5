"""DAG wiring for :meth:`datarax.Pipeline.from_dag`."""

from datarax.nodes._dag import Dag, validate_dag

__all__ = ["Dag", "validate_dag"]
