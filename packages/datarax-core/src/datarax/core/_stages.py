"""What a stage is: a callable ``batch -> batch``, checked where it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from datarax.core._source import Batch

Stage = Callable[..., Batch]
"""A stage or DAG node: any callable from batches to a batch."""


def stage_name(stage: object) -> str:
    """A stage's name for messages: a function's name, else its class's."""
    if isinstance(stage, nnx.Module):
        return type(stage).__name__
    return getattr(stage, "__name__", type(stage).__name__)


def checked_output(batch: Any, where: str) -> Batch:
    """Refuses a stage output that is not a dict of arrays, naming the stage."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{where} returned a {type(batch).__name__}; stages must return a batch: "
            "a dict of field name -> array."
        )
    return batch  # type: ignore[return-value]


def check_callables(stages: Mapping[str, object] | list, what: str) -> None:
    """Refuses stages or nodes that are not callable, naming each."""
    items = stages.items() if isinstance(stages, Mapping) else enumerate(stages)
    for name, stage in items:
        if not callable(stage):
            raise TypeError(
                f"{what} {name!r} is a {type(stage).__name__}, not a callable "
                "batch -> batch."
            )
