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
from dataclasses import dataclass

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

    def keys_for(self, operator: object) -> jax.Array:
        """One typed key per record of the batch, for ``operator``."""
        identity = self.identities.get(id(operator))
        if identity is None:
            raise ValueError(
                f"{type(operator).__name__} is stochastic but is not a stage of the "
                "pipeline that is building this batch; give it to the pipeline "
                "(stages=, nodes=, or an attribute of a Pipeline subclass)."
            )
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
    """
    identities: dict[int, tuple] = {}
    for prefix, root in groups:
        rank = 0
        for path, node in nnx.iter_graph(root):
            if skip is not None and path[:1] == (skip,):
                continue
            if (
                isinstance(node, RecordKeyed)
                and node.needs_record_keys
                and id(node) not in identities
            ):
                identities[id(node)] = (*prefix, rank)
                rank += 1
    return identities


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


def batch_positions(start: jax.Array, batch_size: int) -> jax.Array:
    """Stream positions ``start .. start+batch_size-1`` as int32."""
    return jnp.asarray(start, jnp.int32) + jnp.arange(batch_size, dtype=jnp.int32)
