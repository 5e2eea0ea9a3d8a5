"""Memory use while iterating an epoch of a 2 GiB .npy folder (StreamingDiskSource).

Prints the peak growth of the process's anonymous resident memory (RssAnon: the
page cache and the memory-mapped file pages excluded) over its value when the
pipeline starts, sampled after every batch.

    python benchmarks/out_of_core.py [--gib 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from datarax import Pipeline
from datarax.sources import StreamingDiskSource

ROW = 4096  # bytes per record


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    rows = int(args.gib * 2**30) // ROW
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        path = Path(tmp) / "image.npy"
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(rows, ROW)
        )
        for start in range(0, rows, 65536):  # written in slices, never whole
            out[start : start + 65536] = start % 251
        out.flush()
        del out
        pipe = Pipeline(
            source=StreamingDiskSource(Path(tmp)),
            batch_size=args.batch_size,
            shuffle=True,
            num_epochs=1,
        )
        base = rss_anon_mib()
        peak = base
        t0 = time.perf_counter()
        batches = 0
        for batch in pipe:
            jax.block_until_ready(batch)
            batches += 1
            peak = max(peak, rss_anon_mib())
        seconds = time.perf_counter() - t0
    print(
        f"{args.gib:g} GiB ({rows:,} records of {ROW} B), {batches} batches of "
        f"{args.batch_size} in {seconds:.1f} s: RssAnon {base:.0f} MiB at start, "
        f"peak {peak:.0f} MiB, growth {peak - base:.0f} MiB"
    )


if __name__ == "__main__":
    main()
