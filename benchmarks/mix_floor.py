"""MixDataSourcesNode of three MemorySources in Pipeline.scan against the floor.

The floor is one jitted ``lax.scan`` doing the same choose-and-gather by hand: for
each step, the source of every position and its row in that source (computed
before timing, so the floor does not even pay for the arrangement) feed one
``take`` per source and a ``jnp.where`` choice, then a reduction.

    python benchmarks/mix_floor.py [--steps 1000]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds
from flax import nnx

from datarax import Pipeline
from datarax.sources import MemorySource, MixDataSourcesNode

LENGTHS = (10_000, 6_000, 4_000)
WEIGHTS = (0.5, 0.3, 0.2)
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 32_000, (n, 128)).astype(np.int32) for n in LENGTHS]
    steps, records = args.steps, args.steps * BATCH

    # The floor's plan, made before timing: source and row of every position.
    choice = rng.choice(3, size=records, p=WEIGHTS).astype(np.int32)
    rows = np.zeros(records, np.int32)
    for i, n in enumerate(LENGTHS):
        mine = choice == i
        rows[mine] = rng.permutation(np.arange(mine.sum()) % n)
    choice, rows = choice.reshape(steps, BATCH), rows.reshape(steps, BATCH)
    arrays = [jnp.asarray(d) for d in data]

    def floor_fn(unroll):
        @jax.jit
        def run(arrays, choice, rows):
            def body(total, xs):
                c, r = xs
                picked = [jnp.take(a, r, axis=0, mode="clip") for a in arrays]
                batch = jnp.where((c == 1)[:, None], picked[1], picked[0])
                batch = jnp.where((c == 2)[:, None], picked[2], batch)
                return total, batch.astype(jnp.float32).sum()

            return jax.lax.scan(body, 0.0, (choice, rows), unroll=unroll)[1]

        return lambda: jax.block_until_ready(run(arrays, choice, rows))

    t_floor = min(median_seconds(floor_fn(u), args.repeats) for u in (1, 2, 4, 8))

    mix = MixDataSourcesNode([MemorySource({"x": d}) for d in data], WEIGHTS)
    pipe = Pipeline(
        source=mix, batch_size=BATCH, shuffle=True, num_epochs=None, rngs=nnx.Rngs(0)
    )

    def step(batch):
        return batch["x"].astype(jnp.float32).sum()

    t_scan = median_seconds(
        lambda: jax.block_until_ready(pipe.scan(step, length=steps)), args.repeats
    )
    print(
        f"mix of 3 MemorySources (tokens x128, batch {BATCH}), {steps} batches: "
        f"floor {t_floor * 1e3:.2f} ms | scan {t_scan * 1e3:.2f} ms = "
        f"{t_scan / t_floor:.2f}x floor"
    )


if __name__ == "__main__":
    main()
