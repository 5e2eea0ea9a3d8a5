"""Record order shared by the sources: natural, or a permutation per epoch.

Shuffled epoch ``e`` of a source of ``length`` records lists the record indices
sorted by a keyed hash: ``argsort(h(i))`` with ``h`` a bijection of 32-bit integers
seeded by the shuffle key and the epoch. It is determined by the key and the epoch
alone, so any epoch can be recomputed on its own (exact resume, any batch size),
and every source that shuffles uses these functions, so an eager, a disk and an
ArrayRecord source over the same records serve the same stream.

The same integer arithmetic runs in NumPy on the host and in ``jax.numpy`` inside
a trace, bit for bit: pipelines make each epoch's table once on the host (a NumPy
sort of 10,000 hashes takes 0.5 ms where ``jax.random.permutation`` took 3.3 ms on
XLA:CPU, 0.45 s for 1,000,000) and hand it to their compiled runs; a traced
``get_batch_at`` computes it in-graph. Being our own arithmetic, the order does not
change when JAX or NumPy change their random number generators.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from datarax.core import Batch, PlannedSource


class OrderPlan(NamedTuple):
    """The permutations of the epochs a run touches, laid end to end."""

    table_start: jax.Array  # stream position of the table's first entry
    table: jax.Array  # int32 [epochs * length]


HostOrderPlan = tuple[np.ndarray, tuple[jax.Array, ...]]
"""(stream position of the first table, per-epoch tables) made on the host."""


def _epochs_touched(num_records: int, length: int) -> int:
    """How many epochs any ``num_records`` consecutive positions can touch."""
    return (length + num_records - 2) // length + 1


_GOLDEN = 0x9E3779B9
_MASK = 0xFFFFFFFF


def _mix(x: Any) -> Any:
    """A bijection of uint32 (Wellons' lowbias32): NumPy, jax or Python ints."""
    if isinstance(x, int):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & _MASK
        x ^= x >> 15
        x = (x * 0x846CA68B) & _MASK
        return x ^ (x >> 16)
    # Typed constants: a Python int above 2**31 is no valid weak-typed jax value.
    uint32 = jnp.uint32 if isinstance(x, jax.Array) else np.uint32
    x = x ^ (x >> uint32(16))
    x = x * uint32(0x7FEB352D)
    x = x ^ (x >> uint32(15))
    x = x * uint32(0x846CA68B)
    return x ^ (x >> uint32(16))


def mix_bits(seed: jax.Array, values: jax.Array) -> jax.Array:
    """A keyed hash of uint32 ``values`` (traceable), for arrangements."""
    return _mix(_mix(values ^ seed) + jnp.uint32(_GOLDEN))


def _sort_keys(indices: Any, seed_a: Any, seed_b: Any) -> Any:
    """Distinct uint32 sort keys of ``indices`` (a bijection, so no ties)."""
    return _mix(_mix(indices ^ seed_a) ^ seed_b)


def epoch_table_host(key_data: np.ndarray, epoch: int, length: int) -> np.ndarray:
    """Epoch ``epoch``'s permutation of ``range(length)``, computed with NumPy."""
    words = [int(w) for w in np.asarray(key_data, np.uint32).ravel()]
    epoch &= _MASK
    seed_a = _mix(words[0] ^ _mix((epoch + _GOLDEN) & _MASK))
    seed_b = _mix(words[-1] ^ _mix(epoch ^ 0x85EBCA6B))
    keys = _sort_keys(
        np.arange(length, dtype=np.uint32), np.uint32(seed_a), np.uint32(seed_b)
    )
    return np.argsort(keys).astype(np.int32)


def host_indices(
    positions: np.ndarray, length: int, key_data: np.ndarray | None
) -> np.ndarray:
    """Record index (int64) at each stream position, computed on the host.

    Natural order without a key; else each epoch's permutation
    (:func:`epoch_table_host`, one table per (key, epoch) cached).
    """
    positions = np.asarray(positions, np.int64)
    if key_data is None:
        return positions % length
    epochs, offsets = np.divmod(positions, length)
    out = np.empty_like(positions)
    key = np.asarray(key_data, np.uint32).tobytes()
    for epoch in np.unique(epochs).tolist():
        chosen = epochs == epoch
        out[chosen] = _host_table(key, epoch, length)[offsets[chosen]]
    return out


@functools.lru_cache(maxsize=8)
def _host_table(key: bytes, epoch: int, length: int) -> np.ndarray:
    table = epoch_table_host(np.frombuffer(key, np.uint32), epoch, length)
    table = table.astype(np.int64)
    table.flags.writeable = False  # shared by every caller of the cache
    return table


def epoch_table(key: jax.Array, epoch: jax.Array, length: int) -> jax.Array:
    """The same permutation as :func:`epoch_table_host`, traceable."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    epoch = jnp.asarray(epoch).astype(jnp.uint32)
    seed_a = _mix(words[0] ^ _mix(epoch + jnp.uint32(_GOLDEN)))
    seed_b = _mix(words[-1] ^ _mix(epoch ^ jnp.uint32(0x85EBCA6B)))
    keys = _sort_keys(jnp.arange(length, dtype=jnp.uint32), seed_a, seed_b)
    return jnp.argsort(keys).astype(jnp.int32)


@functools.lru_cache(maxsize=8)
def _device_table(key_bytes: bytes, epoch: int, length: int) -> jax.Array:
    """One epoch's permutation on the device, reused by every run in the epoch."""
    key_data = np.frombuffer(key_bytes, np.uint32)
    return jax.device_put(epoch_table_host(key_data, epoch, length))


def host_order_plan(
    start: int, num_records: int, length: int, key_data: np.ndarray | None
) -> HostOrderPlan | None:
    """The permutations a run needs, from a cache of one table per epoch.

    The same tables :func:`plan_order` computes inside a trace, made once per
    (key, epoch) on the host side of a pipeline and passed into its runs.
    """
    if key_data is None:
        return None
    first = start // length
    key_bytes = np.asarray(key_data, np.uint32).tobytes()
    tables = tuple(
        _device_table(key_bytes, epoch, length)
        for epoch in range(first, first + _epochs_touched(num_records, length))
    )
    return np.asarray(first * length, np.int32), tables


def plan_order(
    start: jax.Array,
    num_records: int,
    length: int,
    key: jax.Array | None,
    host_plan: HostOrderPlan | None = None,
) -> OrderPlan | None:
    """Permutations for stream positions ``start .. start+num_records-1``.

    ``None`` in natural order. Computed once per compiled run, before its loop,
    from ``host_plan`` when the pipeline made one.
    """
    if key is None:
        return None
    if host_plan is not None:
        table_start, tables = host_plan
        return OrderPlan(jnp.asarray(table_start), jnp.concatenate(tables))
    num_epochs = _epochs_touched(num_records, length)
    first = start // length
    epochs = first + jnp.arange(num_epochs, dtype=jnp.int32)
    # One table per epoch, each from the key and the epoch alone.
    tables = jax.vmap(lambda e: epoch_table(key, e, length))(epochs)
    return OrderPlan(first * length, tables.reshape(-1))


def record_indices(
    plan: OrderPlan | None, start: jax.Array, count: int, length: int
) -> jax.Array:
    """Record index (int32 ``[count]``) at stream positions ``start...``."""
    if plan is None:
        return (start + jnp.arange(count, dtype=jnp.int32)) % length
    return jax.lax.dynamic_slice(plan.table, (start - plan.table_start,), (count,))


def position_indices(
    plan: OrderPlan | None, positions: jax.Array, length: int
) -> jax.Array:
    """Record index at each of ``positions`` (any stream positions in the plan).

    Positions outside the plan's window clip to its edge: callers that read more
    positions than they keep (the mixer) discard those records.
    """
    if plan is None:
        return positions % length
    return jnp.take(plan.table, positions - plan.table_start, mode="clip")


class OrderedSource(PlannedSource[OrderPlan | None, HostOrderPlan | None]):
    """Base for sources of ``length`` records served in the shared order.

    Implements the planning side of the source protocol: natural order, or the
    per-epoch permutations of this module, made on the host once per epoch when
    a pipeline drives the source and in-graph otherwise. Subclasses set
    ``self.length`` and implement :meth:`gather`; ``read`` and ``read_at`` look
    the records' indices up in the plan and gather them.
    """

    supports_shuffle = True
    length: int

    def host_plan(
        self, start: int, num_records: int, key_data: np.ndarray | None
    ) -> HostOrderPlan | None:
        """The permutations of the epochs the run touches, made on the host."""
        return host_order_plan(start, num_records, self.length, key_data)

    def plan(
        self,
        start: jax.Array,
        num_records: int,
        key: jax.Array | None,
        host_plan: HostOrderPlan | None = None,
    ) -> OrderPlan | None:
        """The order of the run's positions (``None`` in natural order)."""
        return plan_order(start, num_records, self.length, key, host_plan)

    def read(
        self,
        plan: OrderPlan | None,
        start: jax.Array,
        batch_size: int,
        key: jax.Array | None,
    ) -> Batch:
        """The batch at ``start``: its record indices looked up, then gathered."""
        del key  # the plan already holds the order the key chose
        return self.gather(record_indices(plan, start, batch_size, self.length))

    def read_at(
        self, plan: OrderPlan | None, positions: jax.Array, key: jax.Array | None
    ) -> Batch:
        """The records at arbitrary stream ``positions``: one lookup, one gather."""
        del key
        return self.gather(position_indices(plan, positions, self.length))

    def gather(self, index: jax.Array) -> Batch:
        """The records at record indices ``index`` (int32, any shape; traced)."""
        raise NotImplementedError(f"{type(self).__name__} must implement gather.")
