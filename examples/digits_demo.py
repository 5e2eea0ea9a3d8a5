"""Train a small Flax NNX classifier on scikit-learn's bundled 8x8 digits, twice.

Once fed by Python iteration (a jitted train step per batch), once with
``Pipeline.scan`` (a whole epoch of train steps, data loading included, compiled
into one XLA program). Both read the same shuffled, augmented record stream.

    python examples/digits_demo.py            # or: bash scripts/demo.sh
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from tqdm import tqdm

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


class MLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def jitter(record, key):
    """Stochastic augmentation: a little pixel noise, different every epoch."""
    noise = 0.05 * jax.random.normal(key, record["image"].shape)
    return {"image": record["image"] + noise, "label": record["label"]}


def make_pipeline(train: dict, batch_size: int) -> Pipeline:
    # An endless stream: both halves take the same number of batches from it
    # (the stream runs on across epoch boundaries, so 20 epochs of 1,500 records
    # hold 937 full batches of 32, not 20 x 46).
    return Pipeline(
        source=MemorySource(train),
        stages=[ElementOperator(jitter, stochastic=True)],
        batch_size=batch_size,
        shuffle=True,
        num_epochs=None,
        rngs=nnx.Rngs(0),
    )


def train_step(model: MLP, optimizer: nnx.Optimizer, batch: dict) -> jax.Array:
    def loss_fn(model):
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"]
        ).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def accuracy(model: MLP, test: dict) -> float:
    predictions = jnp.argmax(model(jnp.asarray(test["image"])), axis=-1)
    return float((predictions == jnp.asarray(test["label"])).mean())


def fresh_model() -> tuple[MLP, nnx.Optimizer]:
    model = MLP(rngs=nnx.Rngs(42))
    return model, nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="at least 2")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch compiles)")

    digits = load_digits()  # 1,797 images of 8x8 pixels, shipped with scikit-learn
    images = (digits.images.reshape(-1, 64) / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    train_idx, test_idx = order[:1500], order[1500:]
    train = {"image": images[train_idx], "label": labels[train_idx]}
    test = {"image": images[test_idx], "label": labels[test_idx]}
    steps_per_epoch = len(train_idx) // args.batch_size
    total = steps_per_epoch * args.epochs
    print(
        f"digits: {len(train_idx)} train / {len(test_idx)} test images, "
        f"batch {args.batch_size}, {args.epochs} epochs = {total} steps, "
        f"backend {jax.default_backend()}"
    )

    # Throughput is timed from the second epoch on: the first one compiles.
    timed = total - steps_per_epoch

    # 1. Python iteration: one jitted train step per batch.
    model, optimizer = fresh_model()
    step = nnx.jit(train_step)
    loss = None
    batches = itertools.islice(make_pipeline(train, args.batch_size), total)
    for i, batch in enumerate(tqdm(batches, total=total, desc="iteration")):
        if i == steps_per_epoch:
            jax.block_until_ready(loss)
            start = time.perf_counter()
        loss = step(model, optimizer, batch)
    iter_steps = i + 1
    jax.block_until_ready(loss)
    iter_rate = timed / (time.perf_counter() - start)
    iter_acc = accuracy(model, test)

    # 2. Pipeline.scan: one compiled program runs an epoch's worth of steps per
    # call; the same batches as the iteration above, in the same order.
    model, optimizer = fresh_model()
    pipe = make_pipeline(train, args.batch_size)
    losses = None
    for epoch in tqdm(range(args.epochs), desc="scan     ", unit="epoch"):
        if epoch == 1:
            jax.block_until_ready(losses)
            start = time.perf_counter()
        losses = pipe.scan(
            train_step, length=steps_per_epoch, modules=(model, optimizer)
        )
    jax.block_until_ready(losses)
    scan_rate = timed / (time.perf_counter() - start)
    scan_acc = accuracy(model, test)

    scan_steps = steps_per_epoch * args.epochs
    print(
        f"iteration: {iter_steps} steps, test accuracy {iter_acc:.3f}, "
        f"{iter_rate:,.0f} batches/s"
    )
    print(
        f"scan:      {scan_steps} steps, test accuracy {scan_acc:.3f}, "
        f"{scan_rate:,.0f} batches/s"
    )
    print(f"scan speed-up over iteration: {scan_rate / iter_rate:.1f}x")


if __name__ == "__main__":
    main()
