"""``CV-JPEG``'s data and per-image work: JPEG files, decode, crop, flip.

The scenario reads an ImageNet-style folder of JPEG files (one subfolder per
class) made at setup with Pillow from varied synthetic content (gradients,
stripes and noise, different per image: not constant colour, which would decode
unrealistically fast). Each record is decoded, cut by torchvision's
``RandomResizedCrop`` sampling to ``CROP`` x ``CROP`` (Pillow's bilinear
``resize`` of the window, as torchvision does on PIL images), flipped left to
right with probability ``FLIP_P`` and normalized to ``[-1, 1]`` float32.

The decoder is OpenCV's (``cv2.imdecode`` and ``cv2.resize``), chosen by
measurement on this 2-core machine. Decoding alone (256x256, quality 90), one
core took 1.10 ms per image with Pillow, 0.59 ms with simplejpeg and 0.61 ms
with OpenCV, and all three release the GIL. The whole per-image work (decode,
crop, resize, flip) took 2.10 / 1.20 ms with Pillow (one thread / two
threads), 1.33 / 0.87 ms with simplejpeg and Pillow's resize, 0.61 / 0.57 ms
with simplejpeg and OpenCV's resize, and 0.71 / 0.48 ms with OpenCV alone: the
fastest on two threads, and one wheel. Measured again on 2026-11-30,
interleaved (2,000 images, four rounds, two threads): OpenCV 0.36-0.53 ms,
simplejpeg with OpenCV's resize 0.35-0.41 ms, within this machine's noise, so
OpenCV stays (one decoder, one wheel). Every Python loader here (the Floor,
datarax, PyTorch, Grain) calls this one function, so they do the same work;
without OpenCV installed it falls back to Pillow (``decoder()`` says which).
tf.data uses TensorFlow's own decoder, as its users do.
"""

from __future__ import annotations

import functools
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datarax.bench._augment import CROP_RATIO, CROP_SCALE, CROP_TRIES, FLIP_P
from datarax.bench._text import EpochOrder

#: The files' side, and the side of the crops served.
SIDE = 256
CROP = 224
CLASSES = 10
QUALITY = 90


def image_folder(count: int) -> Path:
    """The folder of ``count`` JPEG files, made once per machine and reused.

    Under the system's temporary folder, named by the count; a marker written
    last says the folder is whole (a run killed mid-way starts it again). Each
    file is written under a name of this process's and then renamed, so that
    processes making the folder at once (test workers) never read a half file.
    """
    root = Path(tempfile.gettempdir()) / f"datarax-bench-cv-jpeg-{count}"
    if (root / ".done").exists():
        return root
    from PIL import Image

    rng = np.random.default_rng(count)
    for label in range(CLASSES):
        (root / f"class_{label:02d}").mkdir(parents=True, exist_ok=True)
    rows, columns = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    for index in range(count):
        pixels = _synthetic(rng, rows, columns)
        path = root / f"class_{index % CLASSES:02d}" / f"{index:06d}.jpg"
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        Image.fromarray(pixels).save(partial, format="JPEG", quality=QUALITY)
        os.replace(partial, path)
    (root / ".done").touch()
    return root


def _synthetic(rng: np.random.Generator, rows: np.ndarray, columns: np.ndarray):
    """One varied image: random gradients, stripes and noise per channel."""
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.01, 0.2, 2).tolist() + [rng.uniform(0, 6.3)]
        wave = np.sin(rows * fy + columns * fx + phase) * rng.uniform(40, 120)
        ramp = rows * rng.uniform(-0.5, 0.5) + columns * rng.uniform(-0.5, 0.5)
        channels.append(128 + wave + ramp)
    image = np.stack(channels, -1) + rng.normal(0, rng.uniform(2, 20), (SIDE, SIDE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def crop_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, ...]:
    """A ``RandomResizedCrop`` window ``(left, top, right, bottom)``, in pixels.

    torchvision's sampling: the first of ``CROP_TRIES`` draws of an area and an
    aspect whose rounded window fits, at a uniform place; else the whole image.
    """
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_TRIES):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (left, top, left + w, top + h)
    return (0, 0, width, height)


def decoder() -> str:
    """The decoder :func:`decode_crop` uses here: ``"opencv"`` or ``"pillow"``."""
    return "pillow" if _cv2() is None else "opencv"


@functools.cache
def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    # One thread per call: the loaders run many calls at once on their own
    # threads or processes; OpenCV's own pool on top would oversubscribe.
    cv2.setNumThreads(1)
    return cv2


def decode_crop(data: bytes, rng: np.random.Generator) -> np.ndarray:
    """JPEG bytes -> a random resized crop, maybe flipped: uint8 ``[CROP, CROP, 3]``.

    Bilinear resampling of the window to ``CROP`` x ``CROP``.
    """
    cv2 = _cv2()
    if cv2 is None:
        return _decode_crop_pillow(data, rng)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    left, top, right, bottom = crop_box(rng, image.shape[1], image.shape[0])
    window = image[top:bottom, left:right]
    out = cv2.resize(window, (CROP, CROP), interpolation=cv2.INTER_LINEAR)
    if rng.random() < FLIP_P:
        out = cv2.flip(out, 1)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _decode_crop_pillow(data: bytes, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        box = crop_box(rng, *image.size)
        image = image.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box)
        if rng.random() < FLIP_P:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(image)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in ``[-1, 1]``."""
    return pixels.astype(np.float32) * np.float32(2 / 255) - np.float32(1)


def default_workers() -> int:
    """Worker threads or processes for the host work: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class HandLoop:
    """``CV-JPEG``'s Floor: what one writes with no data library at all.

    Each batch: the file names of the next ``batch_size`` positions (a fresh
    NumPy permutation per epoch), read, decoded and cropped by a thread pool of
    :func:`default_workers` threads (``Executor.map``), stacked, and normalized
    and fed to the consumer in one jitted call on the device. Nothing runs ahead:
    the next batch's decoding starts when this one's step has been dispatched.
    """

    def __init__(self, count: int, batch_size: int, seed: int = 0):
        from concurrent.futures import ThreadPoolExecutor

        root = image_folder(count)
        self.files = sorted(root.glob("class_*/*.jpg"))
        self.labels = np.asarray([int(f.parent.name[6:]) for f in self.files], np.int32)
        self.batch_size, self.position = batch_size, 0
        self.pool = ThreadPoolExecutor(default_workers())
        self._index = EpochOrder(len(self.files), seed)
        self.seed = seed

    def _one(self, position: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 1, position))
        return decode_crop(self.files[self._index(position)].read_bytes(), rng)

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch on the host: uint8 images and int32 labels."""
        positions = range(self.position, self.position + self.batch_size)
        images = np.stack(list(self.pool.map(self._one, positions)))
        labels = self.labels[[self._index(p) for p in positions]]
        self.position += self.batch_size
        return {"image": images, "label": labels}

    def close(self) -> None:
        """Stops the threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)
