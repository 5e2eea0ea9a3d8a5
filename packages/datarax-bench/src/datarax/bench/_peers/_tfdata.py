"""The tf.data adapter: a ``tf.data.Dataset`` pipeline with TF ops throughout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datarax.bench._adapter import Batch, IteratorAdapter, register_adapter, to_device
from datarax.bench._augment import (
    CROP_RATIO,
    CROP_SCALE,
    CROP_TRIES,
    CUTOUT_SIZE,
    JITTER,
    PIXEL_MAX,
)
from datarax.bench._peers._jpeg import tf_dataset, tf_text_dataset
from datarax.bench._scenarios import (
    BRIGHTNESS,
    NOISE_STD,
    SQUARE_SCALE,
    Scenario,
)

SEED = 0


def _import_tf() -> Any:
    """TensorFlow, imported on first use only: the import takes seconds."""
    # Quiet TF's C++ start-up banner (oneDNN, CPU features) unless the user set a
    # level; it would otherwise interleave with the runner's progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


@register_adapter
class TFDataAdapter(IteratorAdapter):
    """tf.data at its best, following TensorFlow's input-pipeline performance guide.

    The in-memory tables are captured once as tensors; the pipeline runs on record
    indices (``Dataset.range``, ``shuffle`` with a full-epoch buffer and
    ``reshuffle_each_iteration``, ``sample_from_datasets`` by weight, ``repeat``),
    is batched by ``batch``, and a single vectorised ``map`` (after the batch, as
    the guide advises) gathers the rows with ``tf.gather`` and applies the
    transforms as TF ops, in parallel (``num_parallel_calls=AUTOTUNE``), followed
    by ``prefetch(AUTOTUNE)``. Stochastic ops are TF's stateless random ops
    seeded from ``Dataset.counter()``, as TF's augmentation tutorial does in
    parallel maps.

    ``AUG-2``'s augmentations run on the whole batch, one draw per image:
    ``tf.image.crop_and_resize`` (one box per image, sampled as torchvision
    does with vectorised stateless draws: ``sample_distorted_bounding_box``
    takes one image at a time and has another area rule),
    ``tf.image.stateless_random_flip_left_right``, colour jitter as blends
    with ``tf.image.rgb_to_grayscale`` (``tf.image``'s random brightness is
    additive and its random contrast and saturation draw one factor per
    batch, and saturation works in HSV: other distributions), and cutout as a
    mask (``tf.image`` has none).

    ``IO-2`` reads the ``.npy`` files with TF's own reader,
    ``FixedLengthRecordDataset`` (the ``.npy`` header skipped with
    ``header_bytes``), and decodes each batch with ``tf.io.decode_raw``: the
    data comes from disk through TF's C++ I/O, never through Python.

    Args:
        deterministic: keep the order of ``map`` outputs (the scenarios' order).
    """

    name: ClassVar[str] = "tf.data"
    modules: ClassVar[tuple[str, ...]] = ("tensorflow",)
    reads_files: ClassVar[bool] = True
    install: ClassVar[str] = 'pip install "datarax-bench[peers]"'

    def __init__(self, *, deterministic: bool = True) -> None:
        self.deterministic = deterministic
        self._dataset: Any = None

    def settings(self) -> dict[str, Any]:
        """tf.data's parallelism, prefetch and pipeline shape."""
        return {
            "pipeline": "Dataset.range(+shuffle/sample_from_datasets).repeat()"
            ".batch().map(tf.gather+TF ops).prefetch()",
            "io2_reader": "FixedLengthRecordDataset + tf.io.decode_raw",
            "cv_jpeg": "per file: sample_distorted_bounding_box + "
            "decode_and_crop_jpeg + resize + random_flip_left_right",
            "map.num_parallel_calls": "AUTOTUNE",
            "map.deterministic": self.deterministic,
            "prefetch": "AUTOTUNE",
            "shuffle": "buffer = whole source, reshuffle_each_iteration=True",
            "to_device": "as_numpy_iterator() + jax.device_put",
        }

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the ``tf.data`` pipeline over ``data`` (or the ``.npy`` files)."""
        tf = _import_tf()
        autotune = tf.data.AUTOTUNE
        if scenario.encoded:
            make = tf_dataset if scenario.encoded == "jpeg" else tf_text_dataset
            self._dataset = make(tf, scenario, variant)
            return
        if scenario.on_disk:
            records = _npy_records(tf, scenario, workdir)
            if scenario.shuffle:
                records = records.shuffle(
                    len(data[0][next(iter(scenario.fields))]),
                    seed=SEED,
                    reshuffle_each_iteration=True,
                )
            batches = records.repeat().batch(scenario.batch_size, drop_remainder=True)

            def read(batch: dict) -> dict:
                return {
                    name: tf.reshape(
                        tf.io.decode_raw(batch[name], spec.dtype),
                        (-1, *spec.shape),
                    )
                    for name, spec in scenario.fields.items()
                }

        else:
            sizes = [len(next(iter(d.values()))) for d in data]
            # Captured once as constant tensors; each batch is one tf.gather.
            tables = {
                name: tf.constant(np.concatenate([d[name] for d in data]))
                for name in scenario.fields
            }
            offsets = np.cumsum([0, *sizes[:-1]])
            children = []
            for i, (size, offset) in enumerate(zip(sizes, offsets, strict=True)):
                child = tf.data.Dataset.range(int(offset), int(offset + size))
                if scenario.shuffle:
                    # A buffer of the whole source is a uniform permutation; shuffle
                    # before repeat keeps epochs apart.
                    child = child.shuffle(
                        size, seed=SEED + i, reshuffle_each_iteration=True
                    )
                children.append(child.repeat())
            if scenario.mix_weights is None:
                (indices,) = children
            else:
                indices = tf.data.Dataset.sample_from_datasets(
                    children, weights=list(scenario.mix_weights), seed=SEED
                )
            batches = indices.batch(scenario.batch_size, drop_remainder=True)

            def read(idx: Any) -> dict:
                return {name: tf.gather(t, idx) for name, t in tables.items()}

        if scenario.stochastic:
            batches = tf.data.Dataset.zip(batches, tf.data.Dataset.counter())

            def load(item: Any, step: Any) -> dict:
                return _transform(tf, scenario, read(item), step)

        else:

            def load(item: Any) -> dict:
                return _transform(tf, scenario, read(item), None)

        self._dataset = batches.map(
            load, num_parallel_calls=autotune, deterministic=self.deterministic
        ).prefetch(autotune)

    def make_iterator(self) -> Iterator[Batch]:
        """Iterates the (endless) dataset, each batch put on the default device."""
        return (to_device(b) for b in self._dataset.as_numpy_iterator())

    def close(self) -> None:
        """Drops the iterator and dataset, which stops TF's background threads."""
        self._iterator = None
        self._dataset = None


def _npy_records(tf: Any, scenario: Scenario, workdir: Path) -> Any:
    """One record per row of each ``<field>.npy``, read by TF from the file."""
    fields = {}
    for name, spec in scenario.fields.items():
        path = workdir / f"{name}.npy"
        # The memory map only reads the header: its offset is where rows begin.
        table = np.load(path, mmap_mode="r")
        if not table.flags.c_contiguous or table.dtype != np.dtype(spec.dtype):
            raise ValueError(
                f"tf.data: {path} holds a {table.dtype} array; the raw reader needs "
                f"a C-ordered {spec.dtype} array (as Scenario.write_npy writes)."
            )
        shape, dtype, header_bytes = table.shape, table.dtype, table.offset
        del table
        fields[name] = tf.data.FixedLengthRecordDataset(
            str(path),
            record_bytes=int(np.prod(shape[1:])) * dtype.itemsize,
            header_bytes=header_bytes,
        )
    return tf.data.Dataset.zip(fields)


def _transform(tf: Any, scenario: Scenario, batch: dict, step: Any) -> dict:
    """The scenario's transforms in TF ops (``apply_numpy``'s arithmetic)."""
    if scenario.dag:
        x = tf.cast(batch["features"], tf.float32)
        a = x * scenario.scale + scenario.shift  # branch 1: normalize
        b = x * x * SQUARE_SCALE  # branch 2: scaled square
        return {"features": tf.concat([a, b], axis=-1)}  # merge
    out = dict(batch)
    for k, op in enumerate(scenario.ops):
        for j, (name, x) in enumerate(out.items()):
            # A distinct stateless seed per (step, op, field): independent draws.
            seed = (
                None
                if step is None
                else tf.stack([step, tf.constant(k * 64 + j, tf.int64)])
            )
            if op == "normalize":
                x = tf.cast(x, tf.float32) * scenario.scale + scenario.shift
            elif op == "noise":
                x = x + NOISE_STD * tf.random.stateless_normal(tf.shape(x), seed)
            elif op == "brightness":
                factor = tf.random.stateless_uniform(
                    tf.shape(x)[:1], seed, minval=-BRIGHTNESS, maxval=BRIGHTNESS
                )
                x = x * tf.reshape(1 + factor, [-1] + [1] * (len(x.shape) - 1))
            elif op in _IMAGE_OPS:
                x = _IMAGE_OPS[op](tf, tf.cast(x, tf.float32), seed)
            out[name] = x
    return out


def _resized_crop(tf: Any, x: Any, seed: Any) -> Any:
    """Each image's own torchvision-sampled window, resized back by TF."""
    rows, columns = int(x.shape[1]), int(x.shape[2])
    # Static when batches drop their remainder: with a dynamic count of boxes
    # TF's graph optimiser logs a warning per trace (no cost model for it).
    size = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    u = tf.random.stateless_uniform([size, 2 * CROP_TRIES + 2], seed)
    area = (CROP_SCALE[0] + u[:, :CROP_TRIES] * (CROP_SCALE[1] - CROP_SCALE[0])) * (
        rows * columns
    )
    log_low, log_high = np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])
    aspect = tf.exp(log_low + u[:, CROP_TRIES:-2] * (log_high - log_low))
    widths, heights = tf.sqrt(area * aspect), tf.sqrt(area / aspect)
    fits = (widths <= columns) & (heights <= rows)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1)  # the first try that fits
    found = tf.reduce_any(fits, axis=1)
    width = tf.where(found, tf.gather(widths, first, batch_dims=1), float(columns))
    height = tf.where(found, tf.gather(heights, first, batch_dims=1), float(rows))
    top, left = u[:, -2] * (rows - height), u[:, -1] * (columns - width)

    def ends(start: Any, extent: Any, n: int) -> tuple[Any, Any]:
        # crop_and_resize samples from y1 to y2 inclusive (corner-aligned): the
        # ends are the window's first and last half-pixel centres, in the image
        # padded by its edge pixels (+1), so that points up to half a pixel
        # outside read the edge (clamped) instead of crop_and_resize's 0.
        half = 0.5 * extent / n
        return (start + half + 0.5) / (n + 1), (start + extent - half + 0.5) / (n + 1)

    y1, y2 = ends(top, height, rows)
    x1, x2 = ends(left, width, columns)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.image.crop_and_resize(
        padded, tf.stack([y1, x1, y2, x2], axis=1), tf.range(size), [rows, columns]
    )


def _flip(tf: Any, x: Any, seed: Any) -> Any:
    return tf.image.stateless_random_flip_left_right(x, seed)


def _jitter(tf: Any, x: Any, seed: Any) -> Any:
    factors = tf.random.stateless_uniform(
        [tf.shape(x)[0], 1, 1, 3], seed, minval=1 - JITTER, maxval=1 + JITTER
    )
    x = tf.clip_by_value(x * factors[..., 0:1], 0.0, PIXEL_MAX)
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x), axis=[1, 2, 3], keepdims=True)
    x = tf.clip_by_value(mean + (x - mean) * factors[..., 1:2], 0.0, PIXEL_MAX)
    grey = tf.image.rgb_to_grayscale(x)
    return tf.clip_by_value(grey + (x - grey) * factors[..., 2:3], 0.0, PIXEL_MAX)


def _cutout(tf: Any, x: Any, seed: Any) -> Any:
    rows, columns = int(x.shape[1]), int(x.shape[2])
    u = tf.random.stateless_uniform([tf.shape(x)[0], 2], seed)
    centre = tf.cast(u * [rows, columns], tf.int32)  # a uniform pixel
    low = centre - CUTOUT_SIZE // 2
    ys = tf.range(rows)[None, :, None]
    xs = tf.range(columns)[None, None, :]
    low_y, low_x = low[:, 0, None, None], low[:, 1, None, None]
    inside = (ys >= low_y) & (ys < low_y + CUTOUT_SIZE)
    inside = inside & (xs >= low_x) & (xs < low_x + CUTOUT_SIZE)
    return tf.where(inside[..., None], 0.0, x)


_IMAGE_OPS = {
    "resized_crop": _resized_crop,
    "flip": _flip,
    "jitter": _jitter,
    "cutout": _cutout,
}
