"""ArrayRecordSource in a Pipeline against a plain ArrayRecordDataSource loop.

The floor is what a user would write by hand: a Python loop calling
``ArrayRecordDataSource.__getitems__`` with one list of record indices per batch
(the same natural or shuffled order), decoding each batch to arrays the cheapest
way the format allows (``np.frombuffer`` on the joined records, skipping the
datarax header). The datarax side runs ``Pipeline.scan`` and pipeline iteration
over an ``ArrayRecordSource`` of the same file, decoding the same records. A
``decode=`` row reads raw little-endian records written by ArrayRecord's own
writer, decoded by a per-record Python function on both sides. Files sit in the
page cache (each is read once before timing). Target of issue 4: scan at least
50% of the floor's records/s.

    python benchmarks/arrayrecord_throughput.py [--records 20000] [--steps 300]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import (
    ArrayRecordReader,
    ArrayRecordWriter,
)
from flax import nnx

from datarax import Pipeline
from datarax.integrations.arrayrecord import ArrayRecordSource, write_array_record

CASES = {
    "tokens 128 int32, batch 32": ((128,), np.int32, 32),
    "images 32x32x3 uint8, batch 64": ((32, 32, 3), np.uint8, 64),
}


def floor_loop(read, order, steps, batch_size, decode_batch):
    total = 0
    for b in range(steps):
        records = read(order[b * batch_size : (b + 1) * batch_size].tolist())
        total += int(decode_batch(records).reshape(-1)[0])
    return total


def measure(name, path, shape, dtype, batch_size, args, decode=None):
    n = args.records
    steps = args.steps
    records = steps * batch_size
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if decode is None:
        source = ArrayRecordSource(path)
        field = "x"

        def decode_batch(recs):
            # Fixed layout: the header is the same length in every record.
            rows = np.frombuffer(b"".join(recs), np.uint8).reshape(len(recs), -1)
            return rows[:, rows.shape[1] - nbytes :].view(dtype).reshape(-1, *shape)
    else:
        source = ArrayRecordSource(path, decode=decode)
        field = "x"

        def decode_batch(recs):
            return np.stack([decode(r)["x"] for r in recs])

    reader = ArrayRecordDataSource(path)
    # A stronger floor, for reference: one file's reader called directly (what
    # ArrayRecordSource does per file), without the data source's per-index
    # Python split and per-call thread pool.
    direct = ArrayRecordReader(path, "readahead_buffer_size:0,max_parallelism:0")
    for shuffle in (False, True):
        if shuffle:
            rng = np.random.default_rng(0)
            order = np.concatenate(
                [rng.permutation(n) for _ in range(records // n + 1)]
            )
        else:
            order = np.arange(records) % n
        t_floor = median_seconds(
            lambda order=order: floor_loop(
                reader.__getitems__, order, steps, batch_size, decode_batch
            ),
            args.repeats,
        )
        t_direct = median_seconds(
            lambda order=order: floor_loop(
                direct.read, order, steps, batch_size, decode_batch
            ),
            args.repeats,
        )
        pipe = Pipeline(
            source=source,
            batch_size=batch_size,
            shuffle=shuffle,
            num_epochs=None,
            rngs=nnx.Rngs(0),
        )

        def step(batch, field=field):
            return batch[field].reshape(batch_size, -1)[0, 0].astype(jnp.int32)

        t_scan = median_seconds(
            lambda pipe=pipe, step=step: jax.block_until_ready(
                pipe.scan(step, length=steps)
            ),
            args.repeats,
        )

        def iterate(pipe=pipe):
            last = None
            for batch in itertools.islice(pipe, steps):
                last = batch
            return jax.block_until_ready(last)

        t_iter = median_seconds(iterate, args.repeats)
        order_name = "shuffled" if shuffle else "natural"
        print(
            f"{name}, {order_name}, {steps} batches: __getitems__ loop "
            f"{records / t_floor:,.0f} rec/s | scan {records / t_scan:,.0f} rec/s "
            f"= {t_floor / t_scan:.0%} | iteration {records / t_iter:,.0f} rec/s "
            f"= {t_floor / t_iter:.0%} | (reader.read loop "
            f"{records / t_direct:,.0f} rec/s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, dtype, batch_size) in CASES.items():
            data = rng.integers(0, 100, (args.records, *shape)).astype(dtype)
            path = str(Path(tmp) / f"{dtype.__name__}.array_record")
            write_array_record(path, ({"x": row} for row in data))
            ArrayRecordDataSource(path).__getitems__(list(range(args.records)))
            measure(name, path, shape, dtype, batch_size, args)
        # Records datarax did not write: raw float32 bytes, decode= per record.
        shape, dtype, batch_size = (128,), np.float32, 32
        path = str(Path(tmp) / "raw.array_record")
        writer = ArrayRecordWriter(path, "group_size:1")
        for row in rng.random((args.records, *shape), dtype):
            writer.write(row.astype("<f4").tobytes())
        writer.close()

        def decode(record):
            return {"x": np.frombuffer(record, "<f4")}

        measure(
            "raw float32[128] with decode=, batch 32",
            path,
            shape,
            dtype,
            batch_size,
            args,
            decode,
        )


if __name__ == "__main__":
    main()
