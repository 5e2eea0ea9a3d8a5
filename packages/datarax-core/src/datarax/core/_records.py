"""Per-record randomness: the keys a pipeline hands its stochastic operators.

A stochastic operator's key for one record depends only on the pipeline's seed,
the operator's identity (its place in the pipeline), the record's epoch and its
offset in the epoch. Batch size, mode (iteration, ``step()`` or ``scan``) and host
count never enter, so the same record gets the same augmentation everywhere.

The pipeline publishes the positions of the batch being built in a context while
its stages run (at trace time); operators that need keys look themselves up in it.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx


class RecordKeyed:
    """Marker for stages that ask the pipeline for per-record keys."""

    #: True on instances that need keys; checked when identities are assigned.
    needs_record_keys: bool = False


@dataclass(frozen=True)
class RecordContext:
    """What stages may know about the batch being built."""

    positions: jax.Array  # int32 [b]: global stream positions of the records
    source_length: int
    op_key: jax.Array  # typed key from which every operator key is derived
    identities: dict[int, tuple]  # id(operator) -> its place in the pipeline
    # Operators that drew keys for this batch: a second draw would repeat the
    # first one's randomness (same identity, same positions).
    keyed: set[int] = field(default_factory=set)

    def keys_for(self, operator: object) -> jax.Array:
        """One typed key per record of the batch, for ``operator``.

        Raises:
            ValueError: for an operator that is not part of the pipeline, or one
                that already drew this batch's keys (one instance used twice).
        """
        identity = self.identities.get(id(operator))
        if identity is None:
            raise ValueError(
                f"{type(operator).__name__} is stochastic but is not a stage of the "
                "pipeline that is building this batch; give it to the pipeline "
                "(stages=, nodes=, or an attribute of a Pipeline subclass)."
            )
        if id(operator) in self.keyed:
            raise ValueError(
                f"the stochastic {type(operator).__name__} at {describe(identity)} "
                "ran twice on one batch: one instance draws the same keys at every "
                f"use, so both uses would apply the same randomness. {ONE_PER_USE}"
            )
        self.keyed.add(id(operator))
        key = jax.random.fold_in(self.op_key, identity_hash(identity))
        epochs = self.positions // self.source_length
        offsets = self.positions % self.source_length

        def record_key(epoch: jax.Array, offset: jax.Array) -> jax.Array:
            return jax.random.fold_in(jax.random.fold_in(key, epoch), offset)

        return jax.vmap(record_key)(epochs, offsets)


def operator_identities(
    groups: Sequence[tuple[tuple, object]], skip: object = None
) -> dict[int, tuple]:
    """``id(operator)`` -> its identity, for every stochastic operator in ``groups``.

    ``groups`` lists ``(prefix, root)`` pairs in a fixed order (stage index, DAG
    node name, ...); each stochastic operator found in graph order under a root
    is identified as ``(*prefix, rank)``, where rank counts the stochastic
    operators met before it under that root. The first place an operator is
    found wins. Sub-graphs under the attribute ``skip`` of a root (the source of
    a pipeline) are left out.

    Raises:
        ValueError: for one stochastic operator instance under two roots (two
            stages or DAG nodes): it would draw the same keys at both.
    """
    identities: dict[int, tuple] = {}
    for prefix, root in groups:
        rank = 0
        for path, node in nnx.iter_graph(root):
            if skip is not None and path[:1] == (skip,):
                continue
            if not (isinstance(node, RecordKeyed) and node.needs_record_keys):
                continue
            first = identities.get(id(node))
            if first is not None and first[:-1] != prefix:
                raise ValueError(
                    f"the stochastic {type(node).__name__} at {describe(prefix)} is "
                    f"the same instance as at {describe(first)}: one instance draws "
                    "the same keys wherever it is used, so both places would apply "
                    f"the same randomness. {ONE_PER_USE}"
                )
            if first is None:
                identities[id(node)] = (*prefix, rank)
                rank += 1
    return identities


ONE_PER_USE = (
    "Build one instance per place (call its constructor again, or nnx.clone(op))."
)


def describe(identity: tuple) -> str:
    """An operator's place for messages: ``stage 1``, ``DAG node 'a'``."""
    kind, *rest = identity
    if kind == "stage":
        return f"stage {rest[0]}"
    if kind == "node":
        return f"DAG node {rest[0]!r}"
    return "the pipeline's own __call__"


def identity_hash(identity: tuple) -> int:
    """A stable 31-bit hash of an operator identity (same in every process)."""
    return zlib.crc32(repr(identity).encode()) & 0x7FFFFFFF


_local = threading.local()


@contextlib.contextmanager
def record_context(context: RecordContext) -> Iterator[None]:
    """Publishes ``context`` to the stages called inside the ``with`` block."""
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(context)
    try:
        yield
    finally:
        stack.pop()


def current_context() -> RecordContext | None:
    """The innermost active record context, or ``None`` outside a pipeline."""
    stack = _local.__dict__.get("stack")
    return stack[-1] if stack else None


def operator_key_data() -> jax.Array | None:
    """The data of the pipeline's operator key, while a pipeline reads or stages.

    For sources that draw per-record randomness themselves (host stages): the
    key every stochastic operator's per-record keys derive from, as raw key
    data (traced inside compiled runs). ``None`` outside a pipeline.
    """
    context = current_context()
    return None if context is None else jax.random.key_data(context.op_key)


def batch_positions(start: jax.Array, batch_size: int) -> jax.Array:
    """Stream positions ``start .. start+batch_size-1`` as int32."""
    return jnp.asarray(start, jnp.int32) + jnp.arange(batch_size, dtype=jnp.int32)
