"""Noise and occlusion operators: Gaussian noise, pixel dropout, cutout."""

from __future__ import annotations

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
)


class GaussianNoise(RecordOperator):
    """Adds ``std * N(0, 1)`` noise to every value of each image.

    Differentiable in the learnable ``std`` (the noise is drawn once per record
    and scaled).

    Args:
        std: the noise's standard deviation, in the image's units (learnable).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, std: float = 0.05, *, field: str = "image"):
        super().__init__(stochastic=True)
        self.std = magnitude(check_magnitude(type(self).__name__, "std", std))
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Adds the record's own noise to its image."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        noise = jax.random.normal(key, image.shape, jnp.float32)
        return {
            **record,
            self.field: F.like(F.as_float(image) + self.std[...] * noise, image),
        }


class PixelDropout(RecordOperator):
    """Sets each pixel (all its channels) to 0 with probability ``rate``.

    ``rate`` is learnable through a straight-through relaxation: the forward
    pass uses the hard mask ``u >= rate``, the gradient that of
    ``sigmoid((u - rate) / temperature)`` (``u`` the pixel's uniform draw).

    Args:
        rate: the probability of dropping a pixel (learnable).
        temperature: the relaxation's temperature (gradient only).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(
        self, rate: float = 0.1, *, temperature: float = 0.1, field: str = "image"
    ):
        super().__init__(stochastic=True)
        name = type(self).__name__
        self.rate = magnitude(check_probability(name, "rate", rate))
        self.temperature = check_magnitude(name, "temperature", temperature)
        if self.temperature == 0:
            raise ValueError(f"{name}: temperature must be > 0, got {temperature!r}.")
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Drops the record's own random pixels."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        u = jax.random.uniform(key, image.shape[:2], jnp.float32)
        rate = self.rate[...]
        soft = jax.nn.sigmoid((u - rate) / self.temperature)
        hard = (u >= rate).astype(jnp.float32)
        keep = hard + soft - jax.lax.stop_gradient(soft)
        out = F.as_float(image) * keep[..., None]
        return {**record, self.field: F.like(out, image)}


class Cutout(RecordOperator):
    """Sets a ``size x size`` square of each image to 0, centred at a random pixel.

    The square may reach past the border (DeVries & Taylor's cutout); not
    learnable. Wrap it in :class:`~datarax.operators.Probabilistic` to apply it
    to some records only.

    Args:
        size: the square's side, in pixels.
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, size: int, *, field: str = "image"):
        super().__init__(stochastic=True)
        self.size = check_size(type(self).__name__, "size", size)
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Erases the record's own random square."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        k1, k2 = jax.random.split(key)
        center_y = jax.random.randint(k1, (), 0, image.shape[0])
        center_x = jax.random.randint(k2, (), 0, image.shape[1])
        return {**record, self.field: F.erase(image, center_y, center_x, self.size)}
