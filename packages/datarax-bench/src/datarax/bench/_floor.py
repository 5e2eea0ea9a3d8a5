"""``Floor``: the scenario's work as one hand-written jitted ``lax.scan``.

What a JAX expert writes with no data library at all: the records sit in device
arrays, each step slices (or gathers) its batch, applies the scenario's transforms
with :func:`~datarax.bench.apply_jax` and feeds it to the scenario's consumer
(reduced to a scalar; ``DP-1``: an MLP's SGD step on the batch sharded over the
mesh, the records replicated on its devices). Everything
that can be planned is planned before the loop, inside the same compiled call:
the start of every batch, the per-epoch permutations of a shuffled scenario, one
key per record, the source and row of every mixed position. Nothing a loader does
can be cheaper, so the Floor's time is the unit of every ratio in a report.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from datarax.bench._adapter import Adapter, _jitted, register_adapter
from datarax.bench._consumers import Consumer, batch_sharding, consumer_of
from datarax.bench._jpeg import HandLoop
from datarax.bench._scenarios import Scenario, apply_jax
from datarax.bench._text import TextLoop

#: The unroll factors the Floor tries; on XLA:CPU the factor alone can change an
#: image loop's time tenfold, so the Floor takes the fastest.
UNROLLS = (1, 2, 4, 8)
_TUNING_CALLS = 3  # timed calls per unroll factor, after one that compiles


@register_adapter
class FloorAdapter(Adapter):
    """The hand-written single jitted ``lax.scan`` (the unit of every ratio).

    ``setup`` times each of :data:`UNROLLS` on the variant's number of batches and
    keeps the fastest; ``run`` then serves the next batches of its stream in one
    compiled call. A mixed scenario's sources are concatenated on the device once,
    so a mixed batch is one gather; an on-disk scenario reads the same data from
    memory (the floor of any disk reader).

    Args:
        unroll: use this unroll factor instead of timing all of :data:`UNROLLS`.
        seed: seeds the permutations, the mix and the per-record keys.
    """

    name = "Floor"
    kind = "floor"
    shards_batches = True
    reads_files = True

    def __init__(self, *, unroll: int | None = None, seed: int = 0):
        self._fixed_unroll = unroll
        self._seed = seed
        self.unroll: int | None = None
        self._tuning: dict[str, float] = {}

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Puts the records on the device and picks the fastest unroll factor."""
        self._scenario = scenario
        self._hand: HandLoop | TextLoop | None = None
        if scenario.encoded:  # host work: a hand-written host loop
            count = scenario.variants[variant].num_records
            loop = HandLoop if scenario.encoded == "jpeg" else TextLoop
            self._hand = loop(count, scenario.batch_size, self._seed)
            self._consumer = consumer_of(scenario)
            self._state = self._consumer.init()
            self.unroll = 1
            return
        self._lengths = tuple(len(next(iter(d.values()))) for d in data)
        arrays = {name: np.concatenate([d[name] for d in data]) for name in data[0]}
        # Sharded batches: the records replicated on every device of the mesh,
        # each device slicing its part of a batch locally (as datarax does).
        self._sharding = batch_sharding(scenario)
        where = None
        if self._sharding is not None:
            where = NamedSharding(self._sharding.mesh, PartitionSpec())
        self._arrays = {name: jax.device_put(x, where) for name, x in arrays.items()}
        self._consumer = consumer_of(scenario)
        self._state = self._consumer.init()
        self._size = sum(self._lengths)
        self._position = 0
        self._key = jax.random.key(self._seed)
        # Rows already drawn from each mixed source; stays on the device.
        self._drawn = jnp.zeros(len(self._lengths), jnp.int32)
        self._programs: dict[tuple[int, int, bool], Callable] = {}
        if self._fixed_unroll is not None:
            self.unroll = self._fixed_unroll
        else:
            self.unroll = self._fastest_unroll(scenario.variants[variant].num_batches)

    def settings(self) -> dict[str, Any]:
        """The unroll factor (and, when timed here, the median of each one tried)."""
        return {"unroll": self.unroll, **self._tuning}

    def tuned(self) -> FloorAdapter:
        """A fresh Floor with this one's unroll factor and tuning figures.

        The runner tunes once, then measures a Floor that does not tune in its
        ``setup``, so the Floor's first-batch latency counts one compile like any
        other adapter's.
        """
        fresh = FloorAdapter(unroll=self.unroll, seed=self._seed)
        fresh._tuning = dict(self._tuning)
        return fresh

    def run(self, num_batches: int) -> int:
        """Serves ``num_batches`` batches in one compiled call; returns records."""
        if self._hand is not None:
            step = _host_step(self._consumer.step, self._scenario)
            for _ in range(num_batches):
                self._state = step(self._state, self._hand.next_batch())
            jax.block_until_ready(self._state)
            return num_batches * self._scenario.batch_size
        out = self._call(num_batches, self.unroll, emit=False)
        jax.block_until_ready(out)
        return num_batches * self._scenario.batch_size

    def batches(self, num_batches: int) -> list[dict[str, np.ndarray]]:
        """The next ``num_batches`` batches, emitted as the scan's outputs."""
        if self._hand is not None:
            step = _host_step(_batch_of, self._scenario)
            return [
                jax.device_get(step(None, self._hand.next_batch()))
                for _ in range(num_batches)
            ]
        stacked = jax.device_get(self._call(num_batches, self.unroll, emit=True))
        return [{name: x[i] for name, x in stacked.items()} for i in range(num_batches)]

    def close(self) -> None:
        """Stops a host loop's threads."""
        if getattr(self, "_hand", None) is not None:
            self._hand.close()

    def _fastest_unroll(self, num_batches: int) -> int:
        medians = {}
        for unroll in UNROLLS:
            jax.block_until_ready(self._call(num_batches, unroll, emit=False))
            times = []
            for _ in range(_TUNING_CALLS):
                start = time.perf_counter()
                jax.block_until_ready(self._call(num_batches, unroll, emit=False))
                times.append(time.perf_counter() - start)
            medians[unroll] = statistics.median(times)
        self._tuning = {f"unroll {u} ms": round(t * 1e3, 3) for u, t in medians.items()}
        return min(medians, key=medians.__getitem__)

    def _call(self, num_batches: int, unroll: int, *, emit: bool) -> Any:
        key = (num_batches, unroll, emit)
        if key not in self._programs:
            self._programs[key] = _program(
                self._scenario, self._lengths, num_batches, unroll, emit,
                self._consumer, self._sharding,
            )  # fmt: skip
        out, self._drawn, self._state = self._programs[key](
            self._arrays, np.int32(self._position), self._key, self._drawn, self._state
        )
        self._position += num_batches * self._scenario.batch_size
        return out


def _batch_of(state: Any, batch: Any) -> Any:
    return batch


def _host_step(step: Callable, scenario: Scenario) -> Callable:
    """``step`` jitted for host batches (behind ``normalize`` when it has one)."""
    if "normalize" in scenario.ops:
        return _normalized_step(step, scenario.scale, scenario.shift)
    return _jitted(step)


@functools.cache
def _normalized_step(step: Callable, scale: float, shift: float) -> Callable:
    """``step`` jitted behind the scenario's normalize of a host batch's image."""

    def normalized(state: Any, batch: dict[str, Any]) -> Any:
        image = batch["image"].astype(jnp.float32) * scale + shift
        return step(state, {**batch, "image": image})

    return jax.jit(normalized)


def _program(
    scenario: Scenario,
    lengths: tuple[int, ...],
    num_batches: int,
    unroll: int,
    emit: bool,
    consumer: Consumer,
    sharding: NamedSharding | None,
) -> Callable:
    """The jitted run of ``num_batches`` steps: plan first, then one ``lax.scan``.

    Each step feeds its batch (constrained to ``sharding``) to the consumer;
    ``emit`` returns the batches stacked (for tests) and leaves the consumer's
    state as it was.
    """
    batch_size = scenario.batch_size
    size = sum(lengths)
    count = num_batches * batch_size

    def plan(position, key, drawn):
        # Per-run plans made once, before the loop: per-step work the loop does not
        # need (epoch arithmetic, key derivation) would show at 1,000 steps.
        xs: dict[str, jax.Array] = {}
        if scenario.mix_weights is not None:
            weights = np.asarray(scenario.mix_weights, np.float32)
            choice = jax.random.choice(
                jax.random.fold_in(jax.random.fold_in(key, 2), position),
                len(lengths),
                (count,),
                p=jnp.asarray(weights / weights.sum()),
            )
            rows = jnp.zeros(count, jnp.int32)
            taken, base = [], 0
            for index, length in enumerate(lengths):
                mine = choice == index
                rank = jnp.cumsum(mine, dtype=jnp.int32) - 1 + drawn[index]
                rows = jnp.where(mine, base + rank % length, rows)
                taken.append(drawn[index] + mine.sum(dtype=jnp.int32))
                base += length
            xs["rows"] = rows.reshape(num_batches, batch_size)
            drawn = jnp.stack(taken)
        elif scenario.shuffle:
            # A fresh permutation per epoch, for every epoch the run touches.
            first_epoch = position // size
            epochs = first_epoch + jnp.arange(count // size + 2)
            perms = jax.vmap(
                lambda e: jax.random.permutation(
                    jax.random.fold_in(jax.random.fold_in(key, 0), e), size
                )
            )(epochs).reshape(-1)
            rows = jax.lax.dynamic_slice_in_dim(
                perms, position - first_epoch * size, count
            )
            xs["rows"] = rows.reshape(num_batches, batch_size)
        else:
            # Contiguous slices that never wrap: the cheapest read there is.
            steps = position + jnp.arange(num_batches, dtype=jnp.int32) * batch_size
            xs["start"] = steps % (size - batch_size + 1)
        if scenario.stochastic:
            keys = jax.random.split(
                jax.random.fold_in(jax.random.fold_in(key, 1), position), count
            )
            xs["keys"] = keys.reshape(num_batches, batch_size)
        return xs, drawn

    def make_batch(arrays, x):
        if "start" in x:
            batch = {
                name: jax.lax.dynamic_slice_in_dim(a, x["start"], batch_size)
                for name, a in arrays.items()
            }
        else:
            batch = {
                name: jnp.take(a, x["rows"], axis=0, mode="clip")
                for name, a in arrays.items()
            }
        if sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, sharding)
        if scenario.stochastic:
            return jax.vmap(lambda r, k: apply_jax(scenario, r, k))(batch, x["keys"])
        if scenario.ops or scenario.dag:
            return jax.vmap(lambda r: apply_jax(scenario, r, None))(batch)
        return batch

    @jax.jit
    def run(arrays, position, key, drawn, state):
        xs, drawn = plan(position, key, drawn)

        def body(state, x):
            batch = make_batch(arrays, x)
            if emit:
                return state, batch
            return consumer.step(state, batch), None

        state, batches = jax.lax.scan(body, state, xs, unroll=unroll)
        return (batches if emit else state), drawn, state

    return run
