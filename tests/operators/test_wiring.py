"""parallel, Mean and Concatenate: branches and merges wired by Pipeline.from_dag."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import (
    Brightness,
    Concatenate,
    ElementOperator,
    GaussianNoise,
    Mean,
    parallel,
)
from datarax.sources import MemorySource

IMAGES = np.random.default_rng(0).random((16, 4, 4, 3)).astype(np.float32)


def build(wiring, batch_size=4):
    return Pipeline.from_dag(
        source=MemorySource({"image": IMAGES, "label": np.arange(16, dtype=np.int32)}),
        batch_size=batch_size,
        rngs=nnx.Rngs(3),
        **wiring,
    )


def test_parallel_is_the_dag_written_out():
    bright, noisy = Brightness(0.3), GaussianNoise(0.1)
    wiring = parallel({"bright": bright, "noisy": noisy}, Mean())
    assert wiring["edges"] == {"bright": [], "noisy": [], "merge": ["bright", "noisy"]}
    assert wiring["sink"] == "merge" and wiring["nodes"]["bright"] is bright
    by_helper = np.asarray(build(wiring).step()["image"])
    by_hand = build(
        {
            "nodes": {
                "bright": Brightness(0.3),
                "noisy": GaussianNoise(0.1),
                "merge": lambda a, b: {
                    "image": (a["image"] + b["image"]) / 2,
                    "label": ((a["label"] + b["label"]) / 2).astype(np.float32),
                },
            },
            "edges": wiring["edges"],
            "sink": "merge",
        }
    ).step()
    np.testing.assert_allclose(by_helper, np.asarray(by_hand["image"]), rtol=1e-6)
    # Each branch drew its own randomness: the mean is neither branch alone.
    assert not np.allclose(by_helper, IMAGES[:4])


def test_mean_averages_integer_fields_as_float_and_concatenate_joins():
    double = ElementOperator(lambda r, k: {**r, "image": r["image"] * 2})
    same = ElementOperator(lambda r, k: r)
    batch = build(parallel({"a": double, "b": same}, Mean())).step()
    np.testing.assert_allclose(batch["image"], IMAGES[:4] * 1.5, rtol=1e-6)
    assert batch["label"].dtype == np.float32
    np.testing.assert_array_equal(batch["label"], np.arange(4))
    join = Concatenate(axis=-1, fields=["image"])
    joined = build(parallel({"a": double, "b": same}, join)).step()
    assert joined["image"].shape == (4, 4, 4, 6)
    np.testing.assert_allclose(joined["image"][..., 3:], IMAGES[:4])
    np.testing.assert_allclose(joined["image"][..., :3], IMAGES[:4] * 2)
    np.testing.assert_array_equal(joined["label"], np.arange(4))
    # Axis 0 is the record's first axis (its rows), never the batch's.
    rows = build(parallel({"a": double, "b": same}, Concatenate(0, ["image"])))
    assert rows.step()["image"].shape == (4, 8, 4, 3)
    with pytest.raises(ValueError) as info:
        build(parallel({"a": double, "b": same}, Concatenate())).step()
    assert (
        "Concatenate joins records along their axis -1, but field 'label' holds one "
        "number per record; name the fields to join with fields=(...)"
    ) in str(info.value)


def test_bad_wiring_is_named():
    with pytest.raises(ValueError) as info:
        parallel({"only": Brightness(0.1)}, Mean())
    assert "at least two branches" in info.exconly()
    assert "a single stage needs no merge: put it in stages=." in info.exconly()
    with pytest.raises(ValueError) as info:
        parallel({"merge": Brightness(0.1), "b": Brightness(0.1)}, Mean())
    assert info.exconly() == (
        "ValueError: a branch is named 'merge', the merging node's name; rename "
        "the branch or pass merge_name=."
    )
    with pytest.raises(TypeError) as info:
        parallel({"a": Brightness(0.1), "b": 3}, Mean())
    assert info.exconly() == (
        "TypeError: parallel's node 'b' is a int, not a stage (a callable batch "
        "-> batch, such as an operator)."
    )
    drop = ElementOperator(lambda r, k: {"image": r["image"]})
    same = ElementOperator(lambda r, k: r)
    with pytest.raises(ValueError) as info:
        build(parallel({"a": same, "b": drop}, Mean())).step()
    assert (
        "Mean merges branches field by field, but branch 1 serves fields ['image'] "
        "and branch 0 ['image', 'label']" in str(info.value)
    )
