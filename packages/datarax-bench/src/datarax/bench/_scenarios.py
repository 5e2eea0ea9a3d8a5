"""Benchmark scenarios: deterministic data plus a description of the pipeline.

A scenario says *what work* a loader must do (the records, the batch size, the
order, the transforms, the sources, the DAG); each adapter builds its own pipeline
for it. The transforms are defined once here, in NumPy and in JAX, so every adapter
does the same arithmetic (stochastic ops draw from the adapter's own generator: the
same distribution, not the same numbers).

Ops, applied in order to every float field of a batch (integer fields pass through
untouched unless the scenario names ``normalize`` or an image op):

* ``normalize``: ``x.astype(float32) * scale + shift`` (``Scenario.scale``/``shift``);
* ``noise``: ``x + NOISE_STD * N(0, 1)`` per element;
* ``brightness``: ``x * (1 + U(-BRIGHTNESS, BRIGHTNESS))`` per record;
* ``resized_crop``, ``flip``, ``jitter``, ``cutout``: ``AUG-2``'s image
  augmentations on pixel values, as float32 (defined in
  :mod:`datarax.bench._augment`, torchvision's defaults).

``PC-2``'s DAG: ``a = normalize(features)``, ``b = features * features * SQUARE_SCALE``,
merged as ``{"features": concatenate([a, b], axis=-1)}``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from datarax.bench._augment import IMAGE_OPS, apply_op_jax, apply_op_numpy

NOISE_STD = 0.05
BRIGHTNESS = 0.2
SQUARE_SCALE = 0.01


@dataclass(frozen=True)
class FieldSpec:
    """One field of a record: its shape, dtype and value range."""

    shape: tuple[int, ...]
    dtype: str
    high: int = 0  # integer fields draw from [0, high); float fields are N(0, 1)


@dataclass(frozen=True)
class Variant:
    """A size of a scenario: records in the dataset, batches per timed repeat."""

    num_records: int
    num_batches: int


@dataclass(frozen=True)
class Scenario:
    """The work one benchmark measures.

    Attributes:
        id: the scenario id, e.g. ``"NLP-1"``.
        title: one line saying what it is.
        fields: field name -> :class:`FieldSpec` of one record.
        batch_size: records per batch.
        ops: transform names applied in order (see the module docstring).
        scale: ``normalize``'s multiplier.
        shift: ``normalize``'s offset.
        shuffle: a new permutation of the records every epoch.
        mix_weights: several sources mixed by these weights (``IO-3``), else None.
        dag: the two-branch DAG with a merge (``PC-2``).
        on_disk: records live in ``.npy`` files read on demand (``IO-2``).
        devices: the batch is sharded over this many devices on a ``data`` mesh
            axis (``DP-1``); 1 for a batch on the default device.
        encoded: ``"jpeg"``: the records are JPEG files decoded and cropped on
            the host (``CV-JPEG``, see :mod:`datarax.bench._jpeg`); ``"text"``:
            raw lines tokenized on the host (``TEXT-1``, see
            :mod:`datarax.bench._text`); ``""`` for arrays. Encoded scenarios'
            ``fields`` describe the records served (before ``normalize``), and
            :meth:`data` holds no arrays (the files are the data).
        consumer: what each batch feeds: ``"sum"`` (:func:`reduce_batch`) or
            ``"mlp"`` (one SGD step of a small MLP, see
            :mod:`datarax.bench._consumers`).
        variants: ``"small"`` and ``"full"`` sizes, and ``"tiny"`` for tests and
            smoke runs (seconds, not figures to quote).
    """

    id: str
    title: str
    fields: Mapping[str, FieldSpec]
    batch_size: int
    ops: tuple[str, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    shuffle: bool = False
    mix_weights: tuple[float, ...] | None = None
    dag: bool = False
    on_disk: bool = False
    devices: int = 1
    encoded: str = ""
    consumer: str = "sum"
    variants: Mapping[str, Variant] = field(
        default_factory=lambda: {
            "tiny": Variant(1_000, 4),
            "small": Variant(10_000, 100),
            "full": Variant(10_000, 1_000),
        }
    )

    @property
    def stochastic(self) -> bool:
        """Whether a transform draws random numbers."""
        if self.encoded == "jpeg":  # the host crop and flip
            return True
        return any(op in ("noise", "brightness", *IMAGE_OPS) for op in self.ops)

    def data(self, variant: str = "small") -> list[dict[str, np.ndarray]]:
        """The records, one dict of arrays per source, the same on every call.

        Generated from a seed derived from the scenario id alone. With
        ``mix_weights``, source ``i`` holds a share of the records proportional
        to its weight.
        """
        n = self.variants[variant].num_records
        if self.encoded:
            return []
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        sizes = [n]
        if self.mix_weights is not None:
            total = sum(self.mix_weights)
            sizes = [max(1, round(n * w / total)) for w in self.mix_weights]
        return [
            {name: _generate(rng, spec, size) for name, spec in self.fields.items()}
            for size in sizes
        ]

    def write_npy(self, folder: Path, variant: str = "small") -> Path:
        """Writes the (single-source) data as ``<field>.npy`` files in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in self.data(variant)[0].items():
            np.save(folder / f"{name}.npy", array)
        return folder


def _generate(rng: np.random.Generator, spec: FieldSpec, size: int) -> np.ndarray:
    shape = (size, *spec.shape)
    if np.dtype(spec.dtype).kind in "iu":
        return rng.integers(0, spec.high, shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


_TOKENS = {"tokens": FieldSpec((128,), "int32", high=32_000)}
_TABLE = {"features": FieldSpec((100,), "float32")}
_IMAGES = {"image": FieldSpec((32, 32, 3), "uint8", high=256)}
_LABELLED = {**_TABLE, "label": FieldSpec((), "int32", high=10)}

#: Every scenario, by id.
SCENARIOS: dict[str, Scenario] = {
    s.id: s
    for s in (
        Scenario(
            "NLP-1", "10,000 int32 token rows of 128, batch 32, no transform",
            _TOKENS, 32,
        ),
        Scenario(
            "TAB-1", "10,000 float32 rows of 100, batch 256, normalize",
            _TABLE, 256, ("normalize",), scale=2.0, shift=-1.0,
        ),
        Scenario(
            "CV-1", "10,000 uint8 32x32x3 images, batch 64, normalize to float32",
            _IMAGES, 64, ("normalize",), scale=2.0 / 255.0, shift=-1.0,
        ),
        Scenario(
            "AUG-1",
            "CV-1 shuffled, normalize + Gaussian noise + random brightness",
            _IMAGES, 64, ("normalize", "noise", "brightness"),
            scale=2.0 / 255.0, shift=-1.0, shuffle=True,
        ),
        Scenario(
            "AUG-2",
            "uint8 32x32x3 images shuffled, batch 128: random resized crop + "
            "flip + colour jitter + cutout, normalize to float32",
            _IMAGES, 128, (*IMAGE_OPS, "normalize"),
            scale=2.0 / 255.0, shift=-1.0, shuffle=True,
        ),
        Scenario(
            "IO-3", "three token sources mixed 0.5 / 0.3 / 0.2, batch 32",
            _TOKENS, 32, mix_weights=(0.5, 0.3, 0.2),
        ),
        Scenario(
            "PC-2", "TAB-1 data through a two-branch DAG merged by concatenation",
            _TABLE, 256, scale=2.0, shift=-1.0, dag=True,
        ),
        Scenario(
            "IO-2", "NLP-1 tokens read from .npy files on disk (floor: in memory)",
            _TOKENS, 32, on_disk=True,
        ),
        Scenario(
            "CV-JPEG",
            "5,000 JPEG files of 256x256, shuffled, batch 64: decode + random "
            "resized crop to 224 + flip on the host, normalize to float32",
            {"image": FieldSpec((224, 224, 3), "uint8", high=256),
             "label": FieldSpec((), "int32", high=10)},
            64, ("normalize",), scale=2.0 / 255.0, shift=-1.0, shuffle=True,
            encoded="jpeg",
            variants={
                "tiny": Variant(96, 2),
                "small": Variant(5_000, 20),
                "full": Variant(5_000, 100),
            },
        ),
        Scenario(
            "TEXT-1",
            "20,000 raw text lines of 8-160 words, shuffled, batch 64: "
            "tokenized by a BPE tokenizer trained at setup, cut or padded to "
            "128 ids",
            {"tokens": FieldSpec((128,), "int32", high=8_000),
             "length": FieldSpec((), "int32", high=129)},
            64, shuffle=True, encoded="text",
            variants={
                "tiny": Variant(256, 2),
                "small": Variant(20_000, 20),
                "full": Variant(20_000, 100),
            },
        ),
        Scenario(
            "DP-1",
            "TAB-1 rows with labels, batch 256 sharded over 8 devices: one MLP "
            "SGD step per batch (data parallel)",
            _LABELLED, 256, devices=8, consumer="mlp",
        ),
    )
}  # fmt: skip


def apply_numpy(
    scenario: Scenario, batch: Mapping[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The scenario's transforms on a host batch (leading batch axis), in NumPy."""
    out = dict(batch)
    if scenario.dag:
        x = out["features"].astype(np.float32)
        a = x * np.float32(scenario.scale) + np.float32(scenario.shift)
        return {"features": np.concatenate([a, x * x * np.float32(SQUARE_SCALE)], -1)}
    for op in scenario.ops:
        for name, x in out.items():
            if op == "normalize":
                x = x.astype(np.float32) * np.float32(scenario.scale)
                x = x + np.float32(scenario.shift)
            elif op == "noise":
                x = x + np.float32(NOISE_STD) * rng.standard_normal(x.shape, np.float32)
            elif op == "brightness":
                factor = rng.uniform(-BRIGHTNESS, BRIGHTNESS, (x.shape[0],))
                x = x * (1 + factor.astype(np.float32)).reshape(-1, *[1] * (x.ndim - 1))
            elif op in IMAGE_OPS:
                x = apply_op_numpy(op, x, rng)
            out[name] = x
    return out


def apply_jax(
    scenario: Scenario, record: Mapping[str, jax.Array], key: jax.Array | None
) -> dict[str, jax.Array]:
    """The scenario's transforms on one record (no batch axis), in JAX.

    Per record so that ``jax.vmap`` / datarax operators can map it; ``key`` is the
    record's key (needed only when the scenario is stochastic).
    """
    out = dict(record)
    if scenario.dag:
        x = out["features"].astype(jnp.float32)
        a = x * scenario.scale + scenario.shift
        return {"features": jnp.concatenate([a, x * x * SQUARE_SCALE], -1)}
    for op in scenario.ops:
        for name, x in out.items():
            if op == "normalize":
                x = x.astype(jnp.float32) * scenario.scale + scenario.shift
            elif op == "noise":
                key, sub = jax.random.split(key)
                x = x + NOISE_STD * jax.random.normal(sub, x.shape, jnp.float32)
            elif op == "brightness":
                key, sub = jax.random.split(key)
                x = x * (1 + jax.random.uniform(sub, (), jnp.float32, -BRIGHTNESS,
                                                BRIGHTNESS))  # fmt: skip
            elif op in IMAGE_OPS:
                key, sub = jax.random.split(key)
                x = apply_op_jax(op, x, sub)
            out[name] = x
    return out


def output_spec(scenario: Scenario) -> dict[str, tuple[tuple[int, ...], str]]:
    """Field -> (per-record shape, dtype) of the batches an adapter must deliver."""
    if scenario.encoded:  # normalize turns the image to float32, labels stay
        image = "normalize" in scenario.ops
        return {
            name: (spec.shape, "float32" if image and name == "image" else spec.dtype)
            for name, spec in scenario.fields.items()
        }
    record = {
        name: jax.ShapeDtypeStruct(spec.shape, spec.dtype)
        for name, spec in scenario.fields.items()
    }
    key = jax.random.key(0) if scenario.stochastic else None
    out = jax.eval_shape(lambda r: apply_jax(scenario, r, key), record)
    return {name: (tuple(s.shape), str(s.dtype)) for name, s in out.items()}


def reduce_batch(batch: dict[str, jax.Array]) -> jax.Array:
    """Sums every field of ``batch`` as float32: the step every adapter takes.

    Every adapter consumes each batch it serves with this step (compiled loops
    inside their loop, iterators with one jitted call per batch), so all do the
    same work; reducing to a scalar keeps a compiled loop's output small, so it
    cannot be timed on writing out the batches instead of making them.

    Args:
        batch: field name -> array.

    Returns:
        A float32 scalar.

    Examples:
        >>> import numpy as np
        >>> reduce_batch({"x": np.ones((2, 3), np.int32)}).dtype
        dtype('float32')
    """
    total = jnp.float32(0)
    for leaf in jax.tree.leaves(batch):
        total = total + leaf.astype(jnp.float32).sum()
    return total
