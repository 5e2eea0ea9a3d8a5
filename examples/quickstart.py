"""The README's quickstart: scan 100 train steps, then keep going by iteration."""

import jax
import numpy as np
import optax
from flax import nnx

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource

data = {
    "x": np.random.rand(1000, 8).astype(np.float32),
    "y": np.random.randint(0, 2, 1000).astype(np.int32),
}


def jitter(record, key):  # one record, its own key
    return {**record, "x": record["x"] + 0.01 * jax.random.normal(key, (8,))}


pipe = Pipeline(
    source=MemorySource(data),
    stages=[ElementOperator(jitter, stochastic=True)],
    batch_size=32,
    shuffle=True,
    num_epochs=None,
    rngs=nnx.Rngs(0),
)

model = nnx.Linear(8, 2, rngs=nnx.Rngs(1))
optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


def train_step(model, optimizer, batch):
    def loss_fn(model):
        logits = model(batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["y"]
        ).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


losses = pipe.scan(train_step, length=100, modules=(model, optimizer))  # one program
print(losses.shape)  # (100,)
batch = next(iter(pipe))  # ...and iteration goes on with batch 101
print(int(pipe.position[...]))  # 3232: 101 batches of 32
