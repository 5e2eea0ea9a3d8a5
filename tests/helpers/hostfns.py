"""Host stages for the tests, importable by spawned worker processes.

tests/conftest.py puts this folder on ``sys.path``; a spawned worker inherits
the path, so it can unpickle these functions by name (test modules themselves,
imported by pytest with importlib, cannot be imported by name).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from datarax.sources import HostRecordSource

#: Side of the square crops the tests' images are cut to.
CROP = 24


def decode(record: dict[str, Any], rng: None) -> dict[str, Any]:
    """JPEG / PNG bytes -> uint8 RGB array (Pillow)."""
    from PIL import Image

    with Image.open(io.BytesIO(record["image"])) as image:
        pixels = np.asarray(image.convert("RGB"))
    return {"image": pixels, "label": record["label"]}


def random_crop(record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A random ``CROP`` x ``CROP`` window and a random left-right flip."""
    image = record["image"]
    top = rng.integers(0, image.shape[0] - CROP + 1)
    left = rng.integers(0, image.shape[1] - CROP + 1)
    image = image[top : top + CROP, left : left + CROP]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return {"image": image, "label": record["label"]}


def fail_on_label_1(record: dict[str, Any], rng: None) -> dict[str, Any]:
    """Raises on every record of class 1."""
    if record["label"] == 1:
        raise ValueError(f"refusing label {record['label']}")
    return record


def exit_on_label_1(record: dict[str, Any], rng: None) -> dict[str, Any]:
    """Ends its worker process without raising, on every record of class 1."""
    if record["label"] == 1:
        os._exit(3)
    return record


def big_image(record: dict[str, Any], rng: None) -> dict[str, Any]:
    """A 256x256x3 image filled with the record's number ``n`` (mod 256)."""
    return {"image": np.full((256, 256, 3), record["n"] % 256, np.uint8)}


class Counted(HostRecordSource):
    """``count`` records ``{"n": index}``."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def record(self, index: int) -> dict:
        return {"n": index}
