"""``RecordOperator``: the base of operators that transform each record on its own."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from datarax.core._records import RecordKeyed, current_context
from datarax.core._source import Batch


class RecordOperator(nnx.Module, RecordKeyed):
    """Base for stages that transform every record of a batch on its own.

    Subclasses implement :meth:`apply` on one record (a dict of arrays without
    the batch axis); ``__call__`` maps it over the batch with ``jax.vmap``. A
    stochastic operator's ``key`` is the record's own key from the pipeline
    (seed, the operator's place, epoch, position), so its randomness does not
    depend on the batch size, the mode or the host count.

    Args:
        stochastic: whether :meth:`apply` draws from its key.
    """

    def __init__(self, *, stochastic: bool):
        self.stochastic = stochastic
        self.needs_record_keys = stochastic

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """The operator on one record; ``key`` is ``None`` unless stochastic."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply.")

    def __call__(self, batch: Batch) -> Batch:
        """Applies :meth:`apply` to every record of ``batch``."""
        if not self.stochastic:
            return jax.vmap(lambda record: self.apply(record, None))(batch)
        return jax.vmap(self.apply)(batch, record_keys(self))


def record_keys(operator: object) -> jax.Array:
    """One key per record of the batch being built, for ``operator``.

    Raises:
        ValueError: outside a pipeline (the pipeline supplies the keys).
    """
    context = current_context()
    if context is None:
        raise ValueError(
            f"the stochastic {type(operator).__name__} gets its per-record keys from "
            "the Pipeline that runs it; call it as a pipeline stage (stages=, "
            "nodes=, or an attribute of a Pipeline subclass), not directly."
        )
    return context.keys_for(operator)


def field_of(record: Batch, field: str, owner: str) -> jax.Array:
    """``record[field]``, or a ``KeyError`` naming the fields the record has."""
    if field not in record:
        raise KeyError(
            f"{owner} works on field {field!r}, but the records have {sorted(record)}; "
            "name the field with field=."
        )
    return record[field]


def uniform(key: jax.Array, low: float = -1.0, high: float = 1.0) -> jax.Array:
    """One float32 uniform draw from ``[low, high)``."""
    return jax.random.uniform(key, (), jnp.float32, low, high)


def check_magnitude(owner: str, name: str, value: float) -> float:
    """Refuses a negative or non-finite magnitude (a max delta, a std, an angle)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}.")
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{owner}: {name} must be a finite number >= 0, got {value!r}."
        )
    return float(value)


def check_probability(owner: str, name: str, value: float) -> float:
    """Refuses a probability outside ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}.")
    if not 0 <= value <= 1:
        raise ValueError(
            f"{owner}: {name} is a probability, between 0 and 1; got {value!r}."
        )
    return float(value)


def check_size(owner: str, name: str, value: int) -> int:
    """Refuses anything but a positive int size."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}.")
    return int(value)


def magnitude(value: float) -> nnx.Param:
    """A learnable float32 scalar."""
    return nnx.Param(jnp.asarray(value, jnp.float32))
