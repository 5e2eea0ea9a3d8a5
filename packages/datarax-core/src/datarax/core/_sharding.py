"""Batches sharded over devices: a pipeline's ``sharding``, checked and applied.

With ``Pipeline(..., sharding=NamedSharding(mesh, PartitionSpec("data")))`` every
field of every batch is a global ``jax.Array`` split along its leading (batch)
axis over the mesh's ``data`` devices, in every mode. The compiled programs
constrain each staged batch to that sharding, so XLA computes each device's
slice on that device; the source's dataset arrays are replicated on the mesh's
devices once, when the pipeline is built (one copy per device). A source that
reads on the host (``reads_on_host``: ``.npy`` files, ArrayRecord) is read under
``shard_map`` instead: each device's host callback reads the records of its own
slice, so each JAX process reads only what its devices hold.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from datarax.core._source import Batch, DataSource, DataVar, checked_read


def check_sharding(
    sharding: Any, length: int | None, batch_size: int,
    num_epochs: int | None, drop_last: bool,
) -> NamedSharding | None:  # fmt: skip
    """``sharding`` checked against the batch size and the stream, or ``None``.

    Raises:
        TypeError: for anything but a ``NamedSharding`` of the batch axis.
        ValueError: naming ``batch_size`` when the batch axis does not divide it,
            or ``drop_last`` when iteration would end on a short batch (on
            several JAX processes too, without a sharding).
    """
    if sharding is None:
        if jax.process_count() > 1:
            where = f"the {jax.process_count()} JAX processes"
            refuse_short_last_batch(length, batch_size, num_epochs, drop_last, where)
        return None
    if not isinstance(sharding, NamedSharding):
        raise TypeError(
            "sharding takes a jax.sharding.NamedSharding of the batch's leading "
            "axis, e.g. NamedSharding(mesh, PartitionSpec('data')); got "
            f"{type(sharding).__name__}."
        )
    if len(sharding.spec) > 1:
        raise ValueError(
            f"sharding shards the batch's leading axis only, so its PartitionSpec "
            f"has one entry, e.g. PartitionSpec('data'); got "
            f"PartitionSpec{tuple(sharding.spec)}."
        )
    if not sharding.addressable_devices:
        raise ValueError(
            f"the sharding's mesh holds none of this process's devices (process "
            f"{jax.process_index()} has {jax.local_devices()}); build the mesh from "
            "every process's devices, e.g. Mesh(np.array(jax.devices()), ('data',))."
        )
    shards = batch_shards(sharding)
    if batch_size % shards:
        raise ValueError(
            f"batch_size={batch_size} does not divide over the {shards} devices of "
            f"the sharding's batch axis {sharding.spec[0]!r}; use a batch size "
            f"that divides by {shards}."
        )
    where = f"the {shards} devices of the sharding"
    refuse_short_last_batch(length, batch_size, num_epochs, drop_last, where)
    return sharding


def refuse_short_last_batch(
    length: int | None, batch_size: int, num_epochs: int | None,
    drop_last: bool, where: str,
) -> None:  # fmt: skip
    """Refuses a stream whose iteration would end on a batch ``where`` cannot split.

    A short last batch cannot be cut into equal slices for several devices or
    processes; refusing at construction names the fix before any work is done.
    """
    if (
        length is not None and num_epochs is not None and not drop_last
        and (num_epochs * length) % batch_size
    ):  # fmt: skip
        rest = (num_epochs * length) % batch_size
        raise ValueError(
            f"iteration would end on a short batch of {rest} records, which "
            f"cannot be split over {where}; pass drop_last=True (or "
            "num_epochs=None: step() and scan serve full batches)."
        )


def batch_axes(sharding: NamedSharding) -> tuple[str, ...]:
    """The mesh axes the batch's leading axis is split over (major first)."""
    if not sharding.spec or sharding.spec[0] is None:
        return ()
    first = sharding.spec[0]
    return tuple(first) if isinstance(first, tuple) else (first,)


def batch_shards(sharding: NamedSharding) -> int:
    """How many slices the sharding cuts a batch into."""
    shape = dict(sharding.mesh.shape)
    return math.prod(shape[axis] for axis in batch_axes(sharding))


def replicate_dataset(root: Any, sharding: NamedSharding) -> None:
    """Puts every dataset array (``DataVar``) under ``root`` on the mesh's devices.

    Replicated, so that each device reads its slice of a batch locally: one copy
    of the dataset per device, made once.
    """
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    for _, node in nnx.iter_graph(root):
        if isinstance(node, DataVar):
            node.set_raw_value(global_copy(node.get_raw_value(), replicated))


def global_copy(value: Any, sharding: NamedSharding) -> jax.Array:
    """``value`` (the same on every process) as a global array of ``sharding``.

    ``jax.device_put`` reaches this process's devices only; on several processes
    each one fills its own devices' part of the global array.
    """
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def constrain(batch: Batch, sharding: NamedSharding | None) -> Batch:
    """``batch`` with every field constrained to ``sharding`` (traced)."""
    if sharding is None:
        return batch
    return {k: jax.lax.with_sharding_constraint(v, sharding) for k, v in batch.items()}


def read_on_devices(
    source: DataSource, plan: Any, key: jax.Array | None, sharding: NamedSharding,
    start: jax.Array, batches: int, batch_size: int,
) -> Batch:  # fmt: skip
    """``batches`` global batches from ``start``, each device reading its slice.

    For sources that read on the host (``reads_on_host``): under ``shard_map``
    every device calls the source's host read for the records of its own slice
    of each batch, so each JAX process reads only what its devices hold, and
    nothing is gathered on one device; each device's read is checked against
    the source's element spec. Returns ``[batches, batch_size, ...]`` per field,
    sharded on axis 1. Devices that hold the same slice (mesh axes the batch is
    not split over) each read it.
    """
    axes = batch_axes(sharding)
    local = batch_size // batch_shards(sharding)
    # shard_map takes no closed-over arrays: the source's state goes in as an
    # argument (replicated, like the plan), and is merged back on each device.
    graphdef, state = nnx.split(source)

    def one_device(state: Any, plan: Any, key: Any, start: jax.Array) -> Batch:
        device_source = nnx.merge(graphdef, state)
        shard = jax.lax.axis_index(axes) if axes else 0
        offsets = (
            jnp.arange(batches, dtype=jnp.int32)[:, None] * batch_size
            + shard * local
            + jnp.arange(local, dtype=jnp.int32)[None, :]
        )
        positions = (start + offsets).reshape(-1)
        raw = checked_read(
            device_source, device_source.read_at(plan, positions, key), positions.size
        )
        return {k: v.reshape(batches, local, *v.shape[1:]) for k, v in raw.items()}

    split = PartitionSpec(None, sharding.spec[0] if axes else None)
    return jax.shard_map(
        one_device,
        mesh=sharding.mesh,
        in_specs=PartitionSpec(),
        out_specs=split,
        check_vma=False,  # a callback's output is not known to vary by device
    )(state, plan, key, start)
