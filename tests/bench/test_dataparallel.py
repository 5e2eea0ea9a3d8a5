"""DP-1, the data-parallel scenario: 8 forced CPU devices, an MLP step per batch."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from datarax.bench import ADAPTERS, SCENARIOS

# One subprocess with eight forced CPU devices checks every adapter (the test
# process has one device, fixed when jax started).
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys, tempfile
    from pathlib import Path
    import jax, numpy as np
    from datarax.bench import ADAPTERS, SCENARIOS, measure_cell
    from datarax.bench._scenarios import Variant

    scenario = dataclasses.replace(
        SCENARIOS["DP-1"], variants={"tiny": Variant(2048, 2)}
    )
    out = {"params": {}, "specs": {}, "skipped": {}}
    for name in sys.argv[1:]:
        adapter = ADAPTERS[name](**({"unroll": 1} if name == "Floor" else {}))
        why = adapter.unsupported(scenario)
        if why is not None:
            out["skipped"][name] = why
            continue
        adapter.setup(scenario, "tiny", scenario.data("tiny"), Path(tempfile.mkdtemp()))
        # Five SGD steps on the first five batches (one epoch holds eight).
        assert adapter.run(2) + adapter.run(3) == 5 * 256
        state = adapter._state
        out["params"][name] = {k: np.asarray(v).tolist() for k, v in state.items()}
        out["specs"][name] = sorted(
            {tuple(v.sharding.spec) for v in jax.tree.leaves(state)}
        )
        if name == "Datarax":  # a batch as the iterator serves it
            batch = adapter._next()
            out["batch"] = {k: [list(v.sharding.spec), len(v.addressable_shards)]
                            for k, v in batch.items()}
        adapter.close()
    row = measure_cell("Datarax-scan", "DP-1", variant="small", repeats=1, warmup=1,
                       num_batches=3, floor_unroll=1)
    out["row"] = {k: row.get(k) for k in ("status", "reason", "error")}
    print(json.dumps(out))
    """
)


def test_every_adapter_trains_the_same_mlp_on_sharded_batches(run_on_devices):
    names = ["Floor", "Datarax", "Datarax-scan", "Grain", "NumPy-loop"]
    out = run_on_devices(SCRIPT, *names, devices=8)
    # A loader that shards no batches is skipped, never run on less work.
    assert "shards them over 8" in out["skipped"].pop("NumPy-loop")
    if ADAPTERS["Grain"].missing() is not None:
        out["skipped"]["Grain"] = "missing"
    assert out["skipped"] == {} or out["skipped"] == {"Grain": "missing"}
    # Each served the same records, sharded the same way: after five steps the
    # MLP's parameters agree (XLA may sum the gradients in another order).
    floor = out["params"].pop("Floor")
    assert set(out["params"]) >= {"Datarax", "Datarax-scan"}
    for name, params in out["params"].items():
        for key, value in floor.items():
            np.testing.assert_allclose(
                params[key], value, rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}"
            )
    # The parameters stay replicated; the batch is split over the 8 devices.
    assert all(specs == [[]] for specs in out["specs"].values()), out["specs"]
    assert out["batch"] == {
        "features": [["data"], 8],
        "label": [["data"], 8],
    }
    assert out["row"]["status"] == "ok", out["row"]


def test_the_runner_gives_a_sharded_scenario_its_devices():
    from datarax.bench._runner import _worker_env

    flags = _worker_env(SCENARIOS["DP-1"])["XLA_FLAGS"]
    assert "--xla_force_host_platform_device_count=8" in flags
    assert _worker_env(SCENARIOS["NLP-1"]).get("XLA_FLAGS") == os.environ.get(
        "XLA_FLAGS"
    )
