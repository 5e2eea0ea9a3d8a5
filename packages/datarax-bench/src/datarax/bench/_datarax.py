"""``Datarax`` (iteration) and ``Datarax-scan`` (``Pipeline.scan``) adapters.

Both build the same :class:`~datarax.Pipeline` from a scenario with the same seed,
so they serve the same records with the same augmentation randomness; they differ
only in how the batches are consumed: a Python ``for`` loop, or one compiled loop
whose step is the scenario's consumer (:mod:`datarax.bench._consumers`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax import Pipeline
from datarax.bench._adapter import Adapter, Batch, IteratorAdapter, register_adapter
from datarax.bench._augment import (
    CROP_RATIO,
    CROP_SCALE,
    CUTOUT_SIZE,
    FLIP_P,
    IMAGE_OPS,
    JITTER,
)
from datarax.bench._consumers import batch_sharding, consumer_of
from datarax.bench._jpeg import decode_crop, decoder, default_workers, image_folder
from datarax.bench._scenarios import SQUARE_SCALE, Scenario, apply_jax
from datarax.bench._text import Lines, Tokenize, read_corpus
from datarax.operators import (
    ColorJitter,
    Cutout,
    ElementOperator,
    HorizontalFlip,
    HostOperator,
    Normalize,
    RandomResizedCrop,
    RecordOperator,
)
from datarax.sources import (
    HostMapSource,
    ImageFolderSource,
    MemorySource,
    MixDataSourcesNode,
    StreamingDiskSource,
)


def build_pipeline(
    scenario: Scenario,
    data: list[dict[str, np.ndarray]],
    workdir: Path,
    *,
    seed: int = 0,
    variant: str = "small",
) -> Pipeline:
    """The datarax pipeline that does ``scenario``'s work, endless.

    ``MemorySource`` over the records, ``StreamingDiskSource`` over the ``.npy``
    files in ``workdir`` (``on_disk``), ``MixDataSourcesNode`` of one
    ``MemorySource`` per source (``mix_weights``); the transforms as one
    ``ElementOperator`` (stochastic ones take the record's key), or for ``dag``
    two ``ElementOperator`` branches and a merge wired by ``Pipeline.from_dag``.
    A scenario with image augmentations (``AUG-2``) is built from datarax's own
    operators instead, one stage per op (see :func:`operator_stages`): measuring
    the library is the point.

    Args:
        scenario: the work.
        data: ``scenario.data(variant)``.
        workdir: the folder holding the ``.npy`` files of an ``on_disk`` scenario.
        seed: seeds the shuffle order and the per-record keys.
        variant: the scenario's size (read for ``encoded`` scenarios, whose
            files are made per size).

    Returns:
        A pipeline with ``num_epochs=None``.
    """
    if scenario.encoded == "jpeg":
        return _jpeg_pipeline(scenario, variant, seed)
    if scenario.encoded == "text":
        return _text_pipeline(scenario, variant, seed)
    if scenario.on_disk:
        source = StreamingDiskSource(workdir)
    elif scenario.mix_weights is not None:
        source = MixDataSourcesNode(
            [MemorySource(d) for d in data], scenario.mix_weights
        )
    else:
        source = MemorySource(data[0])
    common: dict[str, Any] = {
        "batch_size": scenario.batch_size,
        "shuffle": scenario.shuffle,
        "num_epochs": None,
        "rngs": nnx.Rngs(seed),
        "sharding": batch_sharding(scenario),
    }
    if scenario.dag:
        return Pipeline.from_dag(
            source=source,
            nodes={
                "affine": ElementOperator(_affine(scenario)),
                "square": ElementOperator(_square),
                "merge": _concatenate,
            },
            edges={"affine": [], "square": [], "merge": ["affine", "square"]},
            sink="merge",
            **common,
        )
    stages: list[RecordOperator] = []
    if any(op in IMAGE_OPS for op in scenario.ops):
        stages = operator_stages(scenario)
    elif scenario.ops:
        stages.append(
            ElementOperator(_transform(scenario), stochastic=scenario.stochastic)
        )
    return Pipeline(source=source, stages=stages, **common)


def _jpeg_pipeline(scenario: Scenario, variant: str, seed: int) -> Pipeline:
    """``CV-JPEG``: files decoded and cropped by host workers, normalized on device.

    The decode, crop and flip run per record in a stochastic ``HostOperator`` on
    ``HostMapSource``'s threads (one per core; Pillow releases the GIL), which
    prepare the next two reads ahead; ``Normalize`` runs compiled on the batch.
    Measured on 2 cores (Pillow decoding), cropping on the host beat decoding
    there and cropping on the device with ``RandomResizedCrop`` (549 against 298
    images/s): the device crop of a 256x256 batch competes with the decoders for
    the cores.
    """
    files = ImageFolderSource(image_folder(scenario.variants[variant].num_records))
    crop = HostOperator(_decode_crop_record, stochastic=True, name="decode_crop")
    source = HostMapSource(files, [crop], workers=default_workers())
    normalize = Normalize(
        mean=-scenario.shift / scenario.scale, std=1 / scenario.scale, field="image"
    )
    return Pipeline(
        source=source,
        stages=[normalize],
        batch_size=scenario.batch_size,
        shuffle=scenario.shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


def _text_pipeline(scenario: Scenario, variant: str, seed: int) -> Pipeline:
    """``TEXT-1``: lines tokenized one by one by a ``HostOperator`` in processes.

    ``tokenizers``' per-line ``encode`` holds the GIL: on 2 cores, two worker
    threads tokenized 3,650 lines/s, one thread 4,000 and two worker processes
    (``processes=True``, the library's setting for GIL-bound work) 5,500.
    No compiled stage follows.
    """
    lines, tokenizer_json = read_corpus(scenario.variants[variant].num_records)
    tokenize = HostOperator(_Tokenized(Tokenize(tokenizer_json)), name="tokenize")
    return Pipeline(
        source=HostMapSource(
            Lines(lines), [tokenize], workers=default_workers(), processes=True
        ),
        batch_size=scenario.batch_size,
        shuffle=scenario.shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


class _Tokenized:
    """A host stage: ``{"text": line} -> {"tokens", "length"}``."""

    def __init__(self, tokenize: Tokenize):
        self.tokenize = tokenize
        self.__name__ = "tokenize"

    def __call__(self, record: dict, rng: None) -> dict:
        return self.tokenize.one(record["text"])


def _decode_crop_record(record: dict, rng: np.random.Generator) -> dict:
    return {"image": decode_crop(record["image"], rng), "label": record["label"]}


def operator_stages(scenario: Scenario) -> list[RecordOperator]:
    """The scenario's ops as datarax operators, one per op and image field.

    ``resized_crop`` is ``RandomResizedCrop`` back to the image's size,
    ``flip`` ``HorizontalFlip``, ``jitter`` ``ColorJitter``, ``cutout``
    ``Cutout`` and ``normalize`` ``Normalize`` (``x * scale + shift`` as
    ``(x - mean) / std``), with the parameters of ``datarax.bench._augment``.
    The operators keep a uint8 image uint8 (rounded and clipped after each op)
    until ``Normalize``, where the hand-written ops stay in float32: the same
    distributions, not the same numbers.

    Raises:
        ValueError: for an op with no datarax operator.
    """
    stages = []
    for op in scenario.ops:
        for name, spec in scenario.fields.items():
            if op == "resized_crop":
                height, width = spec.shape[0], spec.shape[1]
                stage = RandomResizedCrop(
                    height, width, scale=CROP_SCALE, ratio=CROP_RATIO, field=name
                )
            elif op == "flip":
                stage = HorizontalFlip(p=FLIP_P, field=name)
            elif op == "jitter":
                stage = ColorJitter(
                    brightness=JITTER, contrast=JITTER, saturation=JITTER, field=name
                )
            elif op == "cutout":
                stage = Cutout(size=CUTOUT_SIZE, field=name)
            elif op == "normalize":
                stage = Normalize(
                    mean=-scenario.shift / scenario.scale,
                    std=1 / scenario.scale,
                    field=name,
                )
            else:
                raise ValueError(
                    f"{scenario.id}: op {op!r} has no datarax operator; define the "
                    "scenario with image ops and normalize only."
                )
            stages.append(stage)
    return stages


def _transform(scenario: Scenario):
    def transform(record, key):
        return apply_jax(scenario, record, key)

    return transform


def _affine(scenario: Scenario):
    def affine(record, key):
        x = record["features"].astype(jnp.float32)
        return {"features": x * scenario.scale + scenario.shift}

    return affine


def _square(record, key):
    x = record["features"].astype(jnp.float32)
    return {"features": x * x * SQUARE_SCALE}


def _concatenate(a: Batch, b: Batch) -> Batch:
    return {"features": jnp.concatenate([a["features"], b["features"]], axis=-1)}


def _identity(batch: Batch) -> Batch:
    return batch


def _structure(pipe: Pipeline) -> dict[str, Any]:
    """The pipeline's stages (or DAG nodes) by class, for the report."""
    if pipe.dag is not None:
        return {"nodes": {name: type(n).__name__ for name, n in pipe.nodes.items()}}
    return {"stages": [type(stage).__name__ for stage in pipe.stages]}


def _source_name(scenario: Scenario) -> str:
    if scenario.encoded == "text":
        return "HostMapSource(Lines, tokenize (HF tokenizers) in processes)"
    if scenario.encoded:
        return f"HostMapSource(ImageFolderSource, decode_crop ({decoder()}) on threads)"
    if scenario.on_disk:
        return "StreamingDiskSource"
    if scenario.mix_weights is not None:
        return "MixDataSourcesNode(MemorySource x3)"
    return "MemorySource"


class _PipelineAdapter(Adapter):
    """What both datarax adapters share: one pipeline built by the scenario.

    Args:
        seed: the pipeline's seed (``nnx.Rngs(seed)``).
    """

    kind = "datarax"
    modules = ()
    shards_batches = True
    reads_files = True
    mode: str  # how the pipeline is consumed, for the report

    def __init__(self, *, seed: int = 0):
        self._seed = seed
        self._settings: dict[str, Any] = {}
        self._state: Any = None  # the consumer's, made by the first run

    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the pipeline (see :func:`build_pipeline`)."""
        self._pipe = build_pipeline(
            scenario, data, workdir, seed=self._seed, variant=variant
        )
        self.consumer = consumer_of(scenario)
        self._settings = {
            "mode": self.mode,
            "source": _source_name(scenario),
            **_structure(self._pipe),
        }

    def settings(self) -> dict[str, Any]:
        """How the pipeline is consumed and what it reads."""
        return dict(self._settings)

    def close(self) -> None:
        """Stops a host-mapped source's workers."""
        source = getattr(getattr(self, "_pipe", None), "source", None)
        if isinstance(source, HostMapSource):
            source.close()


@register_adapter
class DataraxAdapter(_PipelineAdapter, IteratorAdapter):
    """Datarax by Python iteration: ``for batch in pipeline``.

    Args:
        seed: the pipeline's seed (``nnx.Rngs(seed)``).
    """

    name = "Datarax"
    mode = "iteration"

    def make_iterator(self) -> Iterator[Batch]:
        """The pipeline's own iterator (endless)."""
        return iter(self._pipe)


@register_adapter
class DataraxScanAdapter(_PipelineAdapter):
    """Datarax by ``Pipeline.scan`` with the scenario's consumer as the step.

    The same pipeline as :class:`DataraxAdapter`; every ``run`` is one compiled
    call, cached after the first (default unroll), whose carry is the
    consumer's state (the running sum of :func:`reduce_batch`, or ``DP-1``'s
    MLP parameters).

    Args:
        seed: the pipeline's seed (``nnx.Rngs(seed)``).
    """

    name = "Datarax-scan"
    mode = "Pipeline.scan(consumer step, init_carry=state)"

    def run(self, num_batches: int) -> int:
        """One ``Pipeline.scan`` of ``num_batches`` steps; returns records.

        The count is how far the pipeline's own stream position moved, so the
        runner's check of records served holds scan to account too.
        """
        if self._state is None:
            self._state = self.consumer.init()
            step = self.consumer.step
            # One function object for every call: scan caches its program on it.
            self._scan_step = lambda state, batch: (step(state, batch), None)
        before = int(self._pipe.position[...])
        self._state, _ = self._pipe.scan(
            self._scan_step, length=num_batches, init_carry=self._state
        )
        jax.block_until_ready(self._state)
        return int(self._pipe.position[...]) - before

    def batches(self, num_batches: int) -> list[dict[str, np.ndarray]]:
        """The next batches, as the stacked outputs of an identity-step scan."""
        stacked = jax.device_get(self._pipe.scan(_identity, length=num_batches))
        return [{name: x[i] for name, x in stacked.items()} for i in range(num_batches)]
