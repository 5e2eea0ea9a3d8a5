"""``TFDSSource`` and ``TFDSStreamingSource``: prepared TFDS builders as sources."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import tensorflow_datasets as tfds

from datarax.core import ElementSpec, IterableSource, SourceBase
from datarax.sources import EagerSourceBase, HostSourceBase

#: Records per ``__getitems__`` call while materialising a split: large enough
#: that the call's own overhead vanishes, small enough that the decoded Python
#: dicts of one chunk stay a small fraction of the arrays being filled.
READ_CHUNK = 4096
#: Records in the ``tf.data`` shuffle buffer of an iteration-only (tfrecord)
#: stream: each epoch is a permutation, but only this local (files are shuffled
#: too, so records of different files mix).
SHUFFLE_BUFFER = 10_000


class _Field(NamedTuple):
    """One array feature of a builder, as a record field."""

    name: str  # "a/b" for feature "b" of a nested FeaturesDict "a"
    path: tuple[str, ...]  # keys into a decoded (nested) example
    shape: tuple[int, ...]
    # As the feature declares it. JAX may hold it narrower (int64 -> int32
    # without x64): values are read at this width, so the narrowing is checked
    # (EagerSourceBase, HostSourceBase) rather than wrapped by a NumPy cast here.
    dtype: np.dtype


def _tensorflow_available() -> bool:
    """Whether TensorFlow imports (slow: only asked for tfrecord builders)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _open_builder(
    name_or_builder: str | tfds.core.DatasetBuilder, data_dir: Any, owner: str
) -> tfds.core.DatasetBuilder:
    """The builder named or given, checked to be prepared."""
    if isinstance(name_or_builder, tfds.core.DatasetBuilder):
        if data_dir is not None:
            raise ValueError(
                f"{owner}: data_dir={data_dir!r} was given with a builder instance, "
                f"which already reads from {name_or_builder.data_dir}; pass data_dir "
                "to the builder's constructor (or tfds.builder) instead."
            )
        builder = name_or_builder
    elif isinstance(name_or_builder, str):
        try:
            builder = tfds.builder(name_or_builder, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError as err:
            raise ValueError(
                f"{owner}: no TFDS dataset {name_or_builder!r} is registered or "
                f"prepared under data_dir={data_dir!r}; check the name "
                "(tfds.list_builders()), pass the data_dir it was prepared in, or "
                "import the module that defines its builder."
            ) from err
    else:
        raise TypeError(
            f"{owner}: expected a TFDS dataset name or a tfds.core.DatasetBuilder, "
            f"got {type(name_or_builder).__name__}."
        )
    if not builder.is_prepared():
        raise ValueError(
            f"{owner}: {builder.name!r} is not prepared in {builder.data_dir}; call "
            "builder.download_and_prepare() first (build it with "
            "file_format='array_record' to read it without TensorFlow and to stream "
            "it), or pass the data_dir it was prepared in."
        )
    return builder


def _check_split(builder: tfds.core.DatasetBuilder, split: str, owner: str) -> int:
    """The number of records in ``split`` (which may be sliced or joined)."""
    splits = list(builder.info.splits)
    try:
        return int(builder.info.splits[split].num_examples)
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise ValueError(
            f"{owner}: {builder.name!r} has no split {split!r}; its splits are "
            f"{splits} (pass one of them, optionally sliced or joined: "
            "'train[:80%]', 'train+test')."
        ) from err


def _leaves(
    features: Any, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """(path, feature) of every feature, nested ``FeaturesDict`` s flattened."""
    leaves = []
    for key, feature in features.items():
        path = (*prefix, key)
        if isinstance(feature, tfds.features.FeaturesDict):
            leaves.extend(_leaves(feature, path))
        else:
            leaves.append((path, feature))
    return leaves


def _why_not_array(feature: Any) -> str | None:
    """Why ``feature`` cannot be a fixed-shape array field, or ``None`` if it can."""
    if isinstance(feature, tfds.features.Sequence):  # tfds Dataset features too
        return "is a Sequence (a list of values per record)"
    shape, dtype = feature.shape, feature.np_dtype
    if not isinstance(shape, tuple) or isinstance(dtype, Mapping):
        return "is a nested feature"
    dtype = np.dtype(dtype)
    if dtype.kind in "OSUV":
        return "holds strings"
    if any(d is None for d in shape):
        return f"has a variable shape {shape}"
    if dtype.kind not in "biuf":
        return f"has dtype {dtype}, which JAX cannot hold"
    return None


def _array_fields(
    builder: tfds.core.DatasetBuilder, features: Sequence[str] | None, owner: str
) -> list[_Field]:
    """The record fields of ``builder``'s features (those named, if any)."""
    leaves = {"/".join(path): (path, f) for path, f in _leaves(builder.info.features)}
    if features is None:
        names = list(leaves)
    else:
        if isinstance(features, str) or not all(isinstance(n, str) for n in features):
            raise TypeError(
                f"{owner}: features must be a list of feature names, got {features!r}."
            )
        names = list(features)
        unknown = [n for n in names if n not in leaves]
        if unknown or not names:
            raise ValueError(
                f"{owner}: features {unknown or names!r} are not features of "
                f"{builder.name!r}, whose features are {list(leaves)}."
            )
    problems = {n: _why_not_array(leaves[n][1]) for n in names}
    bad = {n: why for n, why in problems.items() if why is not None}
    if bad:
        listed = "; ".join(f"{n!r} ({leaves[n][1]!r}) {why}" for n, why in bad.items())
        good = [n for n in leaves if _why_not_array(leaves[n][1]) is None]
        leave_out = (
            f"leave them out with features={good!r}"
            if good
            else "no feature of this builder can be an array"
        )
        raise ValueError(
            f"{owner}: features of {builder.name!r} that cannot be arrays: {listed}. "
            f"Records must be fixed-shape numeric arrays: {leave_out}, or, when "
            "preparing the dataset, store text as token ids and pad variable-shape "
            "values to a fixed-shape Tensor feature."
        )
    return [
        _Field(
            name,
            leaves[name][0],
            tuple(leaves[name][1].shape),
            np.dtype(leaves[name][1].np_dtype),
        )
        for name in names
    ]


def _random_access(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the builder's files allow random access (array_record, parquet)."""
    info = builder.info
    formats = getattr(info, "available_file_formats", lambda: {info.file_format})()
    return bool(set(formats) & tfds.core.FileFormat.with_random_access())


def _format(builder: tfds.core.DatasetBuilder) -> str:
    file_format = builder.info.file_format
    return getattr(file_format, "value", str(file_format))


def _get(example: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        example = example[key]
    return example


def _stack(records: Sequence[Mapping[str, Any]], field: _Field) -> np.ndarray:
    """Field ``field`` of decoded ``records``, stacked on a new leading axis."""
    return np.stack([_get(record, field.path) for record in records])


def _read_split(data_source: Any, fields: list[_Field]) -> dict[str, np.ndarray]:
    """Every record of a random-access data source, as one array per field.

    Fills preallocated arrays chunk by chunk (one ``__getitems__`` per chunk), so
    at most one chunk of decoded Python dicts exists at a time.
    """
    length = len(data_source)
    out = {f.name: np.empty((length, *f.shape), f.dtype) for f in fields}
    for lo in range(0, length, READ_CHUNK):
        hi = min(length, lo + READ_CHUNK)
        records = data_source.__getitems__(list(range(lo, hi)))
        for f in fields:
            out[f.name][lo:hi] = _stack(records, f)
    return out


def _tf_dataset(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
) -> Any:
    """``split`` as a ``tf.data.Dataset``: file order, or files shuffled by ``seed``.

    ``batch_size=-1`` gives the whole split as one batch.
    """
    # One reader at a time (cycle length 1): shards are read one after another
    # in file order, the order a random-access data source would serve, rather
    # than interleaved.
    read_config = tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=seed)
    return builder.as_dataset(
        split=split,
        batch_size=batch_size,
        shuffle_files=seed is not None,
        read_config=read_config,
    )


def _read_split_tf(
    builder: tfds.core.DatasetBuilder, split: str, fields: list[_Field]
) -> dict[str, np.ndarray]:
    """Every record of ``split`` through ``tf.data``, decoded in one batch."""
    arrays = tfds.as_numpy(_tf_dataset(builder, split, batch_size=-1))
    return {f.name: np.asarray(_get(arrays, f.path), dtype=f.dtype) for f in fields}


class TFDSSource(EagerSourceBase):
    """A split of a prepared TFDS builder, materialised as device arrays.

    All records of ``split`` are read once, at construction, into one array per
    feature; from then on the source behaves like a
    :class:`~datarax.sources.MemorySource` (traceable ``get_batch_at``, natural
    and shuffled order). The natural order is TFDS's file order, the order of
    ``builder.as_data_source(split)`` (TFDS shuffles examples by key when it
    prepares a dataset, so this is not the order the generator yielded).

    A builder prepared with ``file_format="array_record"`` (or parquet) is read
    through its random-access data source, chunk by chunk, without TensorFlow;
    one prepared in the default ``tfrecord`` format is read through ``tf.data``
    in a single batch and needs TensorFlow installed.

    Every feature becomes a field (a nested ``FeaturesDict`` feature ``b`` of
    ``a`` becomes ``"a/b"``): ``ClassLabel`` as an int64 scalar (int32 in JAX
    unless x64 is on), ``Image`` as uint8 ``(H, W, C)``, ``Tensor`` with its
    shape and dtype. Features that cannot be arrays (text and strings,
    variable shapes such as ``Tensor(shape=(None,))`` or unsized images,
    sequences) are refused; pass ``features=`` to leave them out.

    Args:
        name_or_builder: a registered TFDS dataset name (``"mnist"``,
            ``"mnist:3.0.1"``), or a ``tfds.core.DatasetBuilder`` instance.
        split: the split to read; slicing and joining work as in TFDS
            (``"train[:80%]"``, ``"train+test"``).
        data_dir: where the named dataset was prepared (TFDS's default when
            ``None``); not allowed with a builder instance, which has its own.
        features: the names of the features to read (default: all of them).

    Raises:
        ValueError: naming the dataset, for an unknown name, an unprepared
            builder, an unknown split, unknown feature names, or features that
            cannot be arrays (naming each one and why).
        RuntimeError: for a tfrecord builder when TensorFlow is not installed.
        TypeError: for anything but a name or a builder.

    Examples:
        Prepare a dataset once (``array_record`` reads without TensorFlow), then
        train from device arrays::

            builder = tfds.builder("mnist", data_dir=data_dir,
                                   file_format="array_record")
            builder.download_and_prepare()
            source = TFDSSource(builder, split="train")
            source.element_spec["image"]  # ShapeDtypeStruct((28, 28, 1), uint8)
            pipe = Pipeline(source=source, batch_size=128, shuffle=True)
    """

    def __init__(
        self,
        name_or_builder: str | tfds.core.DatasetBuilder,
        *,
        split: str,
        data_dir: Any = None,
        features: Sequence[str] | None = None,
    ):
        owner = type(self).__name__
        builder = _open_builder(name_or_builder, data_dir, owner)
        _check_split(builder, split, owner)
        fields = _array_fields(builder, features, owner)
        if _random_access(builder):
            arrays = _read_split(builder.as_data_source(split=split), fields)
        elif _tensorflow_available():
            arrays = _read_split_tf(builder, split, fields)
        else:
            raise RuntimeError(
                f"{owner}: {builder.name!r} is prepared in {builder.data_dir} in the "
                f"{_format(builder)} format, which only TensorFlow can read, and "
                "TensorFlow is not installed. Install it (pip install "
                "tensorflow-cpu), or prepare the dataset again without it: "
                f"tfds.builder({builder.name!r}, data_dir=<another dir>, "
                "file_format='array_record').download_and_prepare()."
            )
        self.name = builder.name
        self.split = str(split)
        super().__init__(arrays, owner=f"{owner}({self.name!r}, split={self.split!r})")


class _Reader:
    """The builder and its data source, kept out of the nnx graph's state.

    A plain object (not an array, not a pytree) is a static attribute of the
    module: it never enters ``nnx.state``, a checkpoint or a compiled function's
    arguments, and the callback reaches the files through it.
    """

    def __init__(
        self,
        builder: tfds.core.DatasetBuilder,
        split: str,
        data_source: Any,
        fields: list[_Field],
    ):
        self.builder = builder
        self.split = split
        self.data_source = data_source  # None for an iteration-only builder
        self.fields = fields

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        # One batched read per callback: ArrayRecord groups the lookups.
        records = self.data_source.__getitems__(rows.tolist())
        return {f.name: _stack(records, f) for f in self.fields}

    def iter_epoch(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of epoch ``epoch`` from record ``skip``, through ``tf.data``."""
        seed = None
        if key_data is not None:
            # The seed carries the epoch: a fresh, reproducible order per epoch.
            words = np.append(np.asarray(key_data, np.uint32).ravel(), epoch)
            seed = zlib.crc32(words.astype(np.uint32).tobytes()) & 0x7FFFFFFF
        dataset = _tf_dataset(self.builder, self.split, seed=seed)
        if seed is not None:
            dataset = dataset.shuffle(
                SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False
            )
        # A stream cannot seek: resuming mid-epoch reads and drops `skip` records.
        dataset = dataset.skip(skip).batch(READ_CHUNK)
        for chunk in tfds.as_numpy(dataset):
            yield {f.name: _get(chunk, f.path) for f in self.fields}


class TFDSStreamingSource(SourceBase):
    """A split of a prepared TFDS builder, read on demand, never materialised.

    For splits too large to hold in memory. How it reads depends on the format
    the builder was prepared in:

    * ``array_record`` (or parquet), random access: records are read on the host
      through ``builder.as_data_source(split)`` only when a batch needs them.
      :meth:`get_batch_at` is traceable (the read is a ``jax.pure_callback``, one
      ``__getitems__`` per read, several batches per read inside a pipeline), so
      iteration, ``Pipeline.scan`` and ``Pipeline.step`` all work, and natural
      and shuffled order are the same streams as :class:`TFDSSource` over the
      same split. No TensorFlow needed.
    * ``tfrecord`` (TFDS's default), iteration only, through ``tf.data`` (needs
      TensorFlow): a pipeline over it iterates, its stages still compiled;
      ``Pipeline.scan``, ``Pipeline.step`` and ``get_batch_at`` raise
      ``TypeError`` saying why and what to use instead. Natural order is file
      order (the order of :class:`TFDSSource`); shuffled epoch ``e`` shuffles
      the files and a ``tf.data`` buffer of ``SHUFFLE_BUFFER`` records with a
      seed from the pipeline's key and ``e`` (every record once per epoch, the
      same order on every run). Resuming mid-epoch reads and drops the records
      before the position.

    Fields and dtypes are those of :class:`TFDSSource`.

    Args:
        name_or_builder: a registered TFDS dataset name, or a
            ``tfds.core.DatasetBuilder`` instance.
        split: the split to read (sliced or joined as in TFDS).
        data_dir: where the named dataset was prepared (TFDS's default when
            ``None``); not allowed with a builder instance.
        features: the names of the features to read (default: all of them).

    Raises:
        ValueError: as :class:`TFDSSource`.
        RuntimeError: for a tfrecord builder when TensorFlow is not installed.
        TypeError: for anything but a name or a builder.

    Examples:
        ::

            source = TFDSStreamingSource("imagenet2012", split="train",
                                         data_dir=data_dir,
                                         features=["image", "label"])
            pipe = Pipeline(source=source, batch_size=256, shuffle=True)
            losses = pipe.scan(train_step, length=1000, modules=(model,))
    """

    #: Both kinds shuffle: by permutation (random access) or tf.data buffer.
    supports_shuffle = True
    random_access_alternative = (
        "a random-access builder: prepare it again with file_format='array_record' "
        "(tfds.builder(name, data_dir=..., file_format='array_record')"
        ".download_and_prepare()), or datarax.integrations.tfds.TFDSSource if the "
        "split fits in memory"
    )

    def __new__(
        cls,
        name_or_builder: str | tfds.core.DatasetBuilder | None = None,
        **kwargs: Any,
    ) -> TFDSStreamingSource:
        # One constructor, two kinds of source: the builder's file format decides
        # whether this is a random-access or an iteration-only source.
        if cls is TFDSStreamingSource:
            owner = "TFDSStreamingSource"
            builder = _open_builder(name_or_builder, kwargs.get("data_dir"), owner)
            cls = _streaming_kind(builder)
        return super().__new__(cls)

    def __init__(
        self,
        name_or_builder: str | tfds.core.DatasetBuilder,
        *,
        split: str,
        data_dir: Any = None,
        features: Sequence[str] | None = None,
    ):
        owner = "TFDSStreamingSource"
        builder = _open_builder(name_or_builder, data_dir, owner)
        length = _check_split(builder, split, owner)
        fields = _array_fields(builder, features, owner)
        data_source = None  # iteration only: tf.data reads the split in order
        if isinstance(self, HostSourceBase):
            data_source = builder.as_data_source(split=split)
            length = len(data_source)
        if length == 0:
            raise ValueError(
                f"{owner}: split {split!r} of {builder.name!r} holds no records."
            )
        self.length = length
        self.name = builder.name
        self.split = str(split)
        self.reader = _Reader(builder, self.split, data_source, fields)

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field (dtypes as JAX holds them)."""
        return {
            f.name: jax.ShapeDtypeStruct(
                f.shape, jax.dtypes.canonicalize_dtype(f.dtype)
            )
            for f in self.reader.fields
        }


class TFDSRandomAccessSource(TFDSStreamingSource, HostSourceBase):
    """A :class:`TFDSStreamingSource` over an ``array_record`` (or parquet) builder.

    What ``TFDSStreamingSource(...)`` returns for a random-access format: every
    mode works, records are read on the host on demand.
    """

    def host_read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Records ``rows`` of the split, read with one ``__getitems__``."""
        return self.reader.read(rows)


class TFDSIterableSource(TFDSStreamingSource, IterableSource):
    """A :class:`TFDSStreamingSource` over a ``tfrecord`` builder: iteration only.

    What ``TFDSStreamingSource(...)`` returns for TFRecord files when TensorFlow
    is installed; ``tf.data`` reads the split in order.
    """

    def iter_epoch(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of epoch ``epoch`` from ``skip``, through ``tf.data``."""
        return self.reader.iter_epoch(epoch, key_data, skip)


def _streaming_kind(builder: tfds.core.DatasetBuilder) -> type[TFDSStreamingSource]:
    """The kind of streaming source a prepared builder's format allows."""
    if _random_access(builder):
        return TFDSRandomAccessSource
    if _tensorflow_available():
        return TFDSIterableSource
    raise RuntimeError(
        f"TFDSStreamingSource: {builder.name!r} is prepared in {builder.data_dir} "
        f"in the {_format(builder)} format, which only TensorFlow can read (in "
        "order, not by position), and TensorFlow is not installed. Prepare it "
        "again in a random-access format, read without TensorFlow: "
        f"tfds.builder({builder.name!r}, data_dir=<another dir>, "
        "file_format='array_record').download_and_prepare(); or install "
        "tensorflow (pip install tensorflow-cpu) to iterate it."
    )
