"""HFSource and HFStreamingSource, public in ``datarax.integrations.hf``.

``HFSource`` materialises a ``datasets.Dataset`` (or a split of a ``DatasetDict``,
or a folder written by ``save_to_disk``) as device arrays, straight from its Arrow
columns: random access, shuffling, ``Pipeline.scan``. ``HFStreamingSource`` reads an
``IterableDataset`` in order, for data too large to hold: iteration only.

Needs the ``[hf]`` extra: ``pip install "datarax-integrations[hf]"``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from datarax.core import ElementSpec, IterableSource
from datarax.integrations._extras import require
from datarax.sources import EagerSourceBase

datasets, pa = require("hf", "datasets", "pyarrow")
import pyarrow.compute as pc  # noqa: E402 - after the guard, which names the extra

__all__ = ["HFSource", "HFStreamingSource"]

_WHAT_TO_DO = (
    "select the array columns with columns=[...], pad or truncate the column to a "
    "fixed length in ds.map(...), or use a tokenised (fixed-length integer) column"
)


class HFSource(EagerSourceBase):
    """A HuggingFace ``datasets.Dataset`` held as device arrays.

    Every selected column becomes one field. Numeric and boolean columns, and
    columns of fixed-length lists or ``Array2D``-``Array5D`` features (any
    nesting), are converted from their Arrow buffers in one vectorised step per
    column, without a Python loop over rows. A column that cannot be an array is
    refused by name: strings, ragged lists, structs (``Image``, ``Audio``), missing
    values.

    Args:
        dataset_or_path: a ``datasets.Dataset``; a ``DatasetDict`` (then give
            ``split``); or the path of a folder written by ``save_to_disk``.
        split: the split of a ``DatasetDict`` to read. Given with a single
            ``Dataset``, it must be that dataset's split name.
        columns: the columns to keep (default: all), each named once.

    Raises:
        TypeError: for an ``IterableDataset`` (use :class:`HFStreamingSource`) or
            any other type.
        FileNotFoundError: for a path that does not exist, or is not a folder
            written by ``save_to_disk``.
        ValueError: naming the split, column or feature at fault (a column named
            twice; ``split=`` with a ``Dataset`` that has no split name or
            another one); without x64,
            for an int64 / uint64 value beyond 32 bits or a finite float64
            beyond float32 (JAX holds them in 32 bits), naming the column, the
            value and its record.

    Examples:
        >>> import datasets, numpy as np
        >>> ds = datasets.Dataset.from_dict(
        ...     {"tokens": np.arange(12, dtype=np.int32).reshape(6, 2)}
        ... )
        >>> source = HFSource(ds)
        >>> len(source), source.element_spec["tokens"].shape
        (6, (2,))
    """

    def __init__(
        self,
        dataset_or_path: Any,
        *,
        split: str | None = None,
        columns: Sequence[str] | None = None,
    ):
        dataset = _resolve(dataset_or_path, split, "HFSource", datasets.Dataset)
        names = _columns(dataset.column_names, columns, "HFSource")
        dataset = dataset.select_columns(names)
        # Arrow, with any index mapping (select, shuffle, filter) applied.
        table = dataset.with_format("arrow")[:]
        fields = {name: _to_numpy(name, table.column(name)) for name in names}
        super().__init__(fields, owner="HFSource")


class HFStreamingSource(IterableSource):
    """A HuggingFace ``IterableDataset``, read in order: iteration only.

    For datasets too large to materialise. A pipeline over it iterates (its
    stages still run compiled, with the same per-record keys as any source);
    ``Pipeline.scan``, ``Pipeline.step`` and ``get_batch_at`` need random access
    and raise ``TypeError`` pointing to :class:`HFSource`.

    Records are read in chunks of ``chunk_size`` in NumPy format. With
    ``shuffle=True`` on the pipeline, epoch ``e`` is the dataset's own buffer
    shuffle (``IterableDataset.shuffle(seed, buffer_size)``), its seed derived
    from the pipeline's key and ``e``: every record once per epoch, in an order
    fixed by the key and the epoch, so a restart serves the same stream.
    Resuming mid-epoch reads and drops the records before the position (a stream
    cannot seek).

    Args:
        dataset: an ``IterableDataset``, an ``IterableDatasetDict`` (then give
            ``split``), or a ``Dataset`` (streamed with ``to_iterable_dataset``).
        split: the split of a dict of datasets. Given with a single dataset,
            it must be that dataset's split name.
        columns: the columns to keep (default: all), each named once. A
            dataset that knows no columns (``IterableDataset.from_generator``
            without ``features=``) is read from its first record.
        length: records per epoch. Default: the split's ``num_examples`` when the
            dataset's info knows it, else counted by one pass over the data.
        chunk_size: records read per chunk from the dataset.
        shuffle_buffer: the buffer size of the shuffle, in records.

    Raises:
        TypeError: for a type other than those above.
        ValueError: naming the column or split at fault; a column whose records
            are not fixed-shape arrays (strings, ragged lists) or that has
            missing values (nulls), found at construction in the first chunk or
            at the read of a later one. A null in a float column arrives from
            the ``datasets`` numpy format as NaN, indistinguishable from a stored
            NaN, and is served as NaN.

    Examples:
        >>> import datasets, numpy as np
        >>> ds = datasets.Dataset.from_dict({"x": np.arange(5, dtype=np.float32)})
        >>> source = HFStreamingSource(ds.to_iterable_dataset())
        >>> len(source), source.element_spec["x"].dtype
        (5, dtype('float32'))
    """

    supports_shuffle = True
    random_access_alternative = (
        "datarax.integrations.hf.HFSource over a datasets.Dataset (load_from_disk "
        "or load_dataset without streaming=True)"
    )

    def __init__(
        self,
        dataset: Any,
        *,
        split: str | None = None,
        columns: Sequence[str] | None = None,
        length: int | None = None,
        chunk_size: int = 1024,
        shuffle_buffer: int = 10_000,
    ):
        if isinstance(dataset, datasets.Dataset):
            dataset = dataset.to_iterable_dataset()
        dataset = _resolve(
            dataset, split, "HFStreamingSource", datasets.IterableDataset
        )
        names = _columns(_column_names(dataset), columns, "HFStreamingSource")
        dataset = dataset.select_columns(names)
        for name, size in (
            ("chunk_size", chunk_size),
            ("shuffle_buffer", shuffle_buffer),
        ):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(
                    f"HFStreamingSource: {name} must be an int >= 1, got {size!r}."
                )
        self.stream = _Stream(dataset, names)
        self.chunk_size = chunk_size
        self.shuffle_buffer = shuffle_buffer
        self.spec = _peek_spec(dataset, names, chunk_size)
        self.length = _length(dataset, names[0], split, length, chunk_size)

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field (dtypes as JAX holds them)."""
        return {
            name: jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype))
            for name, shape, dtype in self.spec
        }

    def iter_epoch(
        self, epoch: int, key_data: np.ndarray | None, skip: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of epoch ``epoch`` from record ``skip`` (see the class doc)."""
        dataset = self.stream.dataset
        if key_data is not None:
            # The seed carries the epoch itself: set_epoch does not survive the
            # with_format copy below in every datasets version.
            words = np.append(np.asarray(key_data, np.uint32).ravel(), epoch)
            seed = zlib.crc32(words.astype(np.uint32).tobytes())
            dataset = dataset.shuffle(seed=seed, buffer_size=self.shuffle_buffer)
        chunks = dataset.with_format("numpy").iter(batch_size=self.chunk_size)
        dtypes = {name: dtype for name, _, dtype in self.spec}
        for chunk in chunks:
            size = len(chunk[self.stream.names[0]])
            if skip >= size:
                skip -= size
                continue
            yield {
                name: _chunk_array(name, chunk[name], dtypes[name])[skip:]
                for name in self.stream.names
            }
            skip = 0


class _Stream:
    """Holds the dataset object outside the nnx graph (never state, never traced)."""

    def __init__(self, dataset: Any, names: list[str]):
        self.dataset = dataset
        self.names = names


def _resolve(value: Any, split: str | None, owner: str, want: type) -> Any:
    """The ``want`` dataset named by ``value`` and ``split``, or a clear error."""
    if isinstance(value, str | os.PathLike):
        if want is not datasets.Dataset:
            raise TypeError(
                f"{owner} reads an IterableDataset; for a folder written by "
                "save_to_disk use HFSource (random access), or pass "
                "datasets.load_from_disk(path).to_iterable_dataset()."
            )
        value = _load_from_disk(os.fspath(value), owner)
    if isinstance(value, datasets.DatasetDict | datasets.IterableDatasetDict):
        splits = sorted(value)
        if split is None:
            raise ValueError(
                f"{owner}: got a dict of splits {splits}; choose one with split=..."
            )
        if split not in value:
            raise ValueError(f"{owner}: no split {split!r}; the splits are {splits}.")
        # Chosen by split=, which needs no check against the split's own name
        # (a split of a DatasetDict built in memory has none).
        return _checked_type(value[split], owner, want)
    value = _checked_type(value, owner, want)
    if split is not None and value.split is None:
        # Nothing to check split= against: ignoring it would let a caller think
        # they chose a split.
        raise ValueError(
            f"{owner}: split={split!r} was given, but the dataset is a single "
            f"datasets.{type(value).__name__} without a split name; split= chooses "
            "from a DatasetDict: pass the DatasetDict or drop split=."
        )
    if split is not None and str(value.split) != split:
        raise ValueError(
            f"{owner}: split={split!r} was given, but the dataset is the "
            f"{str(value.split)!r} split; pass the DatasetDict or drop split=."
        )
    return value


def _checked_type(value: Any, owner: str, want: type) -> Any:
    """``value`` if it is a ``want`` dataset, else a ``TypeError`` saying what is."""
    if want is datasets.Dataset and isinstance(value, datasets.IterableDataset):
        raise TypeError(
            "HFSource materialises a datasets.Dataset; an IterableDataset can only "
            "be read in order: use HFStreamingSource (iteration only), or load the "
            "data without streaming=True."
        )
    if not isinstance(value, want):
        raise TypeError(
            f"{owner}: expected a datasets.{want.__name__}, a dict of splits or "
            f"(HFSource) a save_to_disk folder; got {type(value).__name__}."
        )
    return value


def _load_from_disk(path: str, owner: str) -> Any:
    """The dataset ``save_to_disk`` wrote to ``path``, or an error naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{owner}: {path} does not exist.")
    try:
        return datasets.load_from_disk(path)
    except FileNotFoundError as err:
        # datasets says "Directory ... is neither ..." even of a plain file.
        kind = "folder" if os.path.isdir(path) else "file"
        raise FileNotFoundError(
            f"{owner}: the {kind} {path} is not a dataset written by save_to_disk "
            f"({err}). {owner} takes a datasets.Dataset, a DatasetDict with "
            "split=..., or the folder Dataset.save_to_disk / "
            "DatasetDict.save_to_disk wrote."
        ) from err


def _columns(available: list[str], columns: Sequence[str] | None, owner: str) -> list:
    if columns is None:
        return list(available)
    if isinstance(columns, str):
        raise TypeError(f"{owner}: columns must be a list of names, got {columns!r}.")
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise ValueError(
            f"{owner}: no columns {unknown}; the dataset has {list(available)}."
        )
    if not columns:
        raise ValueError(f"{owner}: columns=[] selects nothing; name at least one.")
    columns = list(columns)
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        # Arrow would fail with a bare KeyError; a field can only be served once.
        raise ValueError(
            f"{owner}: columns {twice} are named more than once in columns="
            f"{columns!r}; name each column once."
        )
    return columns


def _to_numpy(name: str, column: Any) -> np.ndarray:
    """One Arrow column as a NumPy array of shape ``[rows, *record shape]``."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    shape = [len(array)]
    while True:
        if isinstance(array.type, pa.ExtensionType):  # Array2D .. Array5D
            array = array.storage
        if array.null_count:
            raise ValueError(
                f"HFSource: column {name!r} has missing values (nulls); fill them in "
                f"ds.map(...) or {_WHAT_TO_DO}."
            )
        kind = array.type
        if pa.types.is_fixed_size_list(kind):
            shape.append(kind.list_size)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            if len(lengths) and lengths.min() != lengths.max():
                raise ValueError(
                    f"HFSource: column {name!r} holds lists of different lengths "
                    f"({lengths.min()} to {lengths.max()}); a field needs the same "
                    f"shape in every record: {_WHAT_TO_DO}."
                )
            shape.append(int(lengths[0]) if len(lengths) else 0)
        else:
            break
        array = array.flatten()
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
    ):
        what = (
            "strings"
            if pa.types.is_string(kind) or pa.types.is_large_string(kind)
            else kind
        )
        raise ValueError(
            f"HFSource: column {name!r} holds {what}, which cannot be a JAX array; "
            f"{_WHAT_TO_DO}. Structs (Image, Audio) must be decoded to fixed-shape "
            "arrays in ds.map(...) first; or read the rows with hf.HFRecords and "
            "decode or tokenize them in host stages (datarax.sources.HostMapSource)."
        )
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def _chunk_array(name: str, values: Any, declared: Any = None) -> np.ndarray:
    """One column of a NumPy-format chunk, refused by name if it is no array.

    The numpy format turns a null into ``None`` (an object array) or, in an
    integer or bool column read through Arrow, into NaN in a float array; both
    are refused. A null in a float column arrives as NaN, which cannot be told
    from a stored NaN, and is served as NaN.
    """
    array = np.asarray(values)
    widened = (
        declared is not None
        and np.dtype(declared).kind in "biu"
        and array.dtype.kind == "f"
        and np.isnan(array).any()
    )
    if widened or (array.dtype == object and _has_none(array)):
        raise ValueError(
            f"HFStreamingSource: column {name!r} has missing values (nulls); fill "
            f"them in ds.map(...) or {_WHAT_TO_DO}."
        )
    if array.dtype == object or array.dtype.kind in "USV":
        raise ValueError(
            f"HFStreamingSource: column {name!r} holds "
            f"{'strings' if array.dtype.kind in 'US' else 'ragged lists or objects'}, "
            f"which cannot be a JAX array; {_WHAT_TO_DO}."
        )
    return array


def _has_none(values: Any) -> bool:
    """Whether ``values`` (objects, lists, nested) holds a ``None`` anywhere."""
    if values is None:
        return True
    if isinstance(values, np.ndarray):
        return values.dtype == object and any(_has_none(v) for v in values.flat)
    if isinstance(values, list | tuple):
        return any(_has_none(v) for v in values)
    return False


def _column_names(dataset: Any) -> list[str]:
    """The dataset's columns; from its first record when its features are unknown.

    ``IterableDataset.from_generator`` without ``features=`` knows no columns
    until it runs: its ``column_names`` is ``None``.
    """
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError("HFStreamingSource: the dataset holds no records.")
    return list(first)


def _peek_spec(dataset: Any, names: list[str], chunk: int) -> tuple:
    """(name, record shape, dtype) per column, from the first chunk and features.

    A whole first chunk, so that ragged lists show up here rather than mid-run.
    """
    try:
        first = next(iter(dataset.with_format("numpy").iter(batch_size=chunk)))
    except StopIteration:
        raise ValueError("HFStreamingSource: the dataset holds no records.") from None
    features = dataset.features or {}
    spec = []
    for name in names:
        # The numpy format widens ints to int64; the features know the real dtype.
        declared = _feature_dtype(features.get(name))
        array = _chunk_array(name, first[name], declared)
        dtype = array.dtype if declared is None else declared
        spec.append((name, tuple(array.shape[1:]), np.dtype(dtype).name))
    return tuple(spec)


def _feature_dtype(feature: Any) -> np.dtype | None:
    """The NumPy dtype a ``datasets`` feature declares, if it declares one."""
    while feature is not None:
        dtype = getattr(feature, "dtype", None)
        if isinstance(dtype, str) and dtype not in ("list", "dict"):
            try:
                return np.dtype(dtype)
            except TypeError:
                return None
        feature = getattr(feature, "feature", None)
    return None


def _length(
    dataset: Any, column: str, split: str | None, length: int | None, chunk: int
) -> int:
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(
                f"HFStreamingSource: length must be an int >= 1, got {length!r}."
            )
        return length
    info = getattr(dataset, "info", None)
    splits = getattr(info, "splits", None) or {}
    name = split or (str(dataset.split) if dataset.split is not None else None)
    if name in splits and splits[name].num_examples:
        return int(splits[name].num_examples)
    # Unknown: count once, in chunks of one column. The numpy format, as the
    # reads use: a generator's records cannot always be joined into Arrow
    # tables (a null makes one of another type), and this must not fail then.
    counter = (
        dataset.select_columns([column]).with_format("numpy").iter(batch_size=chunk)
    )
    return sum(len(part[column]) for part in counter)
