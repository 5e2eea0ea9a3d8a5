"""Elastic resume: saved by 2 JAX processes, restored on 1 process of 4 devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

COMMON = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    from flax import nnx
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.sources import MemorySource

    def jitter(record, key):
        return {"label": record["label"], "u": jax.random.uniform(key)}

    def build(batch_size, sharding=None):
        return Pipeline(
            source=MemorySource({"label": np.arange(29, dtype=np.int32)}),
            stages=[ElementOperator(jitter, stochastic=True)],
            batch_size=batch_size, shuffle=True, num_epochs=None, rngs=nnx.Rngs(4),
            sharding=sharding,
        )
    """
)

SAVE = COMMON + textwrap.dedent(
    """
    import datarax.checkpoint
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2])
    )
    pipe = build(8)
    pipe.scan(lambda b: b["u"], length=3)  # 24 records, 12 per process
    if jax.process_index() == 0:
        datarax.checkpoint.save(sys.argv[3], pipe)
    print(json.dumps({"position": int(pipe.position[...])}))
    """
)

RESTORE = COMMON + textwrap.dedent(
    """
    import datarax.checkpoint
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = build(12, NamedSharding(mesh, PartitionSpec("data")))
    datarax.checkpoint.restore(sys.argv[1], sharded)
    plain = build(4)
    datarax.checkpoint.restore(sys.argv[1], plain)
    reference = build(6)
    for _ in range(4):
        reference.step()  # the 24 records the two processes served
    def served(pipe, steps):
        batches = [pipe.step() for _ in range(steps)]
        return {k: np.concatenate([np.asarray(b[k]) for b in batches]).tolist()
                for k in batches[0]}
    print(json.dumps({
        "devices": len(jax.devices()),
        "position": int(sharded.position[...]),
        "sharded": served(sharded, 2),
        "plain": served(plain, 6),
        "reference": served(reference, 4),
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_on_four_devices_at_other_batch_sizes(
    tmp_path, run_on_devices
):
    path = str(tmp_path / "ck.npz")
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    savers = [
        subprocess.Popen(
            [sys.executable, "-c", SAVE, address, str(i), path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    for saver in savers:
        out, err = saver.communicate(timeout=180)
        assert saver.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"position": 24}

    result = run_on_devices(RESTORE, path, devices=4, timeout=180)
    assert result["devices"] == 4 and result["position"] == 24
    # The next 24 records: the same in batches of 12 over 4 devices, in batches of
    # 4 on one device, and in a pipeline that never saw a checkpoint.
    assert result["sharded"] == result["plain"] == result["reference"]
    assert len(set(result["sharded"]["label"][:24])) > 1
