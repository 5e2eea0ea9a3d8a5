"""Batch-level operators: MixUp and CutMix."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import CutMix, MixUp
from datarax.sources import MemorySource

N = 8


def pipeline(stage, batch_size=N, images=None, labels=None) -> Pipeline:
    if images is None:
        images = np.random.default_rng(0).random((N, 4, 4, 3)).astype(np.float32)
    labels = np.arange(N, dtype=np.int32) if labels is None else labels
    return Pipeline(
        source=MemorySource({"image": images, "label": labels}),
        stages=[stage],
        batch_size=batch_size,
        num_epochs=None,
        rngs=nnx.Rngs(3),
    )


def served(stage, batch_size=N, **data) -> dict[str, np.ndarray]:
    pipe = pipeline(stage, batch_size, **data)
    batches = [pipe.step() for _ in range(N // batch_size)]
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def test_mixup_blends_each_record_with_its_mirror_by_its_own_ratio():
    images = np.random.default_rng(0).random((N, 4, 4, 3)).astype(np.float32)
    out = served(MixUp(0.4, num_classes=N), images=images)
    lam = np.diag(out["label"])  # labels are distinct: record i keeps lam of class i
    assert ((lam > 0) & (lam < 1)).all()
    np.testing.assert_allclose(
        out["label"][np.arange(N), N - 1 - np.arange(N)], 1 - lam
    )
    expected = lam[:, None, None, None] * images
    expected += (1 - lam[:, None, None, None]) * images[::-1]
    np.testing.assert_allclose(out["image"], expected, rtol=1e-5, atol=1e-6)


def test_the_ratios_are_each_records_own_at_any_batch_size():
    whole = served(MixUp(0.4, num_classes=N))["label"]
    halves = served(MixUp(0.4, num_classes=N), batch_size=4)["label"]
    np.testing.assert_allclose(np.diag(whole), np.diag(halves), rtol=1e-6)


def test_cutmix_pastes_a_share_of_the_partner_equal_to_its_label_weight():
    # Image i is all i: every pixel says which record it came from.
    images = np.broadcast_to(
        np.arange(N, dtype=np.float32)[:, None, None, None], (N, 16, 16, 3)
    ).copy()
    out = served(CutMix(1.0, num_classes=N), images=images)
    for i in range(N):
        pixels = out["image"][i, :, :, 0]
        assert set(np.unique(pixels).tolist()) <= {float(i), float(N - 1 - i)}
        pasted = (pixels == N - 1 - i).mean()
        assert out["label"][i, N - 1 - i] == pytest.approx(pasted)
        assert out["label"][i, i] == pytest.approx(1 - pasted)
    assert 0 < (out["image"][..., 0] != images[..., 0]).mean() < 1


def test_gradients_reach_mixups_alpha():
    pipe = pipeline(MixUp(0.4, num_classes=N))
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((N, 4, 4, 3)))
    grads = nnx.grad(lambda p: (p.step()["image"] * weights).sum())(pipe)
    value = float(grads["stages"][0]["alpha"][...])
    assert np.isfinite(value) and value != 0


def test_bad_mixing_input_is_named():
    with pytest.raises(ValueError) as info:
        MixUp(0.0)
    assert (
        info.exconly()
        == "ValueError: MixUp: alpha must be > 0 (Beta(alpha, alpha)), got 0."
    )
    with pytest.raises(ValueError) as info:
        pipeline(MixUp(0.4)).step()
    assert str(info.value) == (
        "MixUp: field 'label' holds integer class ids; pass num_classes= to mix "
        "them as one-hot labels."
    )
    uint8 = np.zeros((N, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError) as info:
        pipeline(MixUp(0.4, num_classes=N), images=uint8).step()
    assert str(info.value) == (
        "MixUp mixes float fields, but field 'image' is uint8; Normalize (or cast "
        "to float) before mixing."
    )
    with pytest.raises(KeyError) as info:
        pipeline(CutMix(field="pixels", num_classes=N)).step()
    assert info.value.args[0] == (
        "CutMix pastes into field 'pixels', but the batch has ['image', 'label']; "
        "name the image field with field=."
    )
