"""Batches sharded over a device mesh (one process, 4 forced CPU devices)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

# A subprocess with four forced CPU devices runs every case, once per test run
# (30-40 s): its result is kept in the run's folder (run_once), as pytest tore
# the module fixture down and set it up again between this module's tests on
# one xdist worker. The group keeps the other worker from waiting on it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharding")]

SCRIPT = textwrap.dedent(
    """
    import json, tempfile
    import jax, numpy as np
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.operators import HostOperator
    from datarax.sources import (
        HostMapSource, HostRecordSource, MemorySource, StreamingDiskSource)

    class Rows(HostRecordSource):  # host records: a string per record
        def __len__(self):
            return 40

        def record(self, index):
            return {"text": "x" * index}

    def measure(record, rng):  # a stochastic host stage
        return {"x": np.float32([len(record["text"]), rng.random(), 0.0]),
                "label": len(record["text"])}

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    data = {"x": np.arange(40 * 3, dtype=np.float32).reshape(40, 3),
            "label": np.arange(40, dtype=np.int32)}

    def noisy(record, key):
        return {**record, "u": jax.random.uniform(key)}

    def build(source, sharding):
        return Pipeline(source=source, stages=[ElementOperator(noisy, stochastic=True)],
                        batch_size=8, shuffle=True, num_epochs=None, rngs=nnx.Rngs(2),
                        sharding=sharding)

    def modes(pipe):
        it = iter(pipe)
        batches = [next(it) for _ in range(2)] + [pipe.step()]
        stacked = pipe.scan(lambda b: b, length=2)
        return batches, stacked

    def same(a, b):
        return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)

    folder = tempfile.mkdtemp()
    for name, array in data.items():
        np.save(f"{folder}/{name}.npy", array)
    out, unsharded = {}, {}
    for kind, make in [("memory", lambda: MemorySource(data)),
                       ("disk", lambda: StreamingDiskSource(folder)),
                       ("host", lambda: HostMapSource(
                           Rows(), [HostOperator(measure, stochastic=True)]))]:
        batches, stacked = modes(build(make(), sharding))
        plain, plain_stacked = modes(build(make(), None))
        unsharded[kind] = plain, plain_stacked
        out[kind] = {
            "equal": all(same(a, b) for a, b in zip(batches, plain))
            and same(stacked, plain_stacked),
            "sharded": all(
                v.sharding.is_equivalent_to(sharding, v.ndim)
                and len(v.addressable_shards) == 4
                and v.addressable_shards[0].data.shape[0] == 2
                for b in batches for v in b.values()
            ),
        }
    # A 2-d mesh, the batch split over "data" (each slice read by both "model"
    # devices) or over both axes: the disk source read on each device.
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    out["mesh2"] = []
    plain, plain_stacked = unsharded["disk"]
    for spec in (P("data"), P(("data", "model"))):
        disk = StreamingDiskSource(folder)
        batches, stacked = modes(build(disk, NamedSharding(mesh2, spec)))
        out["mesh2"].append(all(same(a, b) for a, b in zip(batches, plain))
                            and same(stacked, plain_stacked)
                            and batches[0]["x"].sharding.spec == spec)
    errors = []
    for kwargs in [dict(batch_size=6), dict(sharding="data"),
                   dict(sharding=NamedSharding(mesh, P("data", None))),
                   dict(batch_size=12, num_epochs=1)]:
        try:
            Pipeline(source=MemorySource(data), **{"batch_size": 8,
                     "sharding": sharding, **kwargs})
            errors.append(None)
        except (TypeError, ValueError) as err:
            errors.append(f"{type(err).__name__}: {err}")
    out["errors"] = errors
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result(run_on_devices, run_once) -> dict:
    def run(out: Path) -> None:
        (out / "result.json").write_text(json.dumps(run_on_devices(SCRIPT, devices=4)))

    return json.loads((run_once("sharding", run) / "result.json").read_text())


@pytest.mark.parametrize("kind", ["memory", "disk", "host"])
def test_sharded_batches_equal_the_unsharded_ones_in_every_mode(result, kind):
    # Iteration, step() and scan; a shuffled stream with a stochastic stage.
    assert result[kind]["equal"]
    assert result[kind]["sharded"]  # 4 devices, 2 records each


def test_a_disk_source_on_a_two_axis_mesh_serves_the_unsharded_stream(result):
    # The batch over "data" (replicated over "model"), then over both axes.
    assert result["mesh2"] == [True, True]


def test_a_sharding_that_cannot_split_the_batches_is_refused(result):
    assert result["errors"] == [
        "ValueError: batch_size=6 does not divide over the 4 devices of the "
        "sharding's batch axis 'data'; use a batch size that divides by 4.",
        "TypeError: sharding takes a jax.sharding.NamedSharding of the batch's "
        "leading axis, e.g. NamedSharding(mesh, PartitionSpec('data')); got str.",
        "ValueError: sharding shards the batch's leading axis only, so its "
        "PartitionSpec has one entry, e.g. PartitionSpec('data'); got "
        "PartitionSpec('data', None).",
        "ValueError: iteration would end on a short batch of 4 records, which "
        "cannot be split over the 4 devices of the sharding; pass drop_last=True "
        "(or num_epochs=None: step() and scan serve full batches).",
    ]
