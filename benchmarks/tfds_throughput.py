"""TFDSStreamingSource in Pipeline.scan and iteration against direct TFDS reads.

The floor is what a user would write without datarax: a Python loop calling the
TFDS data source's ``__getitems__(indices)`` once per batch, with the same
shuffled indices (decoded records as a list of dicts; a second floor also stacks
them into one array per feature, which any training step needs). The builder
(20,000 records, prepared once as array_record in a temp folder) sits in the page
cache. Also times ``TFDSSource`` construction (materialising the split) against
one ``__getitems__`` over the whole split.

    python benchmarks/tfds_throughput.py [--records 20000] [--steps 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from _timing import median_seconds
from flax import nnx

from datarax import Pipeline
from datarax.integrations.tfds import TFDSSource, TFDSStreamingSource

RECORDS = 20_000
CASES = {
    # name: (features, record maker, batch size)
    "tokens 128 x int32 + label, batch 32": (
        {
            "tokens": tfds.features.Tensor(shape=(128,), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=10),
        },
        lambda i: {"tokens": np.arange(128, dtype=np.int32) + i, "label": i % 10},
        32,
    ),
    "images 32x32x3 uint8 + label, batch 64": (
        {
            "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        },
        lambda i: {"image": np.full((32, 32, 3), i % 256, np.uint8), "label": i % 10},
        64,
    ),
}


def make_builder(features, record, num_records):
    class DataraxBench(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        code_path = None  # nothing downloaded: no checksums file to look up

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(num_records):
                yield i, record(i)

    return DataraxBench


def run_case(name, features, record, batch_size, args, tmp) -> None:
    rng = np.random.default_rng(0)
    builder = make_builder(features, record, args.records)(
        data_dir=tmp, file_format="array_record"
    )
    t0 = time.perf_counter()
    builder.download_and_prepare()
    t_prepare = time.perf_counter() - t0
    data_source = builder.as_data_source(split="train")
    everything = list(range(len(data_source)))
    data_source.__getitems__(everything)  # into the page cache
    records = args.steps * batch_size
    epochs = records // args.records + 1
    order = np.concatenate([rng.permutation(args.records) for _ in range(epochs)])
    batches = [
        order[b * batch_size : (b + 1) * batch_size].tolist() for b in range(args.steps)
    ]

    def floor():
        for indices in batches:
            data_source.__getitems__(indices)

    def floor_stacked():
        for indices in batches:
            got = data_source.__getitems__(indices)
            {k: np.stack([r[k] for r in got]) for k in features}

    def build():
        return Pipeline(
            source=TFDSStreamingSource(builder, split="train"),
            batch_size=batch_size,
            shuffle=True,
            num_epochs=None,
            rngs=nnx.Rngs(0),
        )

    def step(batch):
        return batch["label"][0].astype(jnp.int32)

    pipe = build()

    def scan():
        jax.block_until_ready(pipe.scan(step, length=args.steps))

    iterator = iter(build())

    def iterate():
        batch = None
        for _ in range(args.steps):
            batch = next(iterator)
        jax.block_until_ready(batch)

    t_floor = median_seconds(floor, args.repeats)
    t_stacked = median_seconds(floor_stacked, args.repeats)
    t_scan = median_seconds(scan, args.repeats)
    t_iter = median_seconds(iterate, args.repeats)
    t_eager = median_seconds(lambda: TFDSSource(builder, split="train"), 1)
    t_all = median_seconds(lambda: data_source.__getitems__(everything), 1)

    def rate(seconds):
        return f"{records / seconds:,.0f} records/s"

    print(f"{name}, {args.records:,} records (prepared in {t_prepare:.1f} s):")
    print(f"  __getitems__ loop          {rate(t_floor)}")
    print(
        f"  __getitems__ loop + stack  {rate(t_stacked)} "
        f"= {t_floor / t_stacked:.0%} of the loop"
    )
    print(
        f"  Pipeline.scan              {rate(t_scan)} "
        f"= {t_floor / t_scan:.0%} of the loop, "
        f"{t_stacked / t_scan:.0%} of loop + stack"
    )
    print(
        f"  Pipeline iteration         {rate(t_iter)} "
        f"= {t_floor / t_iter:.0%} of the loop, "
        f"{t_stacked / t_iter:.0%} of loop + stack"
    )
    print(
        f"  TFDSSource construction    {t_eager:.2f} s; one __getitems__ of "
        f"the split {t_all:.2f} s (= {t_eager / t_all:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, (features, record, batch_size) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            run_case(name, features, record, batch_size, args, tmp)


if __name__ == "__main__":
    main()
