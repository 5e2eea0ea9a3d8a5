"""``AUG-2``'s image augmentations, in JAX (per record) and NumPy (per batch).

The scenario layer's definition of the work (see :mod:`datarax.bench._scenarios`):
every adapter draws from the same distributions, each with its own generator.
Images are ``[height, width, channels]`` (a leading batch axis in NumPy) of
values in ``[0, PIXEL_MAX]``; every op returns float32.

* ``resized_crop``: torchvision's ``RandomResizedCrop`` sampling: a window of
  area ``U(CROP_SCALE) * height * width`` and aspect (width / height)
  ``exp(U(log CROP_RATIO))``, the first of ``CROP_TRIES`` draws that fits the
  image (else the whole image), at a uniform place; resampled bilinearly to the
  input's size (half-pixel centres, edges clamped, no antialiasing). The
  window's sides and corner stay fractional, as in datarax's operator.
* ``flip``: mirrored left to right with probability ``FLIP_P``.
* ``jitter``: brightness, contrast, saturation in that order, each with its own
  factor ``U(1 - JITTER, 1 + JITTER)`` and clipped to ``[0, PIXEL_MAX]``:
  ``x * f``; ``m + (x - m) * f`` with ``m`` the image's mean luma;
  ``g + (x - g) * f`` with ``g`` each pixel's luma (:data:`LUMA`).
* ``cutout``: a ``CUTOUT_SIZE`` square centred at a uniform pixel set to 0
  (the part inside the image).

The window sampling and the resampling weights are written once over an array
module (``numpy`` or ``jax.numpy``), so the two versions cannot drift apart.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
FLIP_P = 0.5
JITTER = 0.4
CUTOUT_SIZE = 8
PIXEL_MAX = 255.0
#: ITU-R BT.601 luma weights (torchvision's and datarax's grayscale).
LUMA = (0.299, 0.587, 0.114)

#: The ops this module defines, in the order AUG-2 applies them.
IMAGE_OPS = ("resized_crop", "flip", "jitter", "cutout")


def crop_window(
    xp: ModuleType,
    u_area: Any,
    u_ratio: Any,
    u_top: Any,
    u_left: Any,
    rows: int,
    columns: int,
) -> tuple[Any, Any, Any, Any]:
    """``(top, left, height, width)`` of resized-crop windows from uniform draws.

    Args:
        xp: ``numpy`` or ``jax.numpy``.
        u_area: ``U(0, 1)`` draws, ``[..., CROP_TRIES]``: the areas tried.
        u_ratio: ``U(0, 1)`` draws, ``[..., CROP_TRIES]``: the aspects tried.
        u_top: ``U(0, 1)`` draws, ``[...]``: the place of the window.
        u_left: ``U(0, 1)`` draws, ``[...]``.
        rows: the image's height.
        columns: the image's width.

    Returns:
        Four float32 arrays of shape ``[...]``.
    """
    low, high = CROP_SCALE
    area = (low + u_area * (high - low)) * (rows * columns)
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    aspect = xp.exp(log_low + u_ratio * (log_high - log_low))
    widths, heights = xp.sqrt(area * aspect), xp.sqrt(area / aspect)
    fits = (widths <= columns) & (heights <= rows)
    # The first try that fits, as torchvision takes it; none fitting (rare: the
    # largest areas at extreme aspects), the whole image (its ratio is 1 here).
    first = xp.argmax(fits, axis=-1)[..., None]
    found = fits.any(axis=-1)
    width = xp.where(found, xp.take_along_axis(widths, first, -1)[..., 0], columns)
    height = xp.where(found, xp.take_along_axis(heights, first, -1)[..., 0], rows)
    top, left = u_top * (rows - height), u_left * (columns - width)
    return tuple(v.astype(xp.float32) for v in (top, left, height, width))


def bilinear_weights(xp: ModuleType, start: Any, size: Any, n_in: int) -> Any:
    """Weights ``[..., n_in, n_in]`` resampling a window back to ``n_in`` pixels.

    Row ``o`` holds the hat kernel at output pixel ``o``'s centre in the input,
    clamped inside it: multiplying by them is bilinear sampling along one axis.
    """
    centres = (xp.arange(n_in, dtype=xp.float32) + 0.5) / n_in
    source = start[..., None] + centres * size[..., None] - 0.5
    source = xp.clip(source, 0.0, n_in - 1.0)
    pixels = xp.arange(n_in, dtype=xp.float32)
    return xp.maximum(0.0, 1.0 - xp.abs(source[..., None] - pixels))


# ---- JAX: one record, its own key ------------------------------------------------


def apply_op_jax(op: str, image: jax.Array, key: jax.Array) -> jax.Array:
    """One of :data:`IMAGE_OPS` on one image ``[height, width, channels]``."""
    return _JAX_OPS[op](image.astype(jnp.float32), key)


def _resized_crop_jax(image: jax.Array, key: jax.Array) -> jax.Array:
    rows, columns = image.shape[:2]
    # One draw for the whole window: each threefry call is its own hash to
    # compile and run, and four calls took seconds more to compile.
    u = jax.random.uniform(key, (2 * CROP_TRIES + 2,))
    top, left, height, width = crop_window(
        jnp, u[:CROP_TRIES], u[CROP_TRIES:-2], u[-2], u[-1], rows, columns
    )
    # Two small matrix products: on XLA:CPU half the time of
    # jax.image.scale_and_translate and a fifth of four bilinear gathers.
    along_y = bilinear_weights(jnp, top, height, rows)
    along_x = bilinear_weights(jnp, left, width, columns)
    return jnp.einsum("oi,ijc,pj->opc", along_y, image, along_x)


def _flip_jax(image: jax.Array, key: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, FLIP_P), image[:, ::-1], image)


def _jitter_jax(image: jax.Array, key: jax.Array) -> jax.Array:
    factors = jax.random.uniform(key, (3,), minval=1 - JITTER, maxval=1 + JITTER)
    brightness, contrast, saturation = factors[0], factors[1], factors[2]
    luma = jnp.asarray(LUMA, jnp.float32)
    x = jnp.clip(image * brightness, 0.0, PIXEL_MAX)
    mean = (x @ luma).mean()
    x = jnp.clip(mean + (x - mean) * contrast, 0.0, PIXEL_MAX)
    grey = (x @ luma)[..., None]
    return jnp.clip(grey + (x - grey) * saturation, 0.0, PIXEL_MAX)


def _cutout_jax(image: jax.Array, key: jax.Array) -> jax.Array:
    rows, columns = image.shape[:2]
    centre = jax.random.randint(key, (2,), 0, jnp.asarray([rows, columns]))
    return jnp.where(
        _square(jnp, centre[0], centre[1], rows, columns)[..., None], 0.0, image
    )


def _square(xp: ModuleType, y: Any, x: Any, rows: int, columns: int) -> Any:
    """The cutout square centred at ``(y, x)`` as a ``[..., rows, columns]`` mask."""
    low_y = xp.asarray(y)[..., None, None] - CUTOUT_SIZE // 2
    low_x = xp.asarray(x)[..., None, None] - CUTOUT_SIZE // 2
    ys = xp.arange(rows)[:, None]
    xs = xp.arange(columns)[None, :]
    inside_y = (ys >= low_y) & (ys < low_y + CUTOUT_SIZE)
    return inside_y & (xs >= low_x) & (xs < low_x + CUTOUT_SIZE)


_JAX_OPS = {
    "resized_crop": _resized_crop_jax,
    "flip": _flip_jax,
    "jitter": _jitter_jax,
    "cutout": _cutout_jax,
}


# ---- NumPy: one batch, the loader's generator ------------------------------------


def apply_op_numpy(op: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of :data:`IMAGE_OPS` on a batch ``[batch, height, width, channels]``."""
    return _NUMPY_OPS[op](images.astype(np.float32, copy=False), rng)


def crop_windows_numpy(
    rng: np.random.Generator, size: int, rows: int, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``size`` crop windows ``(top, left, height, width)`` drawn from ``rng``.

    The host loaders' draws (NumPy, and the PyTorch peer's), in one order.
    """
    return crop_window(
        np,
        rng.random((size, CROP_TRIES), np.float32),
        rng.random((size, CROP_TRIES), np.float32),
        rng.random(size, np.float32),
        rng.random(size, np.float32),
        rows,
        columns,
    )


def _resized_crop_numpy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size, rows, columns, channels = images.shape
    top, left, height, width = crop_windows_numpy(rng, size, rows, columns)
    along_y = bilinear_weights(np, top, height, rows)
    along_x = bilinear_weights(np, left, width, columns)
    # Rows first, then columns with (row, channel) as one axis: two batched
    # matmuls on contiguous blocks, the fastest NumPy form measured (a fancy-
    # indexed bilinear gather took 20x longer).
    x = (along_y @ images.reshape(size, rows, columns * channels)).reshape(
        size, rows, columns, channels
    )
    x = x.transpose(0, 1, 3, 2).reshape(size, rows * channels, columns)
    x = x @ along_x.transpose(0, 2, 1)
    return np.ascontiguousarray(
        x.reshape(size, rows, channels, columns).transpose(0, 1, 3, 2)
    )


def _flip_numpy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(images.shape[0]) < FLIP_P
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _jitter_numpy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factors = rng.uniform(1 - JITTER, 1 + JITTER, (images.shape[0], 3))
    factors = factors.astype(np.float32)[:, None, None, None, :]
    luma = np.asarray(LUMA, np.float32)
    x = np.clip(images * factors[..., 0], 0.0, PIXEL_MAX)
    mean = (x @ luma).mean(axis=(1, 2))[:, None, None, None]
    x = np.clip(mean + (x - mean) * factors[..., 1], 0.0, PIXEL_MAX)
    grey = (x @ luma)[..., None]
    return np.clip(grey + (x - grey) * factors[..., 2], 0.0, PIXEL_MAX)


def _cutout_numpy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size, rows, columns = images.shape[:3]
    y = rng.integers(0, rows, size)
    x = rng.integers(0, columns, size)
    return np.where(_square(np, y, x, rows, columns)[..., None], 0.0, images).astype(
        np.float32
    )


_NUMPY_OPS = {
    "resized_crop": _resized_crop_numpy,
    "flip": _flip_numpy,
    "jitter": _jitter_numpy,
    "cutout": _cutout_numpy,
}
