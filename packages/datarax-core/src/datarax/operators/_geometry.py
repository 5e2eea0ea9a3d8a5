"""Geometric operators: flips, rotation, crops, resize."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from datarax.core._source import Batch
from datarax.operators import _image as F
from datarax.operators._record import (
    RecordOperator,
    check_magnitude,
    check_probability,
    check_size,
    magnitude,
    uniform,
)


class _Flip(RecordOperator):
    def __init__(self, p: float, field: str):
        super().__init__(stochastic=True)
        self.p = check_probability(type(self).__name__, "p", p)
        self.field = field

    def flip(self, image: jax.Array, flag: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Flips the record's image with probability ``p``."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        return {
            **record,
            self.field: self.flip(image, jax.random.bernoulli(key, self.p)),
        }


class HorizontalFlip(_Flip):
    """Mirrors each image left to right with probability ``p`` (not learnable).

    Args:
        p: the probability of a flip.
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, p: float = 0.5, *, field: str = "image"):
        super().__init__(p, field)

    def flip(self, image: jax.Array, flag: jax.Array) -> jax.Array:
        """See :func:`~datarax.operators.functional.flip_left_right`."""
        return F.flip_left_right(image, flag)


class VerticalFlip(_Flip):
    """Mirrors each image top to bottom with probability ``p`` (not learnable).

    Args:
        p: the probability of a flip.
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, p: float = 0.5, *, field: str = "image"):
        super().__init__(p, field)

    def flip(self, image: jax.Array, flag: jax.Array) -> jax.Array:
        """See :func:`~datarax.operators.functional.flip_up_down`."""
        return F.flip_up_down(image, flag)


class Rotation(RecordOperator):
    """Rotates each image by a random angle in ``[-max_degrees, max_degrees]``.

    Bilinear sampling, 0 outside the image; differentiable in the learnable
    ``max_degrees``.

    Args:
        max_degrees: the largest rotation, in degrees (learnable).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, max_degrees: float = 15.0, *, field: str = "image"):
        super().__init__(stochastic=True)
        name = type(self).__name__
        self.max_degrees = magnitude(check_magnitude(name, "max_degrees", max_degrees))
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Rotates the record's image by its own random angle."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        degrees = uniform(key) * self.max_degrees[...]
        return {**record, self.field: F.rotate(image, degrees)}


def _check_fits(
    who: str, field: str, image: jax.Array, height: int, width: int
) -> None:
    if height > image.shape[0] or width > image.shape[1]:
        raise ValueError(
            f"{who}(height={height}, width={width}) is larger than the images of "
            f"field {field!r}, of shape {tuple(image.shape)}; crop at most "
            f"{image.shape[0]} x {image.shape[1]} (Resize first to go larger)."
        )


class RandomCrop(RecordOperator):
    """A ``height x width`` window of each image at a random place.

    Args:
        height: rows of the crop (at most the image's).
        width: columns of the crop (at most the image's).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, height: int, width: int, *, field: str = "image"):
        super().__init__(stochastic=True)
        self.height = check_size(type(self).__name__, "height", height)
        self.width = check_size(type(self).__name__, "width", width)
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Crops the record's image at its own random place."""
        assert key is not None
        who = type(self).__name__
        image = F.image_of(record, self.field, who)
        _check_fits(who, self.field, image, self.height, self.width)
        k1, k2 = jax.random.split(key)
        top = jax.random.randint(k1, (), 0, image.shape[0] - self.height + 1)
        left = jax.random.randint(k2, (), 0, image.shape[1] - self.width + 1)
        return {**record, self.field: F.crop(image, top, left, self.height, self.width)}


_TRIES = 10


def _centre_window(
    rows: int, columns: int, ratio: tuple[float, float]
) -> tuple[float, float]:
    """The fallback window (torchvision's): the whole image, its ratio clipped."""
    in_ratio = columns / rows
    if in_ratio < ratio[0]:
        return float(columns), columns / ratio[0]
    if in_ratio > ratio[1]:
        return rows * ratio[1], float(rows)
    return float(columns), float(rows)


class RandomResizedCrop(RecordOperator):
    """A random window of each image, of random area and aspect, resized.

    Sampled as torchvision's ``RandomResizedCrop``: the window covers a fraction
    of the image drawn from ``scale`` with an aspect ratio (width / height) drawn
    log-uniformly from ``ratio``; of up to 10 draws the first that fits the image
    is taken (else the whole image, its ratio clipped to ``ratio``), at a random
    place. Unlike torchvision the window keeps fractional sides and corners; it
    is resampled bilinearly to ``height x width``, without antialiasing.

    Args:
        height: rows of the output.
        width: columns of the output.
        scale: the range of the window's area, as fractions of the image's.
        ratio: the range of the window's aspect ratio.
        field: the image field ``[height, width, channels]``.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        field: str = "image",
    ):
        super().__init__(stochastic=True)
        name = type(self).__name__
        self.height = check_size(name, "height", height)
        self.width = check_size(name, "width", width)
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(
                f"{name}: scale is a range (low, high) with 0 < low <= high <= 1, "
                f"got {scale!r}."
            )
        if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(
                f"{name}: ratio is a range (low, high) with 0 < low <= high, got "
                f"{ratio!r}."
            )
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Crops and resizes the record's image by its own random window."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        rows, columns = image.shape[0], image.shape[1]
        k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
        # torchvision's sampling: up to 10 (area, ratio) draws, the first whose
        # window fits; none fitting, the centre crop of the ratio range.
        area = jax.random.uniform(k_area, (_TRIES,), jnp.float32, *self.scale)
        area = area * rows * columns
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = jnp.exp(
            jax.random.uniform(k_ratio, (_TRIES,), jnp.float32, log_low, log_high)
        )
        widths, heights = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
        fits = (widths <= columns) & (heights <= rows)
        first = jnp.argmax(fits)
        fallback_w, fallback_h = _centre_window(rows, columns, self.ratio)
        box_w = jnp.where(fits.any(), widths[first], fallback_w)
        box_h = jnp.where(fits.any(), heights[first], fallback_h)
        top = uniform(k_top, 0.0, 1.0) * (rows - box_h)
        left = uniform(k_left, 0.0, 1.0) * (columns - box_w)
        box = jnp.stack([top, left, box_h, box_w])
        out = F.resized_crop(image, box, self.height, self.width)
        return {**record, self.field: out}


class Resize(RecordOperator):
    """Resizes each image to ``height x width`` (bilinear; deterministic).

    Args:
        height: rows of the output.
        width: columns of the output.
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, height: int, width: int, *, field: str = "image"):
        super().__init__(stochastic=False)
        self.height = check_size(type(self).__name__, "height", height)
        self.width = check_size(type(self).__name__, "width", width)
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Resizes the record's image."""
        image = F.image_of(record, self.field, type(self).__name__)
        return {**record, self.field: F.resize(image, self.height, self.width)}
