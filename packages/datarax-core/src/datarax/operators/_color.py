"""Colour operators: brightness, contrast, saturation, colour jitter, normalize.

Each random factor is ``max(0, 1 + u * max_delta)`` with ``u`` uniform in
``[-1, 1)`` from the record's key, and ``max_delta`` a learnable ``nnx.Param``: the
output is differentiable in it (``d out / d max_delta = u * d out / d factor``
while the factor is positive; a negative factor would invert the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from datarax.core._source import Batch
from datarax.operators import _image as F
from datarax.operators._record import (
    RecordOperator,
    check_magnitude,
    magnitude,
    uniform,
)


def _factor(u: jax.Array, max_delta: jax.Array) -> jax.Array:
    return jnp.maximum(1 + u * max_delta, 0.0)


class _FactorOperator(RecordOperator):
    """A colour adjustment by a random factor ``1 + u * max_delta`` per record."""

    def __init__(self, max_delta: float, *, field: str):
        super().__init__(stochastic=True)
        self.max_delta = magnitude(
            check_magnitude(type(self).__name__, "max_delta", max_delta)
        )
        self.field = field

    def adjust(self, image: jax.Array, factor: jax.Array) -> jax.Array:
        raise NotImplementedError

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Adjusts the record's image by its own random factor."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        factor = _factor(uniform(key), self.max_delta[...])
        return {**record, self.field: self.adjust(image, factor)}


class Brightness(_FactorOperator):
    """Scales each image by a random factor in ``[1 - max_delta, 1 + max_delta]``.

    Args:
        max_delta: the largest change of the factor (learnable).
        field: the image field ``[height, width, channels]``.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.sources import MemorySource
        >>> pipe = Pipeline(source=MemorySource({"image": np.ones((4, 8, 8, 3))}),
        ...                 stages=[Brightness(0.5)], batch_size=4)
        >>> pipe.step()["image"].shape
        (4, 8, 8, 3)
    """

    def __init__(self, max_delta: float = 0.2, *, field: str = "image"):
        super().__init__(max_delta, field=field)

    def adjust(self, image: jax.Array, factor: jax.Array) -> jax.Array:
        """See :func:`~datarax.operators.functional.adjust_brightness`."""
        return F.adjust_brightness(image, factor)


class Contrast(_FactorOperator):
    """Scales each image's contrast about its mean grey by a random factor.

    Args:
        max_delta: the largest change of the factor (learnable).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(self, max_delta: float = 0.2, *, field: str = "image"):
        super().__init__(max_delta, field=field)

    def adjust(self, image: jax.Array, factor: jax.Array) -> jax.Array:
        """See :func:`~datarax.operators.functional.adjust_contrast`."""
        return F.adjust_contrast(image, factor)


class Saturation(_FactorOperator):
    """Scales each RGB image's saturation by a random factor.

    Args:
        max_delta: the largest change of the factor (learnable).
        field: the image field ``[height, width, 3]``.
    """

    def __init__(self, max_delta: float = 0.2, *, field: str = "image"):
        super().__init__(max_delta, field=field)

    def adjust(self, image: jax.Array, factor: jax.Array) -> jax.Array:
        """See :func:`~datarax.operators.functional.adjust_saturation`."""
        if image.shape[-1] != 3:
            raise ValueError(
                f"Saturation needs RGB images, but field {self.field!r} holds "
                f"records of shape {tuple(image.shape)}; use it on 3 channels."
            )
        return F.adjust_saturation(image, factor)


class ColorJitter(RecordOperator):
    """Brightness, contrast and saturation, each by its own random factor.

    Applied in that order, with three independent draws from the record's key;
    a ``max_delta`` of 0 leaves that adjustment out of the randomness but not of
    the gradient. All three are learnable.

    Args:
        brightness: ``max_delta`` of the brightness factor.
        contrast: ``max_delta`` of the contrast factor.
        saturation: ``max_delta`` of the saturation factor (RGB images only;
            pass 0 for other channel counts, which are refused otherwise).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        *,
        field: str = "image",
    ):
        super().__init__(stochastic=True)
        name = type(self).__name__
        self.brightness = magnitude(check_magnitude(name, "brightness", brightness))
        self.contrast = magnitude(check_magnitude(name, "contrast", contrast))
        self.saturation = magnitude(check_magnitude(name, "saturation", saturation))
        self.saturation_on = float(saturation)
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Jitters the record's image by its own three factors."""
        assert key is not None
        image = F.image_of(record, self.field, type(self).__name__)
        k1, k2, k3 = jax.random.split(key, 3)
        image = F.adjust_brightness(image, _factor(uniform(k1), self.brightness[...]))
        image = F.adjust_contrast(image, _factor(uniform(k2), self.contrast[...]))
        if image.shape[-1] == 3:
            saturation = _factor(uniform(k3), self.saturation[...])
            image = F.adjust_saturation(image, saturation)
        elif self.saturation_on:
            raise ValueError(
                f"ColorJitter(saturation={self.saturation_on}) needs RGB images, but "
                f"field {self.field!r} holds records of shape {tuple(image.shape)}; "
                "pass saturation=0 for other channel counts."
            )
        return {**record, self.field: image}


class Normalize(RecordOperator):
    """``(image - mean) / std`` per channel, as float32 (deterministic).

    Args:
        mean: one value, or one per channel.
        std: one value, or one per channel (all > 0).
        field: the image field ``[height, width, channels]``.
    """

    def __init__(
        self,
        mean: Sequence[float] | float,
        std: Sequence[float] | float,
        *,
        field: str = "image",
    ):
        super().__init__(stochastic=False)
        std_values = np.atleast_1d(np.asarray(std, np.float64))
        mean_values = np.atleast_1d(np.asarray(mean, np.float64))
        if (
            std_values.ndim != 1
            or not std_values.size
            or not np.all(np.isfinite(std_values) & (std_values > 0))
        ):
            raise ValueError(
                f"Normalize: std must be one positive number or one per channel, "
                f"got {std!r}."
            )
        if mean_values.ndim != 1 or not mean_values.size:
            raise ValueError(
                f"Normalize: mean must be one number or one per channel, got {mean!r}."
            )
        self.mean = tuple(mean_values.tolist())
        self.std = tuple(std_values.tolist())
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Normalizes the record's image."""
        image = F.image_of(record, self.field, type(self).__name__)
        channels = image.shape[-1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"Normalize has {len(values)} {name} values, but field "
                    f"{self.field!r} has {channels} channels; give one value or "
                    "one per channel."
                )
        return {**record, self.field: F.normalize(image, self.mean, self.std)}
