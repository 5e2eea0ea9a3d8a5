"""Pure functions on one image ``[height, width, channels]`` or one signal, traceable.

The image operators of :mod:`datarax.operators` draw their random parameters per
record and call these; use them directly inside your own
:class:`~datarax.operators.ElementOperator` or model. Magnitudes and offsets may
be traced (and differentiated); sizes are static ints.

Examples:
    >>> import jax.numpy as jnp
    >>> from datarax.operators import functional as F
    >>> image = jnp.arange(12.0).reshape(2, 2, 3)
    >>> F.flip_left_right(image)[0, 0].tolist()
    [3.0, 4.0, 5.0]
    >>> F.resize(image, 4, 4).shape
    (4, 4, 3)
"""

from datarax.operators._image import (
    adjust_brightness as adjust_brightness,
    adjust_contrast as adjust_contrast,
    adjust_saturation as adjust_saturation,
    crop as crop,
    erase as erase,
    flip_left_right as flip_left_right,
    flip_up_down as flip_up_down,
    grayscale as grayscale,
    normalize as normalize,
    resize as resize,
    resized_crop as resized_crop,
    rotate as rotate,
)
from datarax.operators._signal import (
    a_weighting_db as a_weighting_db,
    f0_yin as f0_yin,
    frames as frames,
    loudness as loudness,
    num_frames as num_frames,
    resample as resample,
)

__all__ = [
    "a_weighting_db",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "crop",
    "erase",
    "f0_yin",
    "flip_left_right",
    "flip_up_down",
    "frames",
    "grayscale",
    "loudness",
    "normalize",
    "num_frames",
    "resample",
    "resize",
    "resized_crop",
    "rotate",
]
