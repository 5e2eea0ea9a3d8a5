"""Pipeline.scan and iteration against the hand-written floor, beyond floor_bench.py.

Two scenarios a user would run that ../shared/floor_bench.py does not show:

* CV-2: 10,000 32x32x3 uint8 images, batch 64, shuffled every epoch, stochastic
  augmentation per record (random horizontal flip + brightness jitter) and
  normalization;
* DAG-1: 10,000 rows of 128 int32 tokens, batch 32, a three-node DAG (two branches
  that read the source, a merge node).

The floor is the same work written directly as one jitted ``lax.scan`` (fastest of
unroll 1, 2, 4, 8): per-epoch permutations computed before the loop, a gather, one
key per record from ``jax.random.split``, the same transforms, a reduction.

    python benchmarks/extra_floor.py [--steps 1000] [--repeats 7]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds
from flax import nnx

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource

N = 10_000


def augment(record, key):
    flip_key, light_key = jax.random.split(key)
    image = record["image"].astype(jnp.float32) / 255.0
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    image = image * (1.0 + 0.1 * jax.random.normal(light_key))
    return {"image": (image - 0.5) * 2.0}


def reduce_batch(batch) -> jax.Array:
    total = jnp.float32(0)
    for leaf in jax.tree.leaves(batch):
        total = total + leaf.astype(jnp.float32).sum()
    return total


def branch_a(batch):
    return {"a": batch["tokens"] * 2}


def branch_b(batch):
    return {"b": batch["tokens"] + 1}


def merge(a, b):
    return {"tokens": a["a"] - b["b"]}


def cv2_floor(images, steps: int, unroll: int):
    batch_size = 64

    @jax.jit
    def run(images, key, first):
        epochs = (steps * batch_size) // N + 2
        perms = jax.vmap(
            lambda e: jax.random.permutation(jax.random.fold_in(key, e), N)
        )(first * batch_size // N + jnp.arange(epochs)).reshape(-1)

        def body(total, i):
            start = first * batch_size + i * batch_size
            index = jax.lax.dynamic_slice(
                perms, (start - (first * batch_size // N) * N,), (batch_size,)
            )
            batch = {"image": jnp.take(images, index, axis=0)}
            keys = jax.random.split(jax.random.fold_in(key, start), batch_size)
            batch = jax.vmap(augment)(batch, keys)
            return total + reduce_batch(batch), None

        return jax.lax.scan(body, jnp.float32(0), jnp.arange(steps), unroll=unroll)[0]

    key = jax.random.key(0)
    jax.block_until_ready(run(images, key, 0))
    return lambda: jax.block_until_ready(run(images, key, 1))


def dag1_floor(tokens, steps: int, unroll: int):
    batch_size = 32

    @jax.jit
    def run(tokens, first):
        def body(total, i):
            start = ((first + i) * batch_size) % (N - batch_size)
            batch = {"tokens": jax.lax.dynamic_slice_in_dim(tokens, start, batch_size)}
            return total + reduce_batch(merge(branch_a(batch), branch_b(batch))), None

        return jax.lax.scan(body, jnp.float32(0), jnp.arange(steps), unroll=unroll)[0]

    jax.block_until_ready(run(tokens, 0))
    return lambda: jax.block_until_ready(run(tokens, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    images = rng.integers(0, 256, (N, 32, 32, 3)).astype(np.uint8)
    tokens = rng.integers(0, 32_000, (N, 128)).astype(np.int32)

    def cv2() -> Pipeline:
        return Pipeline(
            source=MemorySource({"image": images}),
            stages=[ElementOperator(augment, stochastic=True)],
            batch_size=64,
            shuffle=True,
            num_epochs=None,
            rngs=nnx.Rngs(0),
        )

    def dag1() -> Pipeline:
        return Pipeline.from_dag(
            source=MemorySource({"tokens": tokens}),
            nodes={"a": branch_a, "b": branch_b, "merge": merge},
            edges={"a": [], "b": [], "merge": ["a", "b"]},
            sink="merge",
            batch_size=32,
            num_epochs=None,
            rngs=nnx.Rngs(0),
        )

    cases = {
        "CV-2 shuffled+augment": (
            cv2,
            lambda u: cv2_floor(jnp.asarray(images), args.steps, u),
        ),
        "DAG-1 three nodes": (
            dag1,
            lambda u: dag1_floor(jnp.asarray(tokens), args.steps, u),
        ),
    }
    for name, (make, floor) in cases.items():
        t_floor = min(median_seconds(floor(u), args.repeats) for u in (1, 2, 4, 8))
        pipe = make()
        jax.block_until_ready(pipe.scan(reduce_batch, length=args.steps))
        t_scan = median_seconds(
            lambda pipe=pipe: jax.block_until_ready(
                pipe.scan(reduce_batch, length=args.steps)
            ),
            args.repeats,
        )
        batches = iter(make())
        for _ in range(3):
            jax.block_until_ready(next(batches))

        def iterate(batches=batches):
            for _ in range(args.steps):
                batch = next(batches)
            jax.block_until_ready(batch)

        t_iter = median_seconds(iterate, args.repeats)
        print(
            f"{name}, {args.steps} batches: floor {t_floor * 1e3:.2f} ms | "
            f"scan {t_scan * 1e3:.2f} ms = {t_scan / t_floor:.1f}x floor | "
            f"iter {t_iter * 1e3:.2f} ms = {t_iter / t_floor:.1f}x floor"
        )


if __name__ == "__main__":
    main()
