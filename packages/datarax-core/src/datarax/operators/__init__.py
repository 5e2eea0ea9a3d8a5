"""Stages that transform records: per-record functions, image operators, control.

* :class:`ElementOperator`: your own ``fn(record, key) -> record``;
* :class:`HostOperator`: your own ``fn(record, rng) -> record`` in plain Python,
  run on host workers before the compiled stages (decode, tokenize);
* :class:`RecordOperator`: the base class of operators that transform each record;
* image colour: :class:`Brightness`, :class:`Contrast`, :class:`Saturation`,
  :class:`ColorJitter`, :class:`Normalize`;
* image geometry: :class:`HorizontalFlip`, :class:`VerticalFlip`,
  :class:`Rotation`, :class:`RandomCrop`, :class:`RandomResizedCrop`,
  :class:`Resize`;
* image noise and occlusion: :class:`GaussianNoise`, :class:`PixelDropout`,
  :class:`Cutout`;
* audio: :class:`Loudness` (A-weighted), :class:`F0` (YIN), :class:`Resample`;
* batch mixing: :class:`MixUp`, :class:`CutMix` (labels mixed accordingly);
* control: :class:`Probabilistic`, :class:`Select`, :class:`Sequential`;
* branches and merges for ``Pipeline.from_dag``: :func:`parallel`,
  :class:`Mean`, :class:`Concatenate`.

The pure functions on one image or signal that these operators wrap are in
:mod:`datarax.operators.functional`.
"""

from datarax.operators._audio import F0, Loudness, Resample
from datarax.operators._batch import CutMix, MixUp
from datarax.operators._color import (
    Brightness,
    ColorJitter,
    Contrast,
    Normalize,
    Saturation,
)
from datarax.operators._control import Probabilistic, Select, Sequential
from datarax.operators._element import ElementOperator
from datarax.operators._geometry import (
    HorizontalFlip,
    RandomCrop,
    RandomResizedCrop,
    Resize,
    Rotation,
    VerticalFlip,
)
from datarax.operators._host import HostOperator
from datarax.operators._noise import Cutout, GaussianNoise, PixelDropout
from datarax.operators._record import RecordOperator
from datarax.operators._wiring import Concatenate, Mean, parallel

__all__ = [
    "F0",
    "Brightness",
    "ColorJitter",
    "Concatenate",
    "Contrast",
    "CutMix",
    "Cutout",
    "ElementOperator",
    "GaussianNoise",
    "HorizontalFlip",
    "HostOperator",
    "Loudness",
    "Mean",
    "MixUp",
    "Normalize",
    "PixelDropout",
    "Probabilistic",
    "RandomCrop",
    "RandomResizedCrop",
    "RecordOperator",
    "Resample",
    "Resize",
    "Rotation",
    "Saturation",
    "Select",
    "Sequential",
    "VerticalFlip",
    "parallel",
]
