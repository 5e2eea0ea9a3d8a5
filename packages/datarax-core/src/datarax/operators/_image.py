"""Pure functions on one image ``[height, width, channels]``: what the operators wrap.

Every function is traceable (``jit``, ``vmap``, ``grad``): magnitudes and offsets
may be traced values, so the operators built on them can learn their magnitudes.
Sizes (crop and output shapes) are static Python ints. Images of an integer dtype
are computed in float32 and rounded and clipped back to their dtype; float images
keep their dtype and are not clipped (a normalised image has no fixed range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from datarax.operators._record import field_of

#: ITU-R BT.601 luma weights, as in torchvision and tf.image.
LUMA = (0.299, 0.587, 0.114)


def check_image(image: jax.Array, who: str, field: str = "image") -> None:
    """Refuses anything but one image ``[height, width, channels]``.

    Raises:
        ValueError: naming ``who`` and ``field``, for another rank.
    """
    if image.ndim != 3:
        raise ValueError(
            f"{who} works on images [height, width, channels], but field {field!r} "
            f"holds records of shape {tuple(image.shape)}; add a channel axis "
            "(image[..., None]) or pick the image field with field=."
        )


def image_of(record: Mapping[str, jax.Array], field: str, who: str) -> jax.Array:
    """The record's image in ``field``, checked to be ``[height, width, channels]``.

    Raises:
        KeyError: naming the record's fields, when ``field`` is not one.
        ValueError: see :func:`check_image`.
    """
    image = field_of(record, field, who)
    check_image(image, who, field)
    return image


def as_float(image: jax.Array) -> jax.Array:
    """``image`` as a float array (float32 for integer dtypes)."""
    if jnp.issubdtype(image.dtype, jnp.floating):
        return image
    return image.astype(jnp.float32)


def like(result: jax.Array, image: jax.Array) -> jax.Array:
    """``result`` in ``image``'s dtype: rounded and clipped to an integer range."""
    if jnp.issubdtype(image.dtype, jnp.floating):
        return result.astype(image.dtype)
    info = jnp.iinfo(image.dtype)
    return jnp.clip(jnp.round(result), info.min, info.max).astype(image.dtype)


def grayscale(image: jax.Array) -> jax.Array:
    """The luma of an RGB image, ``[height, width, 1]``, as float."""
    if image.shape[-1] != 3:
        raise ValueError(
            f"grayscale needs 3 colour channels (RGB), got an image of shape "
            f"{tuple(image.shape)}."
        )
    return as_float(image) @ jnp.asarray(LUMA, jnp.float32)[:, None]


def adjust_brightness(image: jax.Array, factor: jax.typing.ArrayLike) -> jax.Array:
    """``image * factor`` (torchvision's brightness: 0 black, 1 unchanged)."""
    return like(as_float(image) * factor, image)


def adjust_contrast(image: jax.Array, factor: jax.typing.ArrayLike) -> jax.Array:
    """Blends ``image`` with its mean grey level: ``mean + (image - mean) * factor``.

    The mean is of the luma for RGB images, of all values otherwise.
    """
    x = as_float(image)
    mean = grayscale(x).mean() if x.shape[-1] == 3 else x.mean()
    return like(mean + (x - mean) * factor, image)


def adjust_saturation(image: jax.Array, factor: jax.typing.ArrayLike) -> jax.Array:
    """Blends an RGB ``image`` with its luma: ``grey + (image - grey) * factor``."""
    x = as_float(image)
    grey = grayscale(x)
    return like(grey + (x - grey) * factor, image)


def flip_left_right(image: jax.Array, flip: jax.typing.ArrayLike = True) -> jax.Array:
    """``image`` mirrored along its width when ``flip`` (may be traced).

    A gather of reversed column indices: on XLA:CPU ``where(flip, image[:, ::-1],
    image)`` took several times longer.
    """
    width = image.shape[1]
    columns = jnp.where(flip, jnp.arange(width - 1, -1, -1), jnp.arange(width))
    return jnp.take(image, columns, axis=1)


def flip_up_down(image: jax.Array, flip: jax.typing.ArrayLike = True) -> jax.Array:
    """``image`` mirrored along its height when ``flip`` (may be traced)."""
    height = image.shape[0]
    rows = jnp.where(flip, jnp.arange(height - 1, -1, -1), jnp.arange(height))
    return jnp.take(image, rows, axis=0)


def crop(
    image: jax.Array, top: jax.typing.ArrayLike, left: jax.typing.ArrayLike,
    height: int, width: int,
) -> jax.Array:  # fmt: skip
    """The ``height x width`` window at ``(top, left)`` (clamped inside the image)."""
    return jax.lax.dynamic_slice(
        image, (jnp.asarray(top, jnp.int32), jnp.asarray(left, jnp.int32), 0),
        (height, width, image.shape[2]),
    )  # fmt: skip


def resize(image: jax.Array, height: int, width: int) -> jax.Array:
    """``image`` resized to ``height x width`` by bilinear interpolation."""
    out = jax.image.resize(
        as_float(image), (height, width, image.shape[2]), method="linear"
    )
    return like(out, image)


def resized_crop(
    image: jax.Array,
    box: jax.typing.ArrayLike,
    height: int,
    width: int,
) -> jax.Array:
    """The window ``box = (top, left, box_height, box_width)``, resized.

    The output is ``height x width``.

    The box may be fractional and traced (differentiable in it): bilinear
    sampling of the window, without antialiasing. Where the box reaches past
    the image, output pixels more than a pixel outside are 0; nearer, the
    bilinear weights are renormalised over the pixels inside, so a fractional
    shift does not fade the border (shifting ones by 1.5 rows leaves a row of
    ones, then zeros).
    """
    top, left, box_h, box_w = (jnp.asarray(box, jnp.float32)[i] for i in range(4))
    scale = jnp.stack([height / box_h, width / box_w])
    translation = jnp.stack([-top * scale[0], -left * scale[1]])
    out = jax.image.scale_and_translate(
        as_float(image), (height, width, image.shape[2]), (0, 1), scale,
        translation, method="linear", antialias=False,
    )  # fmt: skip
    return like(out, image)


def rotate(image: jax.Array, degrees: jax.typing.ArrayLike) -> jax.Array:
    """``image`` rotated counter-clockwise by ``degrees`` about its centre.

    Bilinear sampling; pixels from outside the image are 0. Differentiable in
    ``degrees``.
    """
    height, width, channels = image.shape
    angle = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    y, x = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32) - cy,
        jnp.arange(width, dtype=jnp.float32) - cx,
        indexing="ij",
    )
    # Each output pixel samples the input at its position rotated back (rows
    # grow downwards: +90 degrees is np.rot90, the first row becoming the first
    # column read upwards).
    source_y = cos * y + sin * x + cy
    source_x = cos * x - sin * y + cx
    x_float = as_float(image)
    out = jnp.stack(
        [
            jax.scipy.ndimage.map_coordinates(
                x_float[..., c], [source_y, source_x], order=1, mode="constant"
            )
            for c in range(channels)
        ],
        axis=-1,
    )
    return like(out, image)


def erase(
    image: jax.Array, center_y: jax.typing.ArrayLike,
    center_x: jax.typing.ArrayLike, size: int,
) -> jax.Array:  # fmt: skip
    """``image`` with a ``size x size`` square set to 0.

    The square is centred at ``(center_y, center_x)``.

    The square may reach past the border (cutout): only its inside part is erased.
    """
    rows = jnp.arange(image.shape[0])[:, None]
    columns = jnp.arange(image.shape[1])[None, :]
    low_y = jnp.asarray(center_y) - size // 2
    low_x = jnp.asarray(center_x) - size // 2
    inside = (rows >= low_y) & (rows < low_y + size)
    inside = inside & (columns >= low_x) & (columns < low_x + size)
    return jnp.where(inside[..., None], jnp.zeros((), image.dtype), image)


def normalize(
    image: jax.Array, mean: Sequence[float] | float, std: Sequence[float] | float
) -> jax.Array:
    """``(image - mean) / std`` per channel, as float32.

    Computed as ``image * (1 / std) + (-mean / std)``, both constants rounded to
    float32 once from float64: within 2.4e-7 (absolute) of the subtract-and-divide
    form for uint8 pixels and ImageNet's statistics, more in relative terms for a
    result near 0 (a pixel at the mean may give 1e-7, not 0), and faster. On XLA:CPU a
    consumer that reduces the normalized batch fuses it into the reduction, where
    the subtract-and-divide form ran at half the speed (41 against 20 ms per
    64x224x224x3 uint8 batch, normalize and sum in ``scan``; 7% apart alone).
    """
    std64 = np.asarray(std, np.float64)
    if not np.all(std64 > 0):
        raise ValueError(f"normalize: std must be positive, got {std!r}.")
    scale = (1.0 / std64).astype(np.float32)
    shift = (-np.asarray(mean, np.float64) / std64).astype(np.float32)
    return image.astype(jnp.float32) * scale + shift
