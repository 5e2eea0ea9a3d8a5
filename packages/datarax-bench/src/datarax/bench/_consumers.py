"""What every adapter does with each batch it serves: the scenario's consumer.

Most scenarios measure the loader alone, so each batch is reduced to a scalar
(:func:`~datarax.bench.reduce_batch`, summed into a running total). The
data-parallel scenario (``DP-1``) measures a loader feeding training: each batch,
sharded over a ``data`` mesh axis, takes one SGD step of a small MLP whose
parameters are replicated on every device (XLA all-reduces the gradients). Every
adapter runs the same consumer, in its compiled loop or one jitted call per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarax.bench._scenarios import Scenario, reduce_batch

Batch = dict[str, jax.Array]

#: The MLP of ``DP-1``: hidden width, classes, SGD learning rate.
HIDDEN = 256
CLASSES = 10
LEARNING_RATE = 0.05


class Consumer(NamedTuple):
    """A state made once per adapter and one step per batch (pure functions).

    ``in_flight`` bounds the steps an iterator dispatches ahead of the results
    (``None``: unbounded, JAX's async dispatch).
    """

    init: Callable[[], Any]
    step: Callable[[Any, Batch], Any]
    in_flight: int | None = None


def _add_reduced(total: jax.Array, batch: Batch) -> jax.Array:
    return total + reduce_batch(batch)


#: The running sum of :func:`reduce_batch`: every scenario's consumer but ``DP-1``.
SUM = Consumer(lambda: jnp.float32(0), _add_reduced)


def batch_sharding(scenario: Scenario) -> NamedSharding | None:
    """The batch's sharding: its leading axis over ``scenario.devices`` devices.

    ``None`` for a one-device scenario. The mesh is the first ``devices``
    devices on one ``data`` axis; on a CPU the runner forces that many
    (``--xla_force_host_platform_device_count``).

    Raises:
        RuntimeError: when this process has fewer devices than the scenario needs.
    """
    if scenario.devices == 1:
        return None
    devices = jax.devices()
    if len(devices) < scenario.devices:
        raise RuntimeError(
            f"{scenario.id} shards its batches over {scenario.devices} devices, "
            f"this process has {len(devices)} ({devices[0].platform}); on a CPU "
            "start it with XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{scenario.devices} (datarax-bench run does)."
        )
    mesh = Mesh(np.array(devices[: scenario.devices]), ("data",))
    return NamedSharding(mesh, PartitionSpec("data"))


def consumer_of(scenario: Scenario) -> Consumer:
    """The scenario's consumer: a running sum, or the MLP's SGD step."""
    if scenario.consumer == "sum":
        return SUM
    if scenario.consumer == "mlp":
        features = scenario.fields["features"].shape[0]
        sharding = batch_sharding(scenario)
        # Two steps in flight at most: jax 0.10's CPU runtime aborts (an
        # all-reduce rendezvous times out after 40 s) when a hundred collective
        # programs are queued on 8 forced devices, as a plain jitted loop over
        # ready batches shows; jax 0.12 does not. Two cost no measurable time.
        return Consumer(lambda: _mlp_params(features, sharding), mlp_step, 2)
    raise ValueError(
        f"{scenario.id}: consumer {scenario.consumer!r} is not one of 'sum', 'mlp'."
    )


def _mlp_params(features: int, sharding: NamedSharding | None) -> dict[str, Any]:
    """The MLP's first parameters, the same in every adapter; replicated."""
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "w1": jax.random.normal(k1, (features, HIDDEN)) / np.sqrt(features),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(CLASSES),
    }
    if sharding is None:
        return params
    return jax.device_put(params, NamedSharding(sharding.mesh, PartitionSpec()))


def mlp_loss(params: dict[str, Any], batch: Batch) -> jax.Array:
    """Mean softmax cross-entropy of the MLP on ``features`` against ``label``."""
    hidden = jax.nn.relu(batch["features"] @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    labels = jax.nn.one_hot(batch["label"], CLASSES)
    return -(labels * jax.nn.log_softmax(logits)).sum(-1).mean()


def mlp_step(params: dict[str, Any], batch: Batch) -> dict[str, Any]:
    """One SGD step of the MLP on ``batch``."""
    grads = jax.grad(mlp_loss)(params, batch)
    return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
