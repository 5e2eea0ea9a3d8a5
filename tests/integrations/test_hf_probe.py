"""Probe findings in the HF sources: no silent wrong data, every bad input named.

Before the fixes: a generator dataset without ``features=`` failed with an
IndexError, an int column with nulls was served as ``[1, -2147483648, 3]``, and
duplicate columns, non-dataset paths and a stray ``split=`` gave pyarrow's or
datasets' own errors, or were ignored.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from datarax import Pipeline

datasets = pytest.importorskip("datasets")
hf = pytest.importorskip("datarax.integrations.hf")

pytestmark = pytest.mark.hf

NULLS = "HFStreamingSource: column 'a' has missing values (nulls); fill them in"


def served(source, field, batch_size, shuffle=False):
    pipe = Pipeline(source=source, batch_size=batch_size, num_epochs=1, shuffle=shuffle)
    return [np.asarray(batch[field]).tolist() for batch in pipe]


def records(count):
    def gen():
        for i in range(count):
            yield {"a": i, "b": [i, -i]}

    return gen


# 4a. A dataset that knows its columns only once it runs ----------------------


def test_a_generator_dataset_without_features_is_read():
    stream = datasets.IterableDataset.from_generator(records(7))
    assert stream.column_names is None  # what made the source index an empty list
    source = hf.HFStreamingSource(stream, chunk_size=3)
    assert len(source) == 7
    spec = source.element_spec
    assert (spec["a"].shape, spec["b"].shape) == ((), (2,))
    assert served(source, "a", 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert served(source, "b", 4)[1] == [[4, -4], [5, -5], [6, -6]]


def test_a_generator_dataset_without_features_selects_and_shuffles():
    stream = datasets.IterableDataset.from_generator(records(7))
    source = hf.HFStreamingSource(stream, columns=["a"], chunk_size=2)
    assert list(source.element_spec) == ["a"]
    batches = served(source, "a", 4, shuffle=True)
    assert sorted(sum(batches, [])) == list(range(7))


def test_an_empty_generator_dataset_is_named():
    stream = datasets.IterableDataset.from_generator(records(0))
    with pytest.raises(ValueError, match="HFStreamingSource: the dataset holds no"):
        hf.HFStreamingSource(stream)


# 4b. Nulls in a stream ------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[1, None, 3], [True, None, False], [[1, 2], [None, 3], [4, 5]]],
    ids=["int", "bool", "list-element"],
)
def test_nulls_in_the_first_chunk_are_named(values):
    # Before (int): served [1, -2147483648, 3], the null read as NaN cast to int.
    stream = datasets.Dataset.from_dict({"a": values}).to_iterable_dataset()
    with pytest.raises(ValueError, match=re.escape(NULLS)):
        hf.HFStreamingSource(stream)


def test_a_null_in_a_later_chunk_stops_the_read_that_reaches_it():
    stream = datasets.Dataset.from_dict({"a": [1, 2, 3, 4, None]}).to_iterable_dataset()
    source = hf.HFStreamingSource(stream, chunk_size=2)
    pipe = iter(Pipeline(source=source, batch_size=2, num_epochs=1))
    assert np.asarray(next(pipe)["a"]).tolist() == [1, 2]
    with pytest.raises(ValueError, match=re.escape(NULLS)):
        list(pipe)


def test_a_null_from_a_generator_is_named():
    def gen():
        for i in range(5):
            yield {"a": None if i == 3 else i}

    stream = datasets.IterableDataset.from_generator(gen)
    source = hf.HFStreamingSource(stream, chunk_size=2)
    with pytest.raises(ValueError, match=re.escape(NULLS)):
        served(source, "a", 1)


def test_a_null_in_a_float_column_arrives_as_nan():
    # Accepted, documented: the datasets numpy format turns it into NaN, which
    # cannot be told from a stored NaN.
    stream = datasets.Dataset.from_dict({"a": [1.5, None, 3.0]}).to_iterable_dataset()
    [batch] = served(hf.HFStreamingSource(stream), "a", 3)
    assert batch[0] == 1.5 and math.isnan(batch[1]) and batch[2] == 3.0


# 5. HFSource / HFStreamingSource arguments ----------------------------------


@pytest.mark.parametrize("owner", ["HFSource", "HFStreamingSource"])
def test_a_column_named_twice_is_refused(owner):
    # Before (HFSource): pyarrow's KeyError.
    ds = datasets.Dataset.from_dict({"a": [1, 2], "b": [3, 4]})
    message = (
        f"{owner}: columns ['a'] are named more than once in columns=['a', 'b', "
        "'a']; name each column once."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(hf, owner)(ds, columns=["a", "b", "a"])


def test_a_path_that_is_not_a_saved_dataset_is_named(tmp_path):
    # Before: datasets' "Directory ... is neither a Dataset directory nor ...".
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, kind in ((plain, "file"), (empty, "folder")):
        message = (
            f"HFSource: the {kind} {path} is not a dataset written by save_to_disk"
        )
        with pytest.raises(FileNotFoundError, match=re.escape(message)) as info:
            hf.HFSource(path)
        assert "HFSource takes a datasets.Dataset, a DatasetDict" in str(info.value)


@pytest.mark.parametrize("owner", ["HFSource", "HFStreamingSource"])
def test_split_with_an_unsplit_dataset_is_refused(owner):
    # Before: split= was ignored without a word.
    ds = datasets.Dataset.from_dict({"a": [1, 2]})
    message = f"{owner}: split='train' was given, but the dataset is a single datasets."
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(hf, owner)(ds, split="train")


def test_split_naming_the_datasets_own_split_is_accepted():
    ds = datasets.Dataset.from_dict({"a": [1, 2, 3]}, split="train")
    assert len(hf.HFSource(ds, split="train")) == 3
    with pytest.raises(ValueError, match=re.escape("the dataset is the 'train' split")):
        hf.HFSource(ds, split="test")


def test_split_chooses_from_a_dataset_dict_built_in_memory():
    # Its splits carry no split name of their own; split= chose them, so no check.
    ds = datasets.Dataset.from_dict({"a": [1, 2, 3]})
    splits = datasets.DatasetDict({"train": ds, "test": ds.select(range(2))})
    assert len(hf.HFSource(splits, split="test")) == 2
    streams = datasets.IterableDatasetDict({"train": ds.to_iterable_dataset()})
    stream = hf.HFStreamingSource(streams, split="train")
    assert served(stream, "a", 3) == [[1, 2, 3]]
