"""Stages that transform records: :class:`ElementOperator`."""

from datarax.operators._element import ElementOperator

__all__ = ["ElementOperator"]
