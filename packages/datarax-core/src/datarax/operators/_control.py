"""Control operators: apply with probability, one of several, a sequence.

Each wraps stages (callables ``batch -> batch``, usually operators) and is itself
a stage, so it nests. Branching, parallel and merging patterns are DAGs: wire
them with :meth:`datarax.Pipeline.from_dag`, whose nodes may be any of these.
Stochastic operators inside keep their own per-record keys (each has its own
place in the pipeline); the choices made here draw from this operator's keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core._records import RecordKeyed
from datarax.core._source import Batch
from datarax.core._stages import check_callables, stage_name
from datarax.operators._record import check_probability, record_keys


def _checked_ops(owner: str, operators: Any) -> list:
    if callable(operators) or not isinstance(operators, Sequence) or not operators:
        raise TypeError(
            f"{owner} takes a non-empty list of operators, got {operators!r:.80}."
        )
    operators = list(operators)
    check_callables(operators, f"{owner} operator")
    return operators


def _same_records(owner: str, op: object, before: Batch, after: Batch) -> None:
    """Refuses an operator whose output records differ in fields, shapes or dtypes.

    Records it does not apply to keep their input form, so both must agree.
    """

    def form(batch: Batch) -> dict:
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in batch.items()}

    if form(before) != form(after):
        raise ValueError(
            f"{owner}: {stage_name(op)} changes the records from {form(before)} to "
            f"{form(after)}; a record it is not applied to keeps its input form, so "
            "it must keep every field's shape and dtype (resize or cast in a stage "
            "of its own)."
        )


def _select(mask: jax.Array, chosen: Batch, other: Batch) -> Batch:
    """Per record: ``chosen`` where ``mask``, else ``other``."""
    return {
        k: jnp.where(mask.reshape(-1, *[1] * (v.ndim - 1)), chosen[k], v)
        for k, v in other.items()
    }


class Probabilistic(nnx.Module, RecordKeyed):
    """Applies ``operator`` to each record with probability ``p``.

    The operator runs on the whole batch and each record keeps its result with
    probability ``p`` (drawn from the record's key), so the operator must keep
    every field's shape and dtype. ``p`` is not learnable.

    Args:
        operator: a stage ``batch -> batch``.
        p: the probability of applying it to a record.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.operators import HorizontalFlip
        >>> from datarax.sources import MemorySource
        >>> pipe = Pipeline(source=MemorySource({"image": np.ones((4, 8, 8, 3))}),
        ...                 stages=[Probabilistic(HorizontalFlip(p=1.0), p=0.5)],
        ...                 batch_size=4)
        >>> pipe.step()["image"].shape
        (4, 8, 8, 3)
    """

    def __init__(self, operator: Any, p: float):
        if not callable(operator) or isinstance(operator, type):
            raise TypeError(
                "Probabilistic takes one operator, a callable batch -> batch (an "
                f"instance, not a class), got {operator!r:.60}."
            )
        self.operator = operator
        self.p = check_probability(type(self).__name__, "p", p)
        self.needs_record_keys = True

    def __call__(self, batch: Batch) -> Batch:
        """The batch with the operator applied to a random subset of records."""
        keys = record_keys(self)
        apply = jax.vmap(lambda key: jax.random.bernoulli(key, self.p))(keys)
        out = self.operator(batch)
        _same_records(type(self).__name__, self.operator, batch, out)
        return _select(apply, out, batch)


class Select(nnx.Module, RecordKeyed):
    """Applies one of ``operators`` to each record, chosen by ``weights``.

    Every operator runs on the whole batch; each record keeps the result of the
    one drawn for it (from the record's key). The operators must produce the
    same fields, shapes and dtypes. Weights are not learnable.

    Args:
        operators: stages ``batch -> batch``.
        weights: one non-negative weight per operator, of positive sum (need not
            sum to 1); equal by default.
    """

    def __init__(
        self, operators: Sequence[Any], weights: Sequence[float] | None = None
    ):
        name = type(self).__name__
        self.operators = nnx.List(_checked_ops(name, operators))
        count = len(self.operators)
        if weights is None:
            weights = [1.0] * count
        shown = (
            np.asarray(weights).tolist() if isinstance(weights, np.ndarray) else weights
        )
        try:
            values = [float(w) for w in np.asarray(weights, np.float64).ravel()]
        except (TypeError, ValueError):
            values = []
        if (
            len(values) != count
            or not all(w >= 0 and math.isfinite(w) for w in values)
            or sum(values) <= 0
        ):
            raise ValueError(
                f"{name}: weights must be {count} finite numbers >= 0 (one per "
                f"operator) with a positive sum, got {shown!r}."
            )
        total = sum(values)
        self.weights = tuple(w / total for w in values)
        self.needs_record_keys = True

    def __call__(self, batch: Batch) -> Batch:
        """The batch with each record transformed by its own choice of operator."""
        keys = record_keys(self)
        logits = jnp.log(jnp.asarray(self.weights, jnp.float32))
        choice = jax.vmap(lambda key: jax.random.categorical(key, logits))(keys)
        outs = [op(batch) for op in self.operators]
        for op, out in zip(self.operators, outs, strict=True):
            _same_records(type(self).__name__, op, outs[0], out)
        result = outs[0]
        for index, out in enumerate(outs[1:], start=1):
            result = _select(choice == index, out, result)
        return result


class Sequential(nnx.Module):
    """Applies ``operators`` in order: one stage made of several.

    Args:
        operators: stages ``batch -> batch``.
    """

    def __init__(self, operators: Sequence[Any]):
        self.operators = nnx.List(_checked_ops(type(self).__name__, operators))

    def __call__(self, batch: Batch) -> Batch:
        """The batch through every operator in turn."""
        for op in self.operators:
            batch = op(batch)
        return batch
