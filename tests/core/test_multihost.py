"""Several JAX processes: each serves its slice of every global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=sys.argv[1], num_processes=int(sys.argv[2]),
        process_id=int(sys.argv[3]),
    )
    import numpy as np
    from flax import nnx
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.sources import MemorySource

    def noisy(record, key):
        return {"label": record["label"], "u": jax.random.uniform(key)}

    pipe = Pipeline(
        source=MemorySource({"label": np.arange(37, dtype=np.int32)}),
        stages=[ElementOperator(noisy, stochastic=True)],
        batch_size=8, shuffle=True, num_epochs=None, rngs=nnx.Rngs(3),
    )
    scanned = pipe.scan(lambda b: b, length=3)
    it = iter(pipe)
    iterated = [next(it) for _ in range(2)]
    try:
        Pipeline(source=MemorySource({"label": np.arange(5)}), batch_size=7)
        odd = ""
    except ValueError as err:
        odd = str(err)
    print(json.dumps({
        "odd": odd,
        "scan_label": np.asarray(scanned["label"]).tolist(),
        "scan_u": np.asarray(scanned["u"]).tolist(),
        "iter_label": [np.asarray(b["label"]).tolist() for b in iterated],
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(processes: int) -> list[dict]:
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, address, str(processes), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_process_slices_concatenate_to_the_single_process_batch():
    (single,) = _run(1)
    first, second = _run(2)
    for field in ("scan_label", "scan_u"):
        joined = np.concatenate([first[field], second[field]], axis=1)
        np.testing.assert_array_equal(joined, single[field])
        assert np.asarray(first[field]).shape == (3, 4)
    joined = np.concatenate([first["iter_label"], second["iter_label"]], axis=1)
    np.testing.assert_array_equal(joined, single["iter_label"])
    assert single["odd"] == ""
    assert "must divide by the number of JAX processes (2)" in first["odd"]


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2])
    )
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.sources import MemorySource, MixDataSourcesNode, StreamingDiskSource

    folder = sys.argv[3]
    mesh = Mesh(np.array(jax.devices()), ("data",))

    def noisy(record, key):
        return {"label": record["label"], "u": jax.random.uniform(key)}

    reads = []  # the rows this process's host reads asked for

    class CountedDisk(StreamingDiskSource):
        def host_read(self, rows):
            reads.extend(int(r) for r in rows)
            return super().host_read(rows)

    def sources():
        labels = np.arange(37, dtype=np.int32)
        yield "memory", MemorySource({"label": labels})
        halves = [MemorySource({"label": labels[:20]}),
                  MemorySource({"label": labels[20:]})]
        yield "mix", MixDataSourcesNode(halves, [2, 1])
        # Disk stands for every HostSourceBase (ArrayRecord, TFDS): the base
        # makes each process read its own rows.
        yield "disk", CountedDisk(folder + "/npy")

    def batches(source, sharding):
        pipe = Pipeline(
            source=source, stages=[ElementOperator(noisy, stochastic=True)],
            batch_size=8, shuffle=True, num_epochs=None, rngs=nnx.Rngs(3),
            sharding=sharding,
        )
        reads.clear()
        scanned = jax.block_until_ready(pipe.scan(lambda b: b, length=2))
        scan_reads = sorted(reads)  # the callbacks ran before the result was ready
        got = {"scan": scanned, "step": pipe.step(), "iter": next(iter(pipe))}
        return got, scan_reads

    out = {"sharded": {}, "slices": {}}
    for name, source in sources():
        got, scan_reads = batches(source, NamedSharding(mesh, PartitionSpec("data")))
        if name == "disk":  # the rows read for scan, and the labels held here
            out["disk_reads"] = scan_reads
            out["disk_held"] = sorted(
                int(x) for shard in got["scan"]["label"].addressable_shards
                for x in np.ravel(shard.data)
            )
        out["sharded"][name] = {
            "specs": [list(b["u"].sharding.spec) for b in got.values()],
            **{  # the global batch, gathered from every process
                f"{mode}_{field}": np.asarray(
                    multihost_utils.process_allgather(b[field], tiled=True)
                ).tolist()
                for mode, b in got.items() for field in ("label", "u")
            },
        }
        if name in ("memory", "mix"):  # the reference: this process's slices
            plain, _ = batches(source, None)
            out["slices"][name] = {
                f"{mode}_{field}": np.asarray(b[field]).tolist()
                for mode, b in plain.items() for field in ("label", "u")
            }
    # A mesh of the other process's devices only.
    others = [d for d in jax.devices() if d.process_index != jax.process_index()]
    foreign = NamedSharding(Mesh(np.array(others), ("data",)), PartitionSpec("data"))
    try:
        Pipeline(source=MemorySource({"x": np.arange(8)}), batch_size=4,
                 sharding=foreign)
    except ValueError as err:
        out["foreign"] = str(err).split(" (process")[0]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_a_sharded_pipeline_on_two_processes_serves_the_one_process_stream(tmp_path):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "label.npy", np.arange(37, dtype=np.int32))
    # Two processes of two devices each, the batch sharded over all four.
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # Keeps the suite's XLA flags (tests/conftest.py), adds the device count.
    flags = os.environ.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARDED, address, str(i), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    refused = "the sharding's mesh holds none of this process's devices"
    assert first["foreign"] == second["foreign"] == refused
    # Every process holds the same global batches.
    assert first["sharded"] == second["sharded"]
    # Each process read from disk exactly the records its devices hold: half of
    # scan's two batches of 8 (labels are row numbers), none of the other's.
    for result in (first, second):
        assert len(result["disk_reads"]) == 8
        assert result["disk_reads"] == result["disk_held"]
    assert set(first["disk_held"]).isdisjoint(second["disk_held"])
    assert set(first["sharded"]) == {"memory", "disk", "mix"}
    # The reference: unsharded, process i serves the i-th half of each batch,
    # and the halves concatenate to the one-process stream (the test above).
    reference = {
        name: {
            key: np.concatenate(
                [first["slices"][name][key], second["slices"][name][key]],
                axis=1 if key.startswith("scan") else 0,
            )
            for key in first["slices"][name]
        }
        for name in ("memory", "mix")
    }
    for name, got in first["sharded"].items():
        # scan stacks batches sharded P("data"); step() and iteration serve them.
        assert got.pop("specs") == [[None, "data"], ["data"], ["data"]], name
        # The sources tests show disk and ArrayRecord serve the memory stream.
        want = reference["mix" if name == "mix" else "memory"]
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, err_msg=f"{name} {key}")
        # The stream ran on: scan's two batches, then step's, then iteration's
        # (a mix repeats its first child's records: 2/3 of 32 draws from 20).
        labels = [*np.ravel(got["scan_label"]), *got["step_label"], *got["iter_label"]]
        assert len(labels) == 32, name
        assert len(set(labels)) == 32 or name == "mix", name
