"""Branches and merges as ``Pipeline.from_dag`` arguments, not a second wiring system.

:func:`parallel` returns the ``nodes``, ``edges`` and ``sink`` of branches that
each read the batch, merged by one node; :class:`Mean` and :class:`Concatenate`
are the usual merges (an ensemble's average, features side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from datarax.core import Batch


def parallel(
    branches: Mapping[str, Callable[[Batch], Batch]],
    merge: Callable[..., Batch],
    *,
    merge_name: str = "merge",
) -> dict[str, Any]:
    """Branches that each read the source batch, merged by ``merge``.

    Returns the keyword arguments of :meth:`datarax.Pipeline.from_dag` for that
    graph: ``Pipeline.from_dag(source=..., **parallel({...}, Mean()), ...)``.
    ``merge`` receives the branches' batches as positional arguments, in the
    order of ``branches``. Each branch keeps its own place (its node name), so
    stochastic branches draw independently.

    Args:
        branches: node name -> stage, at least two.
        merge: the merging node, ``merge(*batches) -> batch``.
        merge_name: the merging node's name.

    Returns:
        ``{"nodes": ..., "edges": ..., "sink": merge_name}``.

    Raises:
        ValueError: for fewer than two branches, or a branch named ``merge_name``.
        TypeError: for a branch or merge that is not callable.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.sources import MemorySource
        >>> wiring = parallel(
        ...     {"double": lambda b: {"x": b["x"] * 2}, "same": lambda b: b},
        ...     Concatenate(axis=-1),
        ... )
        >>> pipe = Pipeline.from_dag(
        ...     source=MemorySource({"x": np.ones((4, 2), np.float32)}),
        ...     batch_size=2,
        ...     **wiring,
        ... )
        >>> pipe.step()["x"].tolist()
        [[2.0, 2.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0]]
    """
    if not isinstance(branches, Mapping) or len(branches) < 2:
        raise ValueError(
            f"parallel takes a mapping of at least two branches (name -> stage), got "
            f"{branches!r:.80}; a single stage needs no merge: put it in stages=."
        )
    if merge_name in branches:
        raise ValueError(
            f"a branch is named {merge_name!r}, the merging node's name; rename the "
            "branch or pass merge_name=."
        )
    for name, stage in {**branches, merge_name: merge}.items():
        if not callable(stage):
            raise TypeError(
                f"parallel's node {name!r} is a {type(stage).__name__}, not a "
                "stage (a callable batch -> batch, such as an operator)."
            )
    return {
        "nodes": {**branches, merge_name: merge},
        "edges": {**{name: [] for name in branches}, merge_name: list(branches)},
        "sink": merge_name,
    }


class Mean:
    """Merges branches by the mean of each field (an ensemble of augmentations).

    Every branch must serve the same fields, shapes and dtypes; integer fields
    are averaged as float32.
    """

    def __call__(self, *batches: Batch) -> Batch:
        """The field-wise mean of ``batches``."""
        first = _same_fields("Mean", batches)
        return {
            name: jnp.mean(jnp.stack([b[name] for b in batches]), axis=0).astype(
                jnp.result_type(first[name].dtype, jnp.float32)
            )
            for name in first
        }


class Concatenate:
    """Merges branches by concatenating fields along a record axis.

    Args:
        axis: the axis of each record to join on (``-1``: features); the batch
            axis is never joined.
        fields: the fields to join; the others are taken from the first branch.
            ``None`` joins every field.
    """

    def __init__(self, axis: int = -1, fields: Sequence[str] | None = None):
        self.axis = axis
        self.fields = None if fields is None else tuple(fields)

    def __call__(self, *batches: Batch) -> Batch:
        """``batches`` joined field by field along the record ``axis``."""
        first = _same_fields("Concatenate", batches)
        joined = dict(first)
        for name in first if self.fields is None else self.fields:
            if first[name].ndim < 2:
                raise ValueError(
                    f"Concatenate joins records along their axis {self.axis}, but "
                    f"field {name!r} holds one number per record; name the fields "
                    "to join with fields=(...) (the others are taken from the "
                    "first branch)."
                )
            axis = self.axis if self.axis < 0 else self.axis + 1
            joined[name] = jnp.concatenate([b[name] for b in batches], axis=axis)
        return joined


def _same_fields(who: str, batches: tuple[Batch, ...]) -> Batch:
    """The first batch, once every batch has its fields (a ValueError otherwise)."""
    first = batches[0]
    for index, batch in enumerate(batches[1:], start=1):
        if set(batch) != set(first):
            raise ValueError(
                f"{who} merges branches field by field, but branch {index} serves "
                f"fields {sorted(batch)} and branch 0 {sorted(first)}; make the "
                "branches serve the same fields (or merge with your own function)."
            )
    return first
