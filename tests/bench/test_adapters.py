"""Every installed adapter serves the scenario's batches; Datarax = Datarax-scan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from datarax.bench import ADAPTERS, SCENARIOS, apply_numpy, build_pipeline, output_spec
from datarax.bench._floor import UNROLLS
from datarax.bench._scenarios import Variant
from datarax.operators import (
    ColorJitter,
    Cutout,
    HorizontalFlip,
    Normalize,
    RandomResizedCrop,
)

NUM_RECORDS = 256
#: The scenarios of one device; DP-1's 8 devices: tests/bench/test_dataparallel.py.
ONE_DEVICE = [sid for sid, s in SCENARIOS.items() if s.devices == 1]


def small(scenario_id, **changes):
    return dataclasses.replace(
        SCENARIOS[scenario_id], variants={"tiny": Variant(NUM_RECORDS, 2)}, **changes
    )


def options(name):
    # The Floor's unroll search compiles four loops; one is enough for shapes.
    return {"unroll": 1} if name == "Floor" else {}


def assert_spec(scenario, batches):
    spec = output_spec(scenario)
    for batch in batches:
        assert batch.keys() == spec.keys()
        for field, (shape, dtype) in spec.items():
            assert batch[field].shape == (scenario.batch_size, *shape), field
            assert str(batch[field].dtype) == dtype, field


# The two datarax adapters are held to output_spec by the same-records test
# below, which builds both (their pipelines are the costliest to compile), and
# the peers by tests/bench/test_peers.py (test_batches_match_output_spec).
OTHERS = [
    name
    for name, cls in ADAPTERS.items()
    if name not in ("Datarax", "Datarax-scan") and cls.kind != "peer"
]


@pytest.mark.parametrize("scenario_id", ONE_DEVICE)
@pytest.mark.parametrize("name", OTHERS)
def test_adapter_serves_the_records_and_shapes_of_the_floor(set_up, name, scenario_id):
    # Against output_spec, which the Floor (one of ADAPTERS) is held to as well.
    scenario = small(scenario_id)
    adapter = set_up(name, scenario, **options(name))
    batches = adapter.batches(3)
    assert adapter.run(2) == 2 * scenario.batch_size
    assert len(batches) == 3
    assert_spec(scenario, batches)


def assert_same_records(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for field in a:
            if np.issubdtype(a[field].dtype, np.integer):
                np.testing.assert_array_equal(a[field], b[field])
            else:
                # XLA fuses a scan body and an iteration chunk differently.
                np.testing.assert_allclose(a[field], b[field], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scenario_id", ONE_DEVICE)
def test_datarax_and_datarax_scan_serve_the_same_records(set_up, scenario_id):
    scenario = small(scenario_id)
    iteration = set_up("Datarax", scenario)
    scan = set_up("Datarax-scan", scenario)
    # Two batches, then two more after a run: scan compiles two programs (an
    # identity and a reducing step), not one per call length (AUG-2's take ~5 s).
    first = iteration.batches(2)
    assert_spec(scenario, first)
    assert_same_records(first, scan.batches(2))
    # Both go on along one stream: after a run, still equal.
    assert iteration.run(2) == scan.run(2) == 2 * scenario.batch_size
    assert_same_records(iteration.batches(2), scan.batches(2))


@pytest.mark.parametrize("name", ["Floor", "Datarax", "Datarax-scan", "NumPy-loop"])
@pytest.mark.parametrize("scenario_id", ["NLP-1", "TAB-1", "PC-2", "IO-2"])
def test_unshuffled_first_batch_is_the_first_records_transformed(
    set_up, name, scenario_id
):
    scenario = small(scenario_id)
    first = set_up(name, scenario, **options(name)).batches(1)[0]
    records = {k: v[: scenario.batch_size] for k, v in scenario.data("tiny")[0].items()}
    expected = apply_numpy(scenario, records, np.random.default_rng(0))
    for field, value in expected.items():
        np.testing.assert_allclose(first[field], value, rtol=1e-6, atol=1e-6)


def test_floor_shuffle_serves_each_record_once_per_epoch(set_up):
    scenario = small("NLP-1", shuffle=True, batch_size=32)
    floor = set_up("Floor", scenario, unroll=2)
    served = np.concatenate([b["tokens"] for b in floor.batches(16)])  # 2 epochs
    tokens = scenario.data("tiny")[0]["tokens"]
    rank = {row.tobytes(): i for i, row in enumerate(tokens)}
    order = [rank[row.tobytes()] for row in served]
    first, second = order[:NUM_RECORDS], order[NUM_RECORDS:]
    assert sorted(first) == sorted(second) == list(range(NUM_RECORDS))
    assert first != second
    assert first != list(range(NUM_RECORDS))


def test_floor_mix_draws_every_source_by_weight(set_up):
    scenario = small("IO-3")
    floor = set_up("Floor", scenario, unroll=1)
    served = np.concatenate([b["tokens"] for b in floor.batches(30)])
    owner = {
        row.tobytes(): source
        for source, data in enumerate(scenario.data("tiny"))
        for row in data["tokens"]
    }
    counts = np.bincount([owner[row.tobytes()] for row in served], minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.3, 0.2], atol=0.06)


def test_floor_times_every_unroll_and_keeps_the_fastest(set_up):
    floor = set_up("Floor", small("NLP-1"))
    settings = floor.settings()
    assert settings["unroll"] in UNROLLS
    timed = {u: settings[f"unroll {u} ms"] for u in UNROLLS}
    assert timed[settings["unroll"]] == min(timed.values())


def test_datarax_builds_image_augmentations_from_its_operators(set_up, tmp_path):
    # The library's operators are what AUG-2 measures, not an ElementOperator.
    scenario = small("AUG-2")
    pipe = build_pipeline(scenario, scenario.data("tiny"), tmp_path)
    classes = [RandomResizedCrop, HorizontalFlip, ColorJitter, Cutout, Normalize]
    assert [type(stage) for stage in pipe.stages] == classes
    crop, flip, jitter, cutout, normalize = pipe.stages
    assert (crop.height, crop.width) == (32, 32)
    assert (crop.scale, crop.ratio) == ((0.08, 1.0), (3 / 4, 4 / 3))
    assert flip.p == 0.5 and cutout.size == 8
    assert [float(v[...]) for v in (jitter.brightness, jitter.contrast)] == [
        pytest.approx(0.4),
        pytest.approx(0.4),
    ]
    assert float(jitter.saturation[...]) == pytest.approx(0.4)
    assert (normalize.mean, normalize.std) == ((127.5,), (127.5,))
    for name in ("Datarax", "Datarax-scan"):
        stages = set_up(name, scenario).settings()["stages"]
        assert stages == [cls.__name__ for cls in classes]
