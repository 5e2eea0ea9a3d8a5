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
    if int(sys.argv[2]) > 1:
        jax.distributed.initialize(
            coordinator_address=sys.argv[1], num_processes=int(sys.argv[2]),
            process_id=int(sys.argv[3]),
        )
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.sources import MemorySource, MixDataSourcesNode, StreamingDiskSource

    folder = sys.argv[4]
    sharding = None
    if sys.argv[5] == "sharded":
        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharding = NamedSharding(mesh, PartitionSpec("data"))

    def noisy(record, key):
        return {"label": record["label"], "u": jax.random.uniform(key)}

    def sources():
        labels = np.arange(37, dtype=np.int32)
        yield "memory", MemorySource({"label": labels})
        halves = [MemorySource({"label": labels[:20]}),
                  MemorySource({"label": labels[20:]})]
        yield "mix", MixDataSourcesNode(halves, [2, 1])
        if sharding is None:
            return  # the reference: disk and ArrayRecord serve the memory stream
        yield "disk", StreamingDiskSource(folder + "/npy")
        try:
            from datarax.integrations.arrayrecord import ArrayRecordSource
        except ImportError:
            return
        yield "arrayrecord", ArrayRecordSource(folder + "/labels.array_record")

    def whole(x):  # the global batch, gathered from every process
        if sharding is None:
            return np.asarray(x).tolist()
        return np.asarray(multihost_utils.process_allgather(x, tiled=True)).tolist()

    out = {}
    for name, source in sources():
        pipe = Pipeline(
            source=source, stages=[ElementOperator(noisy, stochastic=True)],
            batch_size=8, shuffle=True, num_epochs=None, rngs=nnx.Rngs(3),
            sharding=sharding,
        )
        scanned = pipe.scan(lambda b: b, length=2)
        stepped = pipe.step()
        iterated = next(iter(pipe))
        out[name] = {
            "specs": [
                list(getattr(b["u"].sharding, "spec", []))
                for b in (scanned, stepped, iterated)
            ],
            **{
                f"{mode}_{field}": whole(batch[field])
                for mode, batch in (("scan", scanned), ("step", stepped),
                                    ("iter", iterated))
                for field in ("label", "u")
            },
        }
    if sharding is not None:  # a mesh of the other process's devices only
        others = [d for d in jax.devices() if d.process_index != jax.process_index()]
        mesh = Mesh(np.array(others), ("data",))
        foreign = NamedSharding(mesh, PartitionSpec("data"))
        try:
            Pipeline(source=MemorySource({"x": np.arange(8)}), batch_size=4,
                     sharding=foreign)
        except ValueError as err:
            out["foreign"] = str(err).split(" (process")[0]
    print(json.dumps(out))
    """
)


def _run_sharded(folder, processes: int, devices: int, mode: str) -> list[dict]:
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # Keeps the suite's XLA flags (tests/conftest.py), adds the device count.
    flags = os.environ.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
    argv = [sys.executable, "-c", SHARDED, address, str(processes)]
    procs = [
        subprocess.Popen(
            [*argv, str(i), str(folder), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_a_sharded_pipeline_on_two_processes_serves_the_one_process_stream(tmp_path):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "label.npy", np.arange(37, dtype=np.int32))
    try:
        from datarax.integrations.arrayrecord import write_array_record
    except ImportError:
        pass
    else:
        write_array_record(
            tmp_path / "labels.array_record",
            [{"label": np.int32(i)} for i in range(37)],
        )
    # One process, one device, no sharding: the reference stream.
    (single,) = _run_sharded(tmp_path, 1, 1, "plain")
    # Two processes of two devices each, the batch sharded over all four.
    first, second = _run_sharded(tmp_path, 2, 2, "sharded")
    assert first == second  # every process holds the same global batches
    assert (
        first.pop("foreign")
        == "the sharding's mesh holds none of this process's devices"
    )
    second.pop("foreign")
    assert {"memory", "disk", "mix"} <= set(first) and set(single) == {"memory", "mix"}
    for name, got in first.items():
        # scan stacks batches sharded P("data"); step() and iteration serve them.
        assert got["specs"] == [[None, "data"], ["data"], ["data"]], name
        # The sources tests show disk and ArrayRecord serve the memory stream.
        for key, value in single["mix" if name == "mix" else "memory"].items():
            if key != "specs":
                np.testing.assert_allclose(got[key], value, err_msg=f"{name} {key}")
        # The stream ran on: scan's two batches, then step's, then iteration's
        # (a mix repeats its first child's records: 2/3 of 32 draws from 20).
        labels = [*np.ravel(got["scan_label"]), *got["step_label"], *got["iter_label"]]
        assert len(labels) == 32, name
        assert len(set(labels)) == 32 or name == "mix", name
