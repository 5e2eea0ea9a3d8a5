"""StreamingDiskSource in Pipeline.scan against direct memory-mapped reads.

The host-side floor is the same gathers done directly: ``np.load(mmap_mode="r")``
and ``mm[index]`` per batch in a Python loop, with the same shuffled indices. Data
sit in the page cache (each file is read once before timing).

    python benchmarks/disk_throughput.py [--steps 300]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds
from flax import nnx

from datarax import Pipeline
from datarax.sources import StreamingDiskSource

CASES = {
    "tokens 10,000 x 128 int32, batch 32": ((10_000, 128), np.int32, 32),
    "images 50,000 x 3,072 uint8, batch 64": ((50_000, 3_072), np.uint8, 64),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, dtype, batch_size) in CASES.items():
            path = Path(tmp) / f"{shape[0]}.npy"
            np.save(path, rng.integers(0, 100, shape).astype(dtype))
            mm = np.load(path, mmap_mode="r")
            np.asarray(mm).sum()  # into the page cache
            records = args.steps * batch_size
            order = np.concatenate(
                [rng.permutation(shape[0]) for _ in range(records // shape[0] + 1)]
            )

            def floor(mm=mm, order=order, batch_size=batch_size):
                total = 0
                for b in range(args.steps):
                    batch = mm[order[b * batch_size : (b + 1) * batch_size]]
                    total += int(batch[0, 0])
                return total

            pipe = Pipeline(
                source=StreamingDiskSource(path),
                batch_size=batch_size,
                shuffle=True,
                num_epochs=None,
                rngs=nnx.Rngs(0),
            )
            field = path.stem

            def step(batch, field=field):
                return batch[field][0, 0].astype(jnp.int32)

            jax.block_until_ready(pipe.scan(step, length=args.steps))
            t_floor = median_seconds(floor, args.repeats)
            t_scan = median_seconds(
                lambda pipe=pipe, step=step: jax.block_until_ready(
                    pipe.scan(step, length=args.steps)
                ),
                args.repeats,
            )
            print(
                f"{name}, {args.steps} batches: direct mmap {records / t_floor:,.0f} "
                f"records/s | Pipeline.scan {records / t_scan:,.0f} records/s = "
                f"{t_floor / t_scan:.0%} of direct"
            )


if __name__ == "__main__":
    main()
