"""What a stage is: a callable ``batch -> batch``, checked where it returns."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from datarax.core._source import Batch

Stage = Callable[..., Batch]
"""A stage or DAG node: any callable from batches to a batch."""


def stage_name(stage: object) -> str:
    """A stage's name for messages: a function's name, else its class's."""
    if isinstance(stage, nnx.Module):
        return type(stage).__name__
    return getattr(stage, "__name__", type(stage).__name__)


def record_count(batch: Mapping[str, Any]) -> int | None:
    """Records in a batch: the leading size of its first field (None if empty)."""
    for leaf in jax.tree.leaves(dict(batch)):
        shape = np.shape(leaf)
        return int(shape[0]) if shape else None
    return None


def checked_input(batch: Any) -> Batch:
    """Refuses a pipeline called on something other than a batch."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"a pipeline is called on a batch: a dict of field name -> array, "
            f"got {type(batch).__name__}; to get batches, iterate it or call "
            "step()."
        )
    return batch  # type: ignore[return-value]


def run_stages(stages: list, batch: Batch) -> Batch:
    """``batch`` through ``stages`` in order, each checked and named on error."""
    count = record_count(batch)
    for index, stage in enumerate(stages):
        batch = run_stage(stage, f"stage {index} ({stage_name(stage)})", count, batch)
    return batch


def run_stage(stage: Stage, where: str, count: int | None, *inputs: Batch) -> Batch:
    """``stage(*inputs)``, checked; an error inside it says which stage raised.

    Runs at trace time only, so the ``try`` costs nothing per batch.
    """
    try:
        out = stage(*inputs)
    except Exception as err:
        err.add_note(
            f"datarax: raised in {where}, called on {len(inputs)} batch(es): "
            "dicts of field name -> array, traced (no Python float(), int() or "
            "if on their values)."
        )
        raise
    return checked_output(out, where, count)


def checked_output(batch: Any, where: str, count: int | None = None) -> Batch:
    """Refuses a stage output that is not a batch of ``count`` records.

    Checked at trace time (shapes are static), naming the stage and the field.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{where} returned a {type(batch).__name__}; stages must return a batch: "
            "a dict of field name -> array."
        )
    names = [name for name in batch if not isinstance(name, str)]
    if names or not batch:
        raise TypeError(
            f"{where} returned a batch with "
            + (f"non-str field names {names!r}" if names else "no fields")
            + "; a batch is a dict of str field name -> array."
        )
    if count is not None:
        for name, value in batch.items():
            for leaf in jax.tree.leaves(value):
                shape = np.shape(leaf)
                if not shape or shape[0] != count:
                    held = f"{shape[0]} records" if shape else "no record axis"
                    raise ValueError(
                        f"{where} returned field {name!r} with {held} (shape "
                        f"{shape}) for a batch of {count} records; stages must keep "
                        "every record of the batch, in order (filtering and packing "
                        "are not supported yet)."
                    )
    return batch  # type: ignore[return-value]


def check_callables(
    stages: Mapping[str, object] | list,
    what: str,
    arity: Mapping[str, int] | None = None,
) -> None:
    """Refuses stages or nodes that are not callable, naming each.

    ``arity`` gives the number of batches each DAG node is called with (one per
    predecessor); a linear stage is called with one. A callable whose signature
    cannot take them is refused here rather than at its first batch.
    """
    items = stages.items() if isinstance(stages, Mapping) else enumerate(stages)
    for name, stage in items:
        if not callable(stage):
            raise TypeError(
                f"{what} {name!r} is a {type(stage).__name__}, not a callable "
                "batch -> batch."
            )
        # A module class would be instantiated with the batch as its argument.
        if isinstance(stage, type) and issubclass(stage, nnx.Module):
            raise TypeError(
                f"{what} {name!r} is the class {stage.__name__}, not an instance "
                f"of it; write {stage.__name__}(...)."
            )
        count = 1 if arity is None else max(1, arity[name])
        if not takes_positional(stage, count):
            where = f"{what} {name!r}"
            raise TypeError(_arity_message(stage, where, count, arity is not None))


def takes_positional(fn: Callable, count: int) -> bool:
    """Whether ``fn`` can be called with ``count`` positional arguments.

    Callables without a readable signature (some builtins) are given the
    benefit of the doubt.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _arity_message(stage: object, where: str, count: int, in_dag: bool) -> str:
    try:
        signature = f"{stage_name(stage)}{inspect.signature(stage)}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        signature = stage_name(stage)
    if not in_dag:
        return (
            f"{where} is {signature}, but stages are called with one batch: "
            "stage(batch) -> batch. A per-record function fn(record, key) goes "
            "into ElementOperator(fn) (stochastic=True if it uses the key)."
        )
    return (
        f"{where} is {signature}, but it is called with {count} positional "
        f"argument{'s' * (count > 1)}: the outputs of its predecessors in edges "
        "(the source batch when it has none), one argument each."
    )
