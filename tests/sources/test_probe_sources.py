"""Probe findings in the sources: no silent wrong data, every bad input named.

Each test states what was served or raised before the fix: a mix child that was
never drawn, a rewritten file served under its old header, ml_dtypes arrays and
typed keys refused or crashing, pathlib's own TypeErrors.
"""

from __future__ import annotations

import os
import re
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from datarax import Pipeline
from datarax.sources import MemorySource, MixDataSourcesNode, StreamingDiskSource

READ_ERRORS = (ValueError, jax.errors.JaxRuntimeError)  # a callback wraps


def child(value: int, n: int = 5) -> MemorySource:
    return MemorySource({"x": np.full(n, value, np.int32)})


def served_children(mix: MixDataSourcesNode, positions: int) -> set[int]:
    return set(np.asarray(mix.get_batch_at(0, positions)["x"]).tolist())


# 1. MixDataSourcesNode: a positive weight whose quota rounds to 0 -------------


@pytest.mark.parametrize(
    ("weights", "block_size", "named", "fix"),
    [
        ([1, 1], 1, "sources[1] (weight 1, share 0.5)", "use block_size=2 or more"),
        (
            [1, 1, 1],
            2,
            "sources[2] (weight 1, share 0.333)",
            "use block_size=3 or more; or give it weight 0 to leave it out.",
        ),
        (
            [1, 1e-6],
            1000,
            "sources[1] (weight 1e-06, share 1e-06)",
            "Fix: raise its weight to at least 0.001; or give it weight 0",
        ),
    ],
)
def test_mix_refuses_a_child_it_would_never_draw(weights, block_size, named, fix):
    # Before: built fine, and the last child never appeared in the stream.
    sources = [child(i) for i in range(len(weights))]
    with pytest.raises(ValueError) as info:
        MixDataSourcesNode(sources, weights, block_size=block_size)
    message = str(info.value)
    assert message.startswith(f"MixDataSourcesNode: {named} would never be drawn")
    assert f"a block holds block_size={block_size} positions" in message
    assert fix in message


@pytest.mark.parametrize(
    ("weights", "block_size"),
    [([1, 1], 2), ([1, 1, 1], 3), ([1, 0.001], 1000), ([1, 1e-5], 50_001)],
)
def test_the_fixes_the_message_gives_draw_every_child(weights, block_size):
    mix = MixDataSourcesNode(
        [child(i) for i in range(len(weights))], weights, block_size=block_size
    )
    assert all(mix.quotas)
    assert served_children(mix, block_size) == set(range(len(weights)))


def test_the_least_block_size_holds_for_every_larger_one():
    # Largest-remainder rounding is not monotone in the block size: the message's
    # block size must draw every child at it and at every size above it.
    weights = [1, 1e-5]
    with pytest.raises(ValueError, match=re.escape("use block_size=50001 or more")):
        MixDataSourcesNode([child(0), child(1)], weights)
    with pytest.raises(ValueError, match="would never be drawn"):
        MixDataSourcesNode([child(0), child(1)], weights, block_size=50_000)
    for block_size in (50_001, 50_002, 60_000, 65_535):
        assert all(
            MixDataSourcesNode(
                [child(0), child(1)], weights, block_size=block_size
            ).quotas
        )


def test_a_zero_weight_still_leaves_a_child_out():
    mix = MixDataSourcesNode([child(0), child(1)], [1, 0], block_size=1)
    assert mix.quotas == (1, 0)
    assert served_children(mix, 10) == {0}


def test_valid_mixes_serve_the_stream_they_served_before():
    # Pinned before the quota check was added: the check must not move a valid
    # mix's stream (checkpoints depend on it).
    sources = [
        MemorySource({"x": np.arange(6, dtype=np.int32)}),
        MemorySource({"x": 100 + np.arange(4, dtype=np.int32)}),
    ]
    mix = MixDataSourcesNode(sources, [3, 1], block_size=4)
    natural = np.asarray(mix.get_batch_at(0, 12)["x"]).tolist()
    assert natural == [0, 1, 100, 2, 3, 4, 101, 5, 0, 1, 102, 2]
    keyed = np.asarray(mix.get_batch_at(3, 8, jax.random.key(7))["x"]).tolist()
    assert keyed == [5, 103, 3, 2, 0, 100, 5, 1]


# 2. StreamingDiskSource: any change to a file after open ----------------------


def opened(path, values):
    np.save(path, values)
    source = StreamingDiskSource(path)
    assert np.asarray(source.get_batch_at(0, 3)["x"]).tolist() == values[:3].tolist()
    time.sleep(0.02)  # past the file system's timestamp tick
    return source


def refused(source, path, what):
    message = (
        f"StreamingDiskSource: {path} changed after the source opened it: {what}, "
        "so its rows may no longer be the records the source opened."
    )
    with pytest.raises(READ_ERRORS, match=re.escape(message)):
        jax.block_until_ready(source.get_batch_at(0, 3))


def test_bytes_rewritten_in_place_are_refused(tmp_path):
    # Before: the new values were served as the records the source opened.
    path = tmp_path / "x.npy"
    source = opened(path, np.arange(10, dtype=np.int32))
    with open(path, "r+b") as f:
        f.seek(-40, os.SEEK_END)
        f.write(np.full(10, 7, np.int32).tobytes())
    assert os.path.getsize(path) == 168  # same size: a size check misses it
    refused(source, path, "it was written to (its modification time changed)")


def test_a_longer_array_saved_over_the_file_is_refused(tmp_path):
    # Before: np.save of 20 values served new values while len stayed 10.
    path = tmp_path / "x.npy"
    source = opened(path, np.arange(10, dtype=np.int32))
    np.save(path, 50 + np.arange(20, dtype=np.int32))
    refused(source, path, "its size went from 168 to 208 bytes")


def test_truncated_and_grown_back_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    source = opened(path, np.arange(10, dtype=np.int32))
    with open(path, "r+b") as f:
        f.truncate(128)
        f.seek(0, os.SEEK_END)
        f.write(np.full(10, 9, np.int32).tobytes())
    refused(source, path, "it was written to (its modification time changed)")


def test_a_replaced_file_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    source = opened(path, np.arange(10, dtype=np.int32))
    np.save(tmp_path / "new.npy", np.arange(10, dtype=np.int32))
    os.replace(tmp_path / "new.npy", path)
    refused(source, path, "it was replaced by another file")


def test_an_unchanged_file_is_read_in_every_mode(tmp_path):
    path = tmp_path / "x.npy"
    source = opened(path, np.arange(10, dtype=np.int32))
    pipe = Pipeline(source=source, batch_size=4)
    assert [b["x"].tolist() for b in pipe] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    scanned = Pipeline(source=source, batch_size=5).scan(lambda b: b["x"], length=2)
    assert np.asarray(scanned).ravel().tolist() == list(range(10))


@pytest.mark.parametrize(
    ("path", "shown"),
    [(b"/data/x.npy", "bytes b'/data/x.npy'"), (3, "int 3"), (None, "NoneType None")],
)
def test_path_of_the_wrong_type_is_named(path, shown):
    message = (
        "StreamingDiskSource: path must be a str or os.PathLike (a folder of .npy "
        f"files, or one .npy file), got {shown}."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        StreamingDiskSource(path)


def test_a_folder_named_like_a_npy_file_is_named(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    (tmp_path / "weird.npy").mkdir()
    message = f"StreamingDiskSource: {tmp_path / 'weird.npy'} is a folder, not a .npy"
    with pytest.raises(ValueError, match=re.escape(message)):
        StreamingDiskSource(tmp_path)


def test_a_broken_link_is_named(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "a.npy", np.arange(3))
    os.symlink(tmp_path / "gone.npy", folder / "b.npy")
    message = (
        f"StreamingDiskSource: {folder / 'b.npy'} is a broken symbolic link: its "
        f"target {tmp_path / 'gone.npy'} does not exist."
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        StreamingDiskSource(folder)
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        StreamingDiskSource(folder / "b.npy")


def test_a_link_to_a_file_is_read(tmp_path):
    np.save(tmp_path / "real.npy", np.arange(4, dtype=np.int32))
    os.symlink(tmp_path / "real.npy", tmp_path / "x.npy")
    source = StreamingDiskSource(tmp_path / "x.npy")
    assert np.asarray(source.get_batch_at(2, 3)["x"]).tolist() == [2, 3, 0]


# 3. MemorySource: ml_dtypes accepted, void dtypes and typed keys refused ------


@pytest.mark.parametrize(
    "values",
    [
        jnp.arange(3, dtype=jnp.bfloat16),
        np.arange(3).astype(ml_dtypes.bfloat16),
        np.arange(3).astype(ml_dtypes.float8_e4m3fn),
        np.arange(3).astype(ml_dtypes.int4),
    ],
    ids=["jax-bfloat16", "numpy-bfloat16", "float8_e4m3fn", "int4"],
)
def test_ml_dtypes_fields_are_served(values):
    # Before: "have dtypes JAX cannot hold" (their NumPy kind is "V").
    source = MemorySource({"x": values})
    assert source.element_spec["x"].dtype == values.dtype
    batch = source.get_batch_at(1, 3)["x"]
    assert batch.dtype == values.dtype
    assert np.asarray(batch).astype(np.float32).tolist() == [1.0, 2.0, 0.0]
    batches = list(Pipeline(source=source, batch_size=2))
    assert [np.asarray(b["x"]).astype(np.float32).tolist() for b in batches] == [
        [0.0, 1.0],
        [2.0],
    ]


@pytest.mark.parametrize(
    "values",
    [np.zeros(3, "V4"), np.zeros(3, [("a", "i4"), ("b", "f4")])],
    ids=["void", "structured"],
)
def test_void_and_structured_fields_are_refused(values):
    with pytest.raises(ValueError, match="have dtypes JAX cannot hold"):
        MemorySource({"x": values})


def test_typed_key_fields_are_refused_with_the_fix():
    # Before: AttributeError: 'KeyTy' object has no attribute 'kind'.
    keys = jax.random.split(jax.random.key(0), 3)
    message = (
        "MemorySource: fields {'k': 'key<fry>'} hold typed PRNG keys, which a "
        "source cannot serve as records; store jax.random.key_data(keys)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        MemorySource({"k": keys})
    source = MemorySource({"k": jax.random.key_data(keys)})
    served = source.get_batch_at(0, 3)["k"]
    np.testing.assert_array_equal(served, jax.random.key_data(keys))


def test_a_mix_takes_a_list_of_sources():
    one = MemorySource({"x": np.arange(4)})
    with pytest.raises(TypeError, match="MixDataSourcesNode takes a list of sources"):
        MixDataSourcesNode(one, [1.0])


def test_a_masked_array_is_refused_not_unmasked():
    masked = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    with pytest.raises(ValueError, match="are masked arrays"):
        MemorySource({"x": masked})
    np.testing.assert_array_equal(
        MemorySource({"x": masked.filled(0)}).get_batch_at(0, 3)["x"], [1, 0, 3]
    )
