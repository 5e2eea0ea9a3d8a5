"""The peer adapters (Grain, tf.data, PyTorch, SPDL, HF datasets) on real data.

Every peer that is installed runs every scenario it supports on a tiny variant;
peers that are not installed are skipped (install ``datarax-bench[peers]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import psutil
import pytest

from datarax.bench._adapter import Adapter
from datarax.bench._peers import (
    GrainAdapter,
    GrainProcessesAdapter,
    HFDatasetsAdapter,
    SPDLAdapter,
    TFDataAdapter,
    TorchAdapter,
)
from datarax.bench._peers._stream import IndexStream
from datarax.bench._scenarios import SCENARIOS, Scenario, Variant, output_spec

PEERS: list[type[Adapter]] = [
    GrainAdapter,
    GrainProcessesAdapter,
    TFDataAdapter,
    TorchAdapter,
    SPDLAdapter,
    HFDatasetsAdapter,
]
NUM_RECORDS = 256  # 8 batches of 32: one epoch of NLP-1 is quick for every peer
#: The scenarios of one device; DP-1's 8 devices: tests/bench/test_dataparallel.py.
ONE_DEVICE = [sid for sid, s in SCENARIOS.items() if s.devices == 1]


def tiny(scenario_id: str, **changes: object) -> Scenario:
    """A scenario with a 256-record ``tiny`` variant (and optional changes)."""
    return dataclasses.replace(
        SCENARIOS[scenario_id], variants={"tiny": Variant(NUM_RECORDS, 4)}, **changes
    )


@pytest.fixture
def build(set_up: Callable[..., Adapter]) -> Callable[..., Adapter]:
    """Builds a peer adapter by class through conftest's ``set_up`` (closes it)."""

    def make(cls: type[Adapter], scenario: Scenario, **options: object) -> Adapter:
        return set_up(cls.name, scenario, **options)

    return make


def rows(batches: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([b[name] for b in batches])


@pytest.mark.parametrize("scenario_id", ONE_DEVICE)
@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_batches_match_output_spec(build, cls, scenario_id):
    scenario = tiny(scenario_id)
    adapter = build(cls, scenario)
    batches = adapter.batches(3)
    spec = output_spec(scenario)
    assert len(batches) == 3
    for batch in batches:
        assert set(batch) == set(spec)
        for name, (shape, dtype) in spec.items():
            assert batch[name].shape == (scenario.batch_size, *shape), name
            assert str(batch[name].dtype) == dtype, name
            assert np.isfinite(batch[name]).all()
    assert adapter.run(2) == 2 * scenario.batch_size


@pytest.mark.parametrize("scenario_id", ["NLP-1", "IO-2"])
@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_unshuffled_stream_is_the_data_in_order_across_runs_and_epochs(
    build, cls, scenario_id
):
    scenario = tiny(scenario_id)
    adapter = build(cls, scenario)
    tokens = scenario.data("tiny")[0]["tokens"]
    assert adapter.run(2) == 64  # the timed path serves records 0..63
    # 10 more batches: the rest of epoch 0, then epoch 1 starts over.
    served = rows(adapter.batches(10), "tokens")
    np.testing.assert_array_equal(served[: NUM_RECORDS - 64], tokens[64:])
    np.testing.assert_array_equal(served[NUM_RECORDS - 64 :], tokens[:128])


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_shuffled_epoch_is_a_fresh_permutation(build, cls):
    scenario = tiny("NLP-1", shuffle=True)
    adapter = build(cls, scenario)
    tokens = scenario.data("tiny")[0]["tokens"]
    served = rows(adapter.batches(16), "tokens")  # two epochs
    first, second = served[:NUM_RECORDS], served[NUM_RECORDS:]
    for epoch in (first, second):
        order = np.lexsort(epoch.T[::-1])
        np.testing.assert_array_equal(epoch[order], tokens[np.lexsort(tokens.T[::-1])])
    assert not np.array_equal(first, tokens)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_mix_draws_each_source_by_its_weight(build, cls):
    scenario = tiny("IO-3")
    adapter = build(cls, scenario)
    sources = scenario.data("tiny")
    owner = {
        row.tobytes(): i for i, source in enumerate(sources) for row in source["tokens"]
    }
    served = rows(adapter.batches(20), "tokens")
    drawn = np.bincount([owner[row.tobytes()] for row in served], minlength=3)
    weights = np.asarray(scenario.mix_weights)
    np.testing.assert_allclose(drawn / drawn.sum(), weights / weights.sum(), atol=0.1)


def _worker_pids() -> set[int]:
    """Live descendants of this process, less multiprocessing's own servers.

    The fork server and resource tracker are started once per process and kept
    on purpose; the loaders' workers are what ``close`` must end.
    """
    me = psutil.Process()
    pids = set()
    for proc in me.children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            server = proc.ppid() == me.pid and (
                "forkserver" in cmd or "resource_tracker" in cmd
            )
            if proc.status() != psutil.STATUS_ZOMBIE and not server:
                pids.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_close_leaves_no_live_workers(build, cls):
    before = _worker_pids()
    # PyTorch reads in-process by default on 2 cores: ask for workers here.
    options = {"num_workers": 2} if cls is TorchAdapter else {}
    adapter = build(cls, tiny("CV-1"), **options)
    adapter.batches(2)
    if cls is TorchAdapter:
        assert len(_worker_pids() - before) >= 1  # it does run worker processes
    adapter.close()
    deadline = time.monotonic() + 10
    while (left := _worker_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.name)
def test_peer_names_its_modules_install_and_settings(cls):
    assert cls.kind == "peer"
    assert cls.modules
    assert 'pip install "datarax-bench[peers]"' in cls.install
    settings = cls().settings()
    assert settings
    json.dumps(settings)  # recorded in the JSON report


def test_import_datarax_bench_loads_no_peer_library():
    code = (
        "import sys, datarax.bench, datarax.bench._peers\n"
        "peers = ('grain', 'tensorflow', 'torch', 'spdl', 'datasets', 'pyarrow')\n"
        "print(sorted(m for m in peers if m in sys.modules))\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_index_stream_epochs_are_permutations_and_batches_cross_epochs():
    stream = iter(IndexStream([10], 4, shuffle=True, seed=3))
    served = np.concatenate([next(stream)[1] for _ in range(5)])  # 20 = 2 epochs
    for epoch in (served[:10], served[10:]):
        assert sorted(epoch.tolist()) == list(range(10))
    assert served[:10].tolist() != served[10:].tolist()


def test_index_stream_mix_reads_each_source_in_order_by_weight():
    stream = iter(IndexStream([50, 30, 20], 10, weights=[0.5, 0.3, 0.2], seed=1))
    served = np.concatenate([next(stream)[1] for _ in range(50)])
    for low, high in ((0, 50), (50, 80), (80, 100)):
        mine = served[(served >= low) & (served < high)]
        expect = low + np.arange(len(mine)) % (
            high - low
        )  # in order, epoch after epoch
        np.testing.assert_array_equal(mine, expect)
    share = np.bincount(np.searchsorted([50, 80], served, side="right")) / len(served)
    np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.05)


def test_index_stream_rejects_weights_of_another_length():
    with pytest.raises(ValueError, match="2 weights for 3 sources"):
        IndexStream([1, 2, 3], 2, weights=[0.5, 0.5])
