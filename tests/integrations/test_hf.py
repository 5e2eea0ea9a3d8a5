"""HFSource and HFStreamingSource over real `datasets` datasets made in the test."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, state_dict
from datarax.sources import MemorySource

datasets = pytest.importorskip("datasets")
hf = pytest.importorskip("datarax.integrations.hf")

pytestmark = pytest.mark.hf

N = 30


def columns(n=N):
    return {
        "tokens": np.arange(n * 4, dtype=np.int32).reshape(n, 4),
        "label": np.arange(n, dtype=np.int64),
        "image": (np.arange(n * 12) % 251).astype(np.uint8).reshape(n, 2, 2, 3),
        "weight": np.linspace(0, 1, n, dtype=np.float32),
        "keep": np.arange(n) % 3 == 0,
    }


@pytest.fixture(scope="module")
def dataset():
    return datasets.Dataset.from_dict(columns())


def as_host(batches):
    return [jax.tree.map(np.asarray, b) for b in batches]


def pipeline(source, *, batch_size=4, shuffle=False, num_epochs=2, seed=0):
    return Pipeline(
        source=source,
        batch_size=batch_size,
        shuffle=shuffle,
        rngs=nnx.Rngs(seed),
        num_epochs=num_epochs,
    )


def labels(batches):
    return np.concatenate([b["label"] for b in batches]).tolist()


# -- HFSource -------------------------------------------------------------------------


def test_length_spec_and_natural_order(dataset):
    source = hf.HFSource(dataset)
    assert len(source) == N
    assert source.element_spec == {
        "tokens": jax.ShapeDtypeStruct((4,), jnp.int32),
        "label": jax.ShapeDtypeStruct((), jnp.int32),  # int64 as JAX holds it
        "image": jax.ShapeDtypeStruct((2, 2, 3), jnp.uint8),
        "weight": jax.ShapeDtypeStruct((), jnp.float32),
        "keep": jax.ShapeDtypeStruct((), jnp.bool_),
    }
    batch = source.get_batch_at(28, 4)
    want = columns()
    rows = [28, 29, 0, 1]
    for name, value in batch.items():
        np.testing.assert_array_equal(value, want[name][rows])


def test_array_features_select_shuffle_and_saved_folders(dataset, tmp_path):
    features = datasets.Features(
        {
            "grid": datasets.Array2D((2, 3), "float32"),
            "label": datasets.ClassLabel(num_classes=3),
        }
    )
    grid = np.arange(N * 6, dtype=np.float32).reshape(N, 2, 3)
    typed = datasets.Dataset.from_dict(
        {"grid": grid, "label": np.arange(N) % 3}, features=features
    )
    source = hf.HFSource(typed)
    assert source.element_spec["grid"] == jax.ShapeDtypeStruct((2, 3), jnp.float32)
    np.testing.assert_array_equal(source.get_batch_at(0, N)["grid"], grid)
    # an index mapping (shuffle/select) is honoured
    picked = hf.HFSource(dataset.select([5, 2, 9]), columns=["label"])
    assert picked.get_batch_at(0, 3)["label"].tolist() == [5, 2, 9]
    # save_to_disk folders and DatasetDicts, by split
    splits = datasets.DatasetDict({"train": dataset, "test": dataset.select(range(7))})
    splits.save_to_disk(tmp_path / "dd")
    assert len(hf.HFSource(tmp_path / "dd", split="test")) == 7
    assert len(hf.HFSource(str(tmp_path / "dd"), split="train")) == N


@pytest.mark.parametrize("shuffle", [False, True])
def test_pipeline_iterated_and_scanned_give_the_memory_stream(dataset, shuffle):
    source = hf.HFSource(dataset, columns=["label", "tokens"])
    want = as_host(pipeline(MemorySource(columns()), shuffle=shuffle))
    got = as_host(pipeline(source, shuffle=shuffle))
    assert labels(got) == labels(want)
    scanned = pipeline(source, shuffle=shuffle, num_epochs=None).scan(
        lambda b: b["label"], length=15
    )
    assert np.asarray(scanned).reshape(-1).tolist() == labels(got)
    stream = labels(got)
    if shuffle:  # each epoch a permutation of all records, epochs differ
        assert sorted(stream[:N]) == sorted(stream[N:]) == list(range(N))
        assert stream[:N] != stream[N:]
    else:
        assert stream == list(range(N)) * 2


@given(first=st.integers(0, 12), batch_size=st.sampled_from([3, 4]))
def test_resume_from_a_checkpoint(dataset, first, batch_size):
    source = hf.HFSource(dataset, columns=["label"])
    original = pipeline(source, shuffle=True, num_epochs=None)
    original.scan(lambda b: b["label"], length=first) if first else None
    saved = state_dict(original)
    want = labels(as_host(itertools.islice(iter(original), 5)))
    resumed = pipeline(
        hf.HFSource(dataset, columns=["label"]),
        shuffle=True,
        num_epochs=None,
        batch_size=batch_size,
    )
    load_state_dict(saved, resumed)
    got = labels(as_host(itertools.islice(iter(resumed), 20 // batch_size)))
    assert got[: len(got)] == want[: len(got)]


def test_bad_input_is_refused_by_name(dataset, tmp_path):
    text = datasets.Dataset.from_dict({"text": ["a", "b"], "x": [1, 2]})
    with pytest.raises(ValueError, match=r"column 'text' holds strings.*columns="):
        hf.HFSource(text)
    assert len(hf.HFSource(text, columns=["x"])) == 2
    ragged = datasets.Dataset.from_dict({"ids": [[1, 2], [3]]})
    with pytest.raises(ValueError, match=r"'ids' holds lists of different lengths"):
        hf.HFSource(ragged)
    holes = datasets.Dataset.from_dict({"x": [1.0, None]})
    with pytest.raises(ValueError, match=r"'x' has missing values"):
        hf.HFSource(holes)
    with pytest.raises(ValueError, match=r"no columns \['nope'\]"):
        hf.HFSource(dataset, columns=["nope"])
    splits = datasets.DatasetDict({"train": dataset})
    with pytest.raises(ValueError, match=r"choose one with split="):
        hf.HFSource(splits)
    with pytest.raises(ValueError, match=r"no split 'valid'; the splits are"):
        hf.HFSource(splits, split="valid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.HFSource(tmp_path / "missing")
    with pytest.raises(TypeError, match="use HFStreamingSource"):
        hf.HFSource(dataset.to_iterable_dataset())
    with pytest.raises(TypeError, match="expected a datasets.Dataset"):
        hf.HFSource({"x": np.arange(3)})


# -- HFStreamingSource ---------------------------------------------------------------


def test_streaming_length_spec_and_natural_order(dataset):
    stream = hf.HFStreamingSource(dataset.to_iterable_dataset(num_shards=3))
    assert len(stream) == N
    assert stream.element_spec == hf.HFSource(dataset).element_spec
    batches = as_host(pipeline(stream, batch_size=7, num_epochs=1))
    assert [len(b["label"]) for b in batches] == [7, 7, 7, 7, 2]
    for name, want in columns().items():
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), want)


def test_streaming_shuffle_is_a_permutation_per_epoch_fixed_by_the_seed(dataset):
    def stream(seed):
        source = hf.HFStreamingSource(
            dataset.to_iterable_dataset(num_shards=3),
            columns=["label"],
            shuffle_buffer=8,
            chunk_size=5,
        )
        return labels(as_host(pipeline(source, shuffle=True, seed=seed)))

    first = stream(0)
    assert sorted(first[:N]) == sorted(first[N:]) == list(range(N))
    assert first[:N] != first[N:] and first[:N] != list(range(N))
    assert stream(0) == first
    assert stream(1) != first


def test_streaming_resume_and_batch_size_change(dataset):
    def build(batch_size):
        source = hf.HFStreamingSource(
            dataset.to_iterable_dataset(num_shards=2), columns=["label"], chunk_size=4
        )
        return pipeline(source, batch_size=batch_size, shuffle=True, num_epochs=None)

    original = build(4)
    batches = iter(original)
    for _ in itertools.islice(batches, 9):  # mid second epoch
        pass
    saved = state_dict(original)
    want = labels(as_host(itertools.islice(batches, 5)))
    resumed = build(5)
    load_state_dict(saved, resumed)
    assert labels(as_host(itertools.islice(iter(resumed), 4))) == want


def test_streaming_refuses_scan_and_bad_columns(dataset):
    stream = hf.HFStreamingSource(dataset.to_iterable_dataset(), columns=["label"])
    pipe = pipeline(stream)
    with pytest.raises(TypeError, match="Pipeline.scan needs random access.*HFSource"):
        pipe.scan(lambda b: b["label"], length=2)
    with pytest.raises(TypeError, match="iteration-only"):
        stream.get_batch_at(0, 2)
    text = datasets.Dataset.from_dict({"text": ["a", "b"]}).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"column 'text' holds strings"):
        hf.HFStreamingSource(text)
    ragged = datasets.Dataset.from_dict({"ids": [[1, 2], [3]]}).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"'ids' holds ragged lists"):
        hf.HFStreamingSource(ragged)
    with pytest.raises(ValueError, match=r"no columns \['nope'\]"):
        hf.HFStreamingSource(dataset.to_iterable_dataset(), columns=["nope"])
    with pytest.raises(TypeError, match="use HFSource"):
        hf.HFStreamingSource("some/folder")
