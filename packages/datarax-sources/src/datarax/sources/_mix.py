"""``MixDataSourcesNode``: several sources drawn in proportion to weights."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core import (
    Batch,
    DataSource,
    ElementSpec,
    IterableSource,
    PlannedSource,
    SourceBase,
    describe_source,
    fold_in_host,
)
from datarax.sources._order import mix_bits

#: Positions per block; every block holds a fixed quota of each source.
DEFAULT_BLOCK_SIZE = 1000


class MixPlan(NamedTuple):
    """Block tables for the positions of a run, and each child's own plan."""

    table_start: jax.Array  # stream position of the tables' first entry
    source: jax.Array  # int32 [blocks * block_size]: which child serves a position
    rank: jax.Array  # int32: how many earlier positions of its block drew that child
    children: tuple  # each child's plan for the child positions the run reads


def _quotas(weights: Sequence[float], block_size: int) -> tuple[int, ...]:
    """Largest-remainder rounding of ``weights`` to integers summing to a block."""
    total = float(sum(weights))
    exact = [w / total * block_size for w in weights]
    quotas = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: quotas[i] - exact[i])
    for i in by_remainder[: block_size - sum(quotas)]:
        quotas[i] += 1
    return tuple(quotas)


def _safe_block_size(weights: Sequence[float], limit: int = 65_535) -> int | None:
    """The least ``n`` such that every block size ``n .. limit`` draws every child.

    Computed exactly as :func:`_quotas` rounds (the same float operations, the
    same stable tie-break), for all block sizes at once: largest-remainder
    rounding is not monotone in the block size, so a size that works does not
    vouch for the larger ones. ``None`` when even ``limit`` starves a child.
    Scans down from ``limit`` in slices, to bound memory for many sources.
    """
    w = np.asarray(weights, np.float64)[:, None]
    total = float(sum(weights))  # Python's sum, as _quotas adds them
    positive = w > 0
    ranks = np.arange(len(weights))[:, None]
    top = limit
    while top >= 1:
        sizes = np.arange(max(1, top - 4095), top + 1, dtype=np.float64)
        exact = w / total * sizes
        floors = np.floor(exact)
        order = np.argsort(floors - exact, axis=0, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(ranks, order.shape), axis=0)
        quotas = floors + (rank < sizes - floors.sum(axis=0))
        starves = ((quotas < 1) & positive).any(axis=0)
        if starves.any():
            last_bad = int(sizes[np.flatnonzero(starves)[-1]])
            return None if last_bad == limit else last_bad + 1
        top = int(sizes[0]) - 1
    return 1


def _check_quotas(
    weights: Sequence[float], block_size: int, quotas: Sequence[int]
) -> None:
    """Refuses a positive weight whose quota per block rounds to 0.

    Every block holds each child's quota, so a quota of 0 would leave that child
    out of the whole stream without a word.
    """
    starved = [
        i
        for i, (weight, quota) in enumerate(zip(weights, quotas, strict=True))
        if weight > 0 and quota == 0
    ]
    if not starved:
        return
    total = float(sum(weights))
    named = ", ".join(
        f"sources[{i}] (weight {weights[i]:g}, share {weights[i] / total:.3g})"
        for i in starved
    )
    one = len(starved) == 1
    fixes = []
    safe = _safe_block_size(weights)
    if safe is not None:
        fixes.append(f"use block_size={safe} or more")
    raised = _raised_weight(weights, block_size, starved[0]) if one else None
    if raised is not None:
        fixes.append(f"raise its weight to at least {raised:g}")
    elif block_size >= sum(w > 0 for w in weights):  # else too few positions
        fixes.append(f"raise {'its weight' if one else 'their weights'}")
    them = "it" if one else "them"
    fixes.append(f"give {them} weight 0 to leave {them} out")
    raise ValueError(
        f"MixDataSourcesNode: {named} would never be drawn: a block holds "
        f"block_size={block_size} positions, and the quota of each block for "
        f"{'this weight' if one else 'these weights'} rounds to 0 of them. Fix: "
        f"{'; or '.join(fixes)}."
    )


def _raised_weight(
    weights: Sequence[float], block_size: int, index: int
) -> float | None:
    """A weight for ``weights[index]`` that draws every source at ``block_size``.

    A share of at least ``1 / block_size`` is a quota of at least 1; the value is
    rounded up to 3 digits for the message and checked with :func:`_quotas`,
    since a larger share for one source can round another one's quota to 0.
    """
    if block_size < 2:
        return None
    need = (float(sum(weights)) - weights[index]) / (block_size - 1)
    shown = float(f"{need:.3g}")
    if shown < need:
        shown = float(f"{need * 1.001:.3g}")
    trial = [shown if i == index else w for i, w in enumerate(weights)]
    quotas = _quotas(trial, block_size)
    if any(w > 0 and q == 0 for w, q in zip(trial, quotas, strict=True)):
        return None
    return shown


class MixDataSourcesNode(PlannedSource[MixPlan, tuple]):
    """A source that draws each stream position from one of several sources.

    Positions are grouped in blocks of ``block_size``; every block holds a fixed
    quota of each source (its weight's share, rounded), arranged by a per-block
    permutation of the positions. Child ``i`` therefore serves exactly
    ``quota_i`` positions of every block, so its own stream position at any mix
    position is known in O(block) work: block ``b`` reads child positions
    ``b * quota_i ..`` in order. Each child is read in its own stream order
    (shuffled by its own per-epoch permutation when the pipeline shuffles), so
    every record of a child appears once per the child's own epoch of draws, never
    with replacement. Proportions hold to the quota rounding (at most
    ``0.5 / block_size``) over whole blocks.

    ``get_batch_at`` is traceable, built with ``jax.vmap`` over positions and
    ``jax.lax.switch`` over sources, and deterministic in ``(start, key)``
    (``key=None`` uses a fixed key for the arrangement and natural order in the
    children). ``len(mix)`` is the sum of the children's lengths, so one epoch of
    the mix is that many positions (``num_epochs`` counts these).

    Args:
        sources: the sources to mix; all with the same ``element_spec``.
        weights: one non-negative weight per source, with a positive sum.
        block_size: positions per block (at most 65,535).

    Raises:
        ValueError: for sources with different element specs (naming the fields),
            negative, non-finite or zero-sum weights, weights and sources of
            different lengths, or a positive weight too small to get a position
            in a block of ``block_size`` (that source would never be drawn; the
            message gives the least block size that draws every source).

    Examples:
        >>> import numpy as np
        >>> from datarax.sources import MemorySource
        >>> a = MemorySource({"x": np.zeros(6, np.int32)})
        >>> b = MemorySource({"x": np.ones(4, np.int32)})
        >>> mix = MixDataSourcesNode([a, b], weights=[3, 1], block_size=4)
        >>> len(mix), mix.get_batch_at(0, 8)["x"].sum().item()
        (10, 2)
    """

    def __init__(
        self,
        sources: Sequence[DataSource],
        weights: Sequence[float],
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ):
        if isinstance(sources, SourceBase) or not isinstance(sources, Sequence):
            raise TypeError(
                "MixDataSourcesNode takes a list of sources, got "
                f"{type(sources).__name__}; write MixDataSourcesNode([a, b], "
                "[weight_a, weight_b])."
            )
        sources = list(sources)
        if not sources:
            raise ValueError("MixDataSourcesNode needs at least one source.")
        for index, source in enumerate(sources):
            if isinstance(source, IterableSource):
                raise TypeError(
                    f"MixDataSourcesNode: sources[{index}] cannot be mixed; "
                    + source.needs_random_access("mixing")
                )
            if not isinstance(source, DataSource):
                raise TypeError(
                    f"MixDataSourcesNode: sources[{index}] is a "
                    f"{type(source).__name__}, not a datarax DataSource."
                )
        weights = _checked_weights(weights, len(sources))
        if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
            raise TypeError(
                f"MixDataSourcesNode: block_size must be a Python int, got "
                f"{block_size!r}."
            )
        block_size = int(block_size)
        if not 1 <= block_size <= 65_535:
            raise ValueError(f"block_size must be in 1..65535, got {block_size}.")
        _check_specs(sources)
        self.sources = nnx.List(sources)
        self.weights = tuple(weights)
        self.block_size = block_size
        self.quotas = _quotas(weights, block_size)
        _check_quotas(self.weights, block_size, self.quotas)
        # Multipliers coprime to the block size: j -> a*j + c (mod block) permutes.
        self._units = tuple(
            u for u in range(1, max(2, block_size)) if math.gcd(u, block_size) == 1
        ) or (1,)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    @property
    def supports_shuffle(self) -> bool:  # type: ignore[override]
        """Whether every child can shuffle."""
        return all(s.supports_shuffle for s in self.sources)

    @property
    def reads_on_host(self) -> bool:  # type: ignore[override]
        """Whether any child reads on the host (then so does the mix)."""
        return any(s.reads_on_host for s in self.sources)

    @property
    def element_spec(self) -> ElementSpec:
        """The children's (common) element spec."""
        return self.sources[0].element_spec

    def fingerprint(self) -> str:
        """Weights, block size and every child's own description, in order."""
        children = ", ".join(describe_source(child) for child in self.sources)
        return (
            f"MixDataSourcesNode(weights={list(self.weights)}, "
            f"block_size={self.block_size}, sources=[{children}])"
        )

    def _blocks(self, num_records: int) -> int:
        """How many blocks any ``num_records`` consecutive positions can touch."""
        return (self.block_size + num_records - 2) // self.block_size + 1

    def _child_keys(self, key: jax.Array | None) -> list[jax.Array | None]:
        if key is None:
            return [None] * len(self.sources)
        return [jax.random.fold_in(key, i + 1) for i in range(len(self.sources))]

    def steps_per_read(self, batch_size: int) -> int:
        """The most batches per read any child asks for."""
        return max(s.steps_per_read(batch_size) for s in self.sources)

    def host_plan(
        self, start: int, num_records: int, key_data: np.ndarray | None
    ) -> tuple:
        """Each child's host plan for the child positions the run reads."""
        blocks = self._blocks(num_records)
        first = start // self.block_size
        keys = [  # the children's keys, as _child_keys derives them in-graph
            None if key_data is None else fold_in_host(key_data, i + 1)
            for i in range(len(self.sources))
        ]
        return tuple(
            child.host_plan(first * q, max(1, blocks * q), k)
            for child, q, k in zip(self.sources, self.quotas, keys, strict=True)
        )

    def plan(
        self,
        start: jax.Array,
        num_records: int,
        key: jax.Array | None,
        host_plan: tuple | None = None,
    ) -> MixPlan:
        """Which child serves each position of the run, and the children's plans."""
        block_size, count = self.block_size, len(self.sources)
        blocks = self._blocks(num_records)
        first = start // block_size
        block_ids = (first + jnp.arange(blocks, dtype=jnp.int32)).astype(jnp.uint32)
        words = (
            jnp.zeros(2, jnp.uint32)
            if key is None
            else jax.random.key_data(jax.random.fold_in(key, 0)).reshape(-1)
        ).astype(jnp.uint32)
        # Per-block permutation j -> (a*j + c) mod block, a a unit mod block: O(1)
        # per position and no sort, with a and c hashed from the key and block.
        units = jnp.asarray(self._units, jnp.uint32)
        a = units[mix_bits(words[0], block_ids) % jnp.uint32(len(self._units))]
        c = mix_bits(words[-1], block_ids ^ jnp.uint32(0x5BD1E995))
        c = c % jnp.uint32(block_size)
        j = jnp.arange(block_size, dtype=jnp.uint32)
        slot = (a[:, None] * j[None, :] + c[:, None]) % jnp.uint32(block_size)
        ends = jnp.asarray(np.cumsum(self.quotas), jnp.uint32)
        source = jnp.searchsorted(ends, slot, side="right").astype(jnp.int32)
        onehot = source[..., None] == jnp.arange(count, dtype=jnp.int32)
        drawn = jnp.cumsum(onehot, axis=1, dtype=jnp.int32)  # draws so far, per child
        rank = jnp.take_along_axis(drawn, source[..., None], axis=2)[..., 0] - 1
        children = []
        host = host_plan if host_plan is not None else (None,) * count
        for child, q, k, h in zip(
            self.sources, self.quotas, self._child_keys(key), host, strict=True
        ):
            children.append(child.plan(first * q, max(1, blocks * q), k, h))
        return MixPlan(
            first * block_size, source.reshape(-1), rank.reshape(-1), tuple(children)
        )

    def read(
        self, plan: MixPlan, start: jax.Array, batch_size: int, key: jax.Array | None
    ) -> Batch:
        """The batch at ``start``: each position read from the child it drew."""
        offset = start - plan.table_start
        source = jax.lax.dynamic_slice(plan.source, (offset,), (batch_size,))
        rank = jax.lax.dynamic_slice(plan.rank, (offset,), (batch_size,))
        block = (start + jnp.arange(batch_size, dtype=jnp.int32)) // self.block_size
        quotas = jnp.asarray(self.quotas, jnp.int32)
        child_position = block * quotas[source] + rank
        keys = self._child_keys(key)

        def branch(i: int):
            child, child_plan, child_key = self.sources[i], plan.children[i], keys[i]

            def read(position):
                # read_at of an ordered child is a table lookup and a gather:
                # under vmap they batch into one gather over the batch, where a
                # read of a one-record window costs several kernels.
                one = child.read_at(child_plan, position[None], child_key)
                return {name: value[0] for name, value in one.items()}

            return read

        branches = [branch(i) for i in range(len(self.sources))]
        return jax.vmap(lambda s, p: jax.lax.switch(s, branches, p))(
            source, child_position
        )


def _checked_weights(weights: object, count: int) -> list[float]:
    """``weights`` as floats: one finite, non-negative real per source.

    Refuses what would be read wrongly: a string (read as its digits), a dict
    (read by its keys), bools, and weights whose float64 sum overflows (the
    shares would come out wrong).
    """
    if isinstance(weights, str | bytes | Mapping) or not isinstance(
        weights, Sequence | np.ndarray
    ):
        raise TypeError(
            "MixDataSourcesNode: weights must be a sequence of numbers, got "
            f"{type(weights).__name__} {weights!r}; pass e.g. [0.5, 0.3, 0.2]."
        )
    for index, weight in enumerate(weights):
        if isinstance(weight, bool | np.bool_) or not isinstance(weight, numbers.Real):
            raise TypeError(
                f"MixDataSourcesNode: weights[{index}] is {weight!r}, not a real "
                "number."
            )
    floats = [float(w) for w in weights]
    if len(floats) != count:
        raise ValueError(
            f"MixDataSourcesNode: {len(floats)} weights for {count} sources; give "
            "one weight per source."
        )
    bad = {i: w for i, w in enumerate(floats) if not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(
            f"MixDataSourcesNode: weights must be finite and non-negative, got "
            f"{bad} (index: weight)."
        )
    total = sum(floats)  # float64; overflows to inf without a warning
    if not math.isfinite(total):
        raise ValueError(
            f"MixDataSourcesNode: weights {floats} sum to {total}; scale them down "
            "(only their proportions matter)."
        )
    if total <= 0:
        raise ValueError(
            f"MixDataSourcesNode: weights {floats} sum to zero; give at least one "
            "source a positive weight."
        )
    return floats


def _check_specs(sources: Sequence[DataSource]) -> None:
    """Refuses sources whose element specs differ, naming the fields."""
    specs = [
        {k: (tuple(v.shape), np.dtype(v.dtype).name) for k, v in s.element_spec.items()}
        for s in sources
    ]
    first = specs[0]
    problems = []
    for index, spec in enumerate(specs[1:], start=1):
        for name in sorted(set(first) | set(spec)):
            if first.get(name) != spec.get(name):
                problems.append(
                    f"field {name!r}: {first.get(name, 'missing')} in source 0, "
                    f"{spec.get(name, 'missing')} in source {index}"
                )
    if problems:
        raise ValueError(
            "MixDataSourcesNode: sources differ in element_spec ("
            + "; ".join(problems)
            + "); give every source the same fields, shapes and dtypes."
        )
