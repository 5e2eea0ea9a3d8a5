"""The image operators and the pure functions they wrap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import (
    Brightness,
    ColorJitter,
    Contrast,
    Cutout,
    GaussianNoise,
    HorizontalFlip,
    Normalize,
    PixelDropout,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    Rotation,
    Saturation,
    VerticalFlip,
    functional as F,
)
from datarax.sources import MemorySource

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
N = 10


def images(n: int = N, size: int = 8, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        return rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    return rng.random((n, size, size, 3)).astype(dtype)


def pipeline(stages, batch_size=N, data=None) -> Pipeline:
    data = images() if data is None else data
    return Pipeline(
        source=MemorySource({"image": data, "label": np.arange(len(data))}),
        stages=stages,
        batch_size=batch_size,
        num_epochs=None,
        rngs=nnx.Rngs(1),
    )


# -- the functions, against reference formulas -----------------------------------


def test_colour_functions_follow_their_formulas():
    x = images(1)[0]
    grey = x @ LUMA[:, None]
    np.testing.assert_allclose(F.adjust_brightness(x, 1.5), x * 1.5, rtol=1e-6)
    mean = grey.mean()
    np.testing.assert_allclose(
        F.adjust_contrast(x, 0.5), mean + (x - mean) * 0.5, rtol=1e-5
    )
    np.testing.assert_allclose(
        F.adjust_saturation(x, 2.0), grey + (x - grey) * 2.0, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(F.grayscale(x), grey, rtol=1e-6)
    np.testing.assert_allclose(
        F.normalize(x, (0.5, 0.4, 0.3), 0.2), (x - [0.5, 0.4, 0.3]) / 0.2, rtol=1e-5
    )
    pixels = np.arange(256, dtype=np.uint8).reshape(-1, 1, 1).repeat(3, axis=2)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    f32 = np.float32
    np.testing.assert_allclose(  # multiply-add: within 2.4e-7 of float32 division
        F.normalize(pixels, mean, std),
        (pixels.astype(f32) - np.asarray(mean, f32)) / np.asarray(std, f32),
        rtol=0,
        atol=2.5e-7,
    )
    with pytest.raises(ValueError, match=r"normalize: std must be positive, got 0"):
        F.normalize(x, 0.5, 0)


def test_integer_images_are_rounded_and_clipped_to_their_dtype():
    x = np.array([[[10, 100, 200]]], np.uint8)
    out = F.adjust_brightness(x, 1.5)
    assert out.dtype == jnp.uint8
    assert np.asarray(out).tolist() == [[[15, 150, 255]]]


def test_geometry_functions_follow_numpy():
    x = images(1, size=6)[0]
    np.testing.assert_array_equal(F.flip_left_right(x), x[:, ::-1])
    np.testing.assert_array_equal(F.flip_left_right(x, False), x)
    np.testing.assert_array_equal(F.flip_up_down(x), x[::-1])
    np.testing.assert_array_equal(F.crop(x, 1, 2, 3, 4), x[1:4, 2:6])
    np.testing.assert_allclose(F.rotate(x, 90.0), np.rot90(x), atol=1e-5)
    np.testing.assert_allclose(F.rotate(x, 0.0), x, atol=1e-6)
    # A box the size of the output samples exactly the crop; the whole image
    # resized to itself is the image.
    np.testing.assert_allclose(
        F.resized_crop(x, (1.0, 2.0, 3.0, 4.0), 3, 4), x[1:4, 2:6], atol=1e-5
    )
    np.testing.assert_allclose(F.resize(x, 6, 6), x, atol=1e-6)
    # A box resampled: output pixel o samples the image bilinearly at
    # top + (o + 0.5) * box / size - 0.5 (pixel centres; the box's edge pixels
    # blend with their outside neighbours, as in RoIAlign).
    rows = 1.0 + (np.arange(4) + 0.5) * 2.5 / 4 - 0.5
    cols = 2.0 + (np.arange(3) + 0.5) * 1.5 / 3 - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    expected = np.stack(
        [
            jax.scipy.ndimage.map_coordinates(x[..., c], grid, order=1, mode="nearest")
            for c in range(3)
        ],
        -1,
    )
    np.testing.assert_allclose(
        F.resized_crop(x, (1.0, 2.0, 2.5, 1.5), 4, 3), expected, atol=1e-5
    )
    erased = x.copy()
    erased[0:2, 3:6] = 0  # centre (0, 4), size 4: rows -2..1, columns 2..5
    erased[0:2, 2] = 0
    np.testing.assert_array_equal(F.erase(x, 0, 4, 4), erased)


# -- operators in a pipeline -------------------------------------------------------


STOCHASTIC = [
    Brightness(0.3),
    Contrast(0.3),
    Saturation(0.3),
    ColorJitter(),
    GaussianNoise(0.1),
    PixelDropout(0.2),
    Cutout(3),
    HorizontalFlip(),
    VerticalFlip(),
    Rotation(20.0),
    RandomCrop(6, 6),
    RandomResizedCrop(5, 5),
]


def make_all():
    return [type(op)(**_args(op)) for op in STOCHASTIC]


def _args(op):
    if isinstance(op, Cutout):
        return {"size": 3}
    if isinstance(op, RandomCrop | RandomResizedCrop):
        return {"height": op.height, "width": op.width}
    return {}


def test_every_stochastic_operator_is_batch_size_and_mode_invariant():
    # All the operators in one pipeline: one operator whose randomness depended
    # on the batch would change the output. step() at one batch size against
    # scan at another (iteration serves the stream of step():
    # tests/operators/test_element.py).
    whole = np.asarray(pipeline(make_all(), N).step()["image"])
    scanned = pipeline(make_all(), 5).scan(lambda b: b["image"], length=2)
    np.testing.assert_allclose(np.concatenate(list(scanned)), whole, atol=1e-6)
    assert whole.shape == (N, 5, 5, 3)
    # Records got different randomness: no two outputs are the same.
    flat = whole.reshape(N, -1)
    assert len({row.tobytes() for row in flat}) == N


def test_gradients_reach_every_learnable_magnitude():
    stages = [
        Brightness(0.3),
        Contrast(0.3),
        Saturation(0.3),
        ColorJitter(0.2, 0.2, 0.2),
        GaussianNoise(0.1),
        PixelDropout(0.2),
        Rotation(20.0),
    ]
    pipe = pipeline(stages)
    weights = jnp.asarray(np.random.default_rng(2).standard_normal((N, 8, 8, 3)))

    @nnx.jit
    def grads(pipe):
        return nnx.grad(lambda p: (p.step()["image"] * weights).sum())(pipe)

    g = grads(pipe)["stages"]
    leaves = {
        ".".join(str(getattr(k, "key", k)) for k in path[:2]): float(value)
        for path, value in jax.tree_util.tree_leaves_with_path(g)
    }
    assert set(leaves) == {
        "0.max_delta", "1.max_delta", "2.max_delta", "3.brightness",
        "3.contrast", "3.saturation", "4.std", "5.rate", "6.max_degrees",
    }  # fmt: skip
    for name, value in leaves.items():
        assert np.isfinite(value) and value != 0, (name, value)


@pytest.mark.parametrize(
    "stage",
    [Brightness(0.3), Contrast(0.3), HorizontalFlip(), Rotation(10.0), Cutout(3)],
    ids=lambda s: type(s).__name__,
)
def test_shapes_and_integer_dtypes_are_kept(stage):
    data = images(4, dtype=np.uint8)
    out = pipeline([stage], 4, data).step()["image"]
    assert out.shape == data.shape and out.dtype == jnp.uint8


def test_operators_draw_in_their_ranges():
    data = images() + 0.5  # positive, so each record's factor is out / in
    out = np.asarray(pipeline([Brightness(0.3)], data=data).step()["image"])
    factors = (out / data).reshape(N, -1)
    np.testing.assert_allclose(factors - factors[:, :1], 0, atol=1e-5)  # per record
    assert ((factors >= 0.7 - 1e-6) & (factors <= 1.3 + 1e-6)).all()
    assert np.ptp(factors[:, 0]) > 0.05
    stages = [HorizontalFlip(p=1.0), VerticalFlip(p=1.0)]
    flipped = pipeline(stages, data=data).step()["image"]
    np.testing.assert_array_equal(flipped, data[:, ::-1, ::-1])
    whole = pipeline([RandomResizedCrop(4, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0))])
    np.testing.assert_allclose(
        whole.step()["image"],
        jax.vmap(lambda x: F.resized_crop(x, (0.0, 0.0, 8.0, 8.0), 4, 4))(images()),
        atol=1e-5,
    )


def test_deterministic_operators_need_no_keys():
    pipe = pipeline([Resize(4, 4), Normalize((0.5, 0.5, 0.5), 0.25)], 4)
    out = pipe.step()["image"]
    expected = (jax.image.resize(images(4), (4, 4, 4, 3), "linear") - 0.5) / 0.25
    np.testing.assert_allclose(out, expected, atol=1e-5)


# -- bad input is named --------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "kind", "message"),
    [
        (lambda: Brightness(-0.1), ValueError,
         "Brightness: max_delta must be a finite number >= 0, got -0.1."),
        (lambda: Rotation("big"), TypeError,
         "Rotation: max_degrees must be a number, got 'big'."),
        (lambda: HorizontalFlip(p=1.5), ValueError,
         "HorizontalFlip: p is a probability, between 0 and 1; got 1.5."),
        (lambda: PixelDropout(0.1, temperature=0), ValueError,
         "PixelDropout: temperature must be > 0, got 0."),
        (lambda: RandomCrop(0, 4), ValueError,
         "RandomCrop: height must be an int >= 1, got 0."),
        (lambda: RandomResizedCrop(4, 4, scale=(0.5, 0.1)), ValueError,
         "RandomResizedCrop: scale is a range (low, high) with 0 < low <= high <= 1, "
         "got (0.5, 0.1)."),
        (lambda: RandomResizedCrop(4, 4, ratio=(0, 1)), ValueError,
         "RandomResizedCrop: ratio is a range (low, high) with 0 < low <= high, got "
         "(0, 1)."),
        (lambda: Normalize(0.5, (0.2, 0.0, 0.1)), ValueError,
         "Normalize: std must be one positive number or one per channel, got "
         "(0.2, 0.0, 0.1)."),
        (lambda: Normalize((), 0.2), ValueError,
         "Normalize: mean must be one number or one per channel, got ()."),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused_at_construction(build, kind, message):
    with pytest.raises(kind) as info:
        build()
    assert info.exconly() == f"{kind.__name__}: {message}"


def test_numpy_scalars_are_good_parameters():
    assert float(Brightness(np.float32(0.25)).max_delta[...]) == 0.25
    assert RandomCrop(np.int64(4), 4).height == 4


def test_bad_images_are_named_at_the_first_batch():
    with pytest.raises(ValueError) as info:
        pipeline([RandomCrop(9, 4)]).step()
    assert str(info.value) == (
        "RandomCrop(height=9, width=4) is larger than the images of "
        "field 'image', of shape (8, 8, 3); crop at most 8 x 8 (Resize first to go "
        "larger)."
    )
    flat = np.zeros((N, 8, 8), np.float32)
    with pytest.raises(ValueError) as info:
        pipeline([Brightness()], data=flat).step()
    assert str(info.value) == (
        "Brightness works on images [height, width, channels], but "
        "field 'image' holds records of shape (8, 8); add a channel axis "
        "(image[..., None]) or pick the image field with field=."
    )
    grey = np.zeros((N, 8, 8, 1), np.float32)
    with pytest.raises(ValueError) as info:
        pipeline([Saturation()], data=grey).step()
    assert str(info.value) == (
        "Saturation needs RGB images, but field 'image' holds records "
        "of shape (8, 8, 1); use it on 3 channels."
    )


def test_channel_counts_and_fields_are_checked_at_the_first_batch():
    grey = np.zeros((N, 8, 8, 1), np.float32)
    with pytest.raises(ValueError) as info:
        pipeline([Normalize((0.5, 0.5, 0.5), 0.2)], data=grey).step()
    assert str(info.value) == (
        "Normalize has 3 mean values, but field 'image' has 1 channels; give one "
        "value or one per channel."
    )
    with pytest.raises(ValueError) as info:
        pipeline([ColorJitter(saturation=0.2)], data=grey).step()
    assert str(info.value) == (
        "ColorJitter(saturation=0.2) needs RGB images, but field 'image' holds "
        "records of shape (8, 8, 1); pass saturation=0 for other channel counts."
    )
    with pytest.raises(KeyError) as info:
        pipeline([Rotation(field="pixels")]).step()
    assert info.value.args[0] == (
        "Rotation works on field 'pixels', but the records have ['image', "
        "'label']; name the field with field=."
    )


def test_a_stochastic_operator_called_outside_a_pipeline_says_so():
    with pytest.raises(ValueError) as info:
        Brightness()({"image": jnp.zeros((2, 4, 4, 3))})
    assert info.exconly() == (
        "ValueError: the stochastic Brightness gets its per-record keys from the "
        "Pipeline that runs it; call it as a pipeline stage (stages=, nodes=, or "
        "an attribute of a Pipeline subclass), not directly."
    )
