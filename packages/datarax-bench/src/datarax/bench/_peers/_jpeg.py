"""The peers' ``CV-JPEG`` and ``TEXT-1`` pipelines, each in its library's idiom.

``TEXT-1``: PyTorch tokenizes a line per ``__getitem__`` in worker processes,
Grain ``map``s the same per line (threads or ``mp_prefetch``), tf.data batches
the lines and tokenizes each batch in a ``tf.py_function`` (``encode_batch``).
The rest of this docstring is ``CV-JPEG``'s.

* PyTorch: a map-style dataset whose ``__getitem__`` reads, decodes, crops,
  flips and normalizes one file (:func:`datarax.bench._jpeg.decode_crop`:
  OpenCV's decoder, torchvision's ``RandomResizedCrop`` window, a bilinear
  resize; the Floor and datarax call the same function), a shuffling
  ``DataLoader`` with one worker process per core and the default collate.
* tf.data: file names shuffled per epoch, ``map`` with ``AUTOTUNE``:
  ``sample_distorted_bounding_box`` on the JPEG's header shape (torchvision's
  area and aspect ranges, 10 attempts), ``decode_and_crop_jpeg`` (decodes only
  the window), bilinear resize to 224, random flip, normalize; ``batch`` and
  ``prefetch(AUTOTUNE)``: the ImageNet input pipeline of TensorFlow's models.
* Grain: ``MapDataset`` of record indices, shuffled per epoch, ``random_map`` of
  the same per-file work as PyTorch's, ``batch``, read ahead by threads
  (``to_iter_dataset``) or by processes (``mp_prefetch``).
* SPDL: its pipeline's loading stage decodes a batch of files with the same
  function, batches in parallel on its thread pool (see ``_spdl.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datarax.bench._jpeg import CROP, decode_crop, image_folder, normalize
from datarax.bench._scenarios import Scenario
from datarax.bench._text import Tokenize, read_corpus

SEED = 0


def jpeg_files(scenario: Scenario, variant: str) -> tuple[list[str], np.ndarray]:
    """The scenario's file paths (sorted) and their int32 labels."""
    root = image_folder(scenario.variants[variant].num_records)
    files = sorted(root.glob("class_*/*.jpg"))
    labels = np.asarray([int(f.parent.name[6:]) for f in files], np.int32)
    return [str(f) for f in files], labels


class JpegRecords:
    """Reads, decodes, crops, flips and normalizes one file per index.

    Module-level and free of torch and grain, so that worker processes can
    unpickle it. ``rng`` draws come from a generator made once per process.
    """

    def __init__(self, files: list[str], labels: np.ndarray, seed: int = SEED):
        self.files, self.labels, self.seed = files, labels, seed
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Record ``index``, cropped with draws from ``rng``."""
        data = Path(self.files[index]).read_bytes()
        return {
            "image": normalize(decode_crop(data, rng)),
            "label": self.labels[index],
        }

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if self._rng is None:  # one per worker process, seeded by torch per worker
            import torch

            self._rng = np.random.default_rng((self.seed, torch.initial_seed()))
        return self.load(int(index), self._rng)


def torch_loader(
    scenario: Scenario,
    variant: str,
    num_workers: int,
    prefetch_factor: int,
    dataset: Any = None,
) -> Any:
    """PyTorch's ``DataLoader`` over the files (or ``dataset``; module docstring)."""
    import multiprocessing

    import torch
    from torch.utils.data import DataLoader

    if dataset is None:
        dataset = JpegRecords(*jpeg_files(scenario, variant))
    workers: dict[str, Any] = {}
    if num_workers:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", __name__])
        workers = {
            "num_workers": num_workers,
            "prefetch_factor": prefetch_factor,
            "persistent_workers": True,
            "multiprocessing_context": context,
        }
    return DataLoader(
        dataset,
        batch_size=scenario.batch_size,
        shuffle=scenario.shuffle,
        drop_last=True,
        generator=torch.Generator().manual_seed(SEED),
        **workers,
    )


def tf_dataset(tf: Any, scenario: Scenario, variant: str) -> Any:
    """tf.data's pipeline over the files (see the module docstring)."""
    files, labels = jpeg_files(scenario, variant)
    autotune = tf.data.AUTOTUNE

    def load(path: Any, label: Any) -> dict[str, Any]:
        data = tf.io.read_file(path)
        shape = tf.io.extract_jpeg_shape(data)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(data, window, channels=3)
        image = tf.image.resize(image, (CROP, CROP), method="bilinear")
        image = tf.image.random_flip_left_right(image)
        return {"image": image * (2 / 255) - 1, "label": label}

    dataset = tf.data.Dataset.from_tensor_slices((files, labels))
    if scenario.shuffle:
        dataset = dataset.shuffle(len(files), seed=SEED, reshuffle_each_iteration=True)
    return (
        dataset.repeat()
        .map(load, num_parallel_calls=autotune)
        .batch(scenario.batch_size, drop_remainder=True)
        .prefetch(autotune)
    )


def grain_dataset(
    scenario: Scenario, variant: str, num_threads: int, processes: int
) -> Any:
    """Grain's pipeline (files or lines), read ahead by threads or processes."""
    import grain

    if scenario.encoded == "text":
        records: Any = text_records(scenario, variant)
    else:
        records = JpegRecords(*jpeg_files(scenario, variant))
    dataset = grain.MapDataset.range(len(records)).seed(SEED)
    if scenario.shuffle:
        dataset = dataset.shuffle()
    dataset = dataset.repeat()
    if scenario.encoded == "text":
        dataset = dataset.map(records.load)
    else:
        dataset = dataset.random_map(records.load)
    dataset = dataset.batch(scenario.batch_size)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
    iterable = dataset.to_iter_dataset(options)
    if processes:
        from absl import flags

        # Grain reads absl flags in mp_prefetch; a program that does not run
        # under absl.app (this benchmark) has never parsed them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iterable = iterable.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=processes)
        )
    return iterable


def batches_of(iterable: Any) -> Iterator[dict[str, np.ndarray]]:
    """An endless iterator over ``iterable`` (restarted at each epoch's end)."""
    while True:
        yield from iterable


# -- TEXT-1 ---------------------------------------------------------------------


class TextRecords:
    """Tokenizes one line per index (picklable: the tokenizer travels as JSON)."""

    def __init__(self, lines: list[str], tokenize: Tokenize):
        self.lines, self.tokenize = lines, tokenize

    def __len__(self) -> int:
        return len(self.lines)

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Line ``index`` tokenized."""
        return self.tokenize.one(self.lines[int(index)])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.load(index)


def text_records(scenario: Scenario, variant: str) -> TextRecords:
    """The scenario's lines and tokenizer."""
    lines, tokenizer_json = read_corpus(scenario.variants[variant].num_records)
    return TextRecords(lines, Tokenize(tokenizer_json))


def torch_text_loader(
    scenario: Scenario, variant: str, num_workers: int, prefetch_factor: int
) -> Any:
    """PyTorch: a line per ``__getitem__``, worker processes, default collate."""
    return torch_loader(scenario, variant, num_workers, prefetch_factor,
                        dataset=text_records(scenario, variant))  # fmt: skip


def tf_text_dataset(tf: Any, scenario: Scenario, variant: str) -> Any:
    """tf.data: lines batched, each batch tokenized by ``tf.py_function``.

    A Python tokenizer enters tf.data through ``py_function`` (TensorFlow's
    guide); mapped after ``batch``, one call tokenizes a whole batch with
    ``encode_batch`` (Rust threads), in parallel maps (``AUTOTUNE``).
    """
    records = text_records(scenario, variant)
    size, length = scenario.batch_size, scenario.fields["tokens"].shape[0]

    def encode(lines: Any) -> tuple[np.ndarray, np.ndarray]:
        batch = records.tokenize.batch([line.decode() for line in lines.numpy()])
        return batch["tokens"], batch["length"]

    def load(lines: Any) -> dict[str, Any]:
        tokens, lengths = tf.py_function(encode, [lines], (tf.int32, tf.int32))
        tokens.set_shape((size, length))
        lengths.set_shape((size,))
        return {"tokens": tokens, "length": lengths}

    dataset = tf.data.Dataset.from_tensor_slices(records.lines)
    if scenario.shuffle:
        dataset = dataset.shuffle(
            len(records), seed=SEED, reshuffle_each_iteration=True
        )
    return (
        dataset.repeat()
        .batch(size, drop_remainder=True)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
