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
