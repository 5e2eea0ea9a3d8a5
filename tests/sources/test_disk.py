"""StreamingDiskSource: .npy files on disk, the same stream as in memory."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from flax import nnx
from hypothesis import given, settings, strategies as st

from datarax import Pipeline
from datarax.sources import MemorySource, StreamingDiskSource, _host


def write(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in fields.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def fields(n: int) -> dict[str, np.ndarray]:
    return {
        "label": np.arange(n, dtype=np.int64),
        "x": (np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3) / 7),
    }


def test_folder_of_fields(tmp_path):
    source = StreamingDiskSource(write(tmp_path / "d", **fields(11)))
    assert len(source) == 11
    assert source.element_spec == {
        "label": jax.ShapeDtypeStruct((), jnp.int32),  # as JAX holds int64
        "x": jax.ShapeDtypeStruct((2, 3), jnp.float32),
    }
    batch = source.get_batch_at(9, 4)
    assert np.asarray(batch["label"]).tolist() == [9, 10, 0, 1]
    np.testing.assert_array_equal(batch["x"][1], fields(11)["x"][10])


def test_single_file_is_one_field_named_after_its_stem(tmp_path):
    np.save(tmp_path / "tokens.npy", np.arange(20, dtype=np.int32).reshape(5, 4))
    source = StreamingDiskSource(tmp_path / "tokens.npy")
    assert list(source.element_spec) == ["tokens"]
    assert np.asarray(source.get_batch_at(4, 2)["tokens"]).tolist() == [
        [16, 17, 18, 19],
        [0, 1, 2, 3],
    ]


def test_nothing_is_loaded_into_state(tmp_path):
    source = StreamingDiskSource(write(tmp_path / "d", **fields(50)))
    assert jax.tree.leaves(nnx.state(source)) == []
    assert all(isinstance(a, np.memmap) for a in source.files.arrays.values())


@given(
    length=st.integers(1, 30),
    batch_size=st.integers(1, 11),
    steps=st.integers(1, 8),
    shuffle=st.booleans(),
)
def test_same_stream_as_memory_and_every_record_once_per_epoch(
    tmp_path_factory, length, batch_size, steps, shuffle
):
    data = fields(length)
    folder = write(tmp_path_factory.mktemp("d"), **data)

    def build(source):
        return Pipeline(
            source=source, batch_size=batch_size, shuffle=shuffle, num_epochs=None
        )

    disk = build(StreamingDiskSource(folder)).scan(lambda b: b["label"], length=steps)
    memory = build(MemorySource(data)).scan(lambda b: b["label"], length=steps)
    np.testing.assert_array_equal(disk, memory)
    it = iter(build(StreamingDiskSource(folder)))
    by_iter = np.concatenate([np.asarray(next(it)["label"]) for _ in range(steps)])
    np.testing.assert_array_equal(by_iter, np.ravel(disk))
    stream = np.ravel(disk)
    for e in range(len(stream) // length):
        assert sorted(stream[e * length : (e + 1) * length].tolist()) == list(
            range(length)
        )


def test_scan_reading_many_steps_per_callback_keeps_the_stream(tmp_path, monkeypatch):
    folder = write(tmp_path / "d", **fields(17))
    monkeypatch.setattr(_host, "READ_BYTES", 3 * 2 * 32)  # 3 steps per read
    source = StreamingDiskSource(folder)
    assert source.steps_per_read(2) == 3

    def build(src):
        return Pipeline(source=src, batch_size=2, shuffle=True, num_epochs=None)

    # 10 steps = 3 reads of 3 steps and a rest of 1
    got = build(source).scan(lambda b: (b["label"], b["x"]), length=10)
    ref = build(MemorySource(fields(17))).scan(
        lambda b: (b["label"], b["x"]), length=10
    )
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("legacy", [False, True])
def test_traceable_under_jit_vmap_and_nnx_scan(tmp_path, legacy):
    source = StreamingDiskSource(write(tmp_path / "d", **fields(13)))
    key = jax.random.PRNGKey(2) if legacy else jax.random.key(2)
    eager = np.asarray(source.get_batch_at(11, 5, key)["label"])
    jitted = jax.jit(lambda s, k: source.get_batch_at(s, 5, k)["label"])
    np.testing.assert_array_equal(jitted(jnp.int32(11), key), eager)
    starts = jnp.array([11, 16, 21], jnp.int32)
    vmapped = jax.vmap(lambda s: source.get_batch_at(s, 5, key)["label"])(starts)
    np.testing.assert_array_equal(
        np.ravel(vmapped), np.asarray(source.get_batch_at(11, 15, key)["label"])
    )

    @nnx.scan(in_axes=(None, 0), out_axes=0)
    def scanned(src, start):
        return src.get_batch_at(start, 5, key)["label"]

    np.testing.assert_array_equal(scanned(source, starts), vmapped)
    memory = MemorySource(fields(13))
    np.testing.assert_array_equal(eager, memory.get_batch_at(11, 5, key)["label"])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StreamingDiskSource(tmp_path / "nope")


def test_folder_without_npy_files_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=re.escape(f"the folder {tmp_path} holds no")):
        StreamingDiskSource(tmp_path)


def test_files_of_different_lengths_are_named(tmp_path):
    write(tmp_path, a=np.zeros(5), b=np.zeros(4))
    with pytest.raises(ValueError, match=re.escape("{'a.npy': 5, 'b.npy': 4}")):
        StreamingDiskSource(tmp_path)


def test_zero_d_file_is_named(tmp_path):
    np.save(tmp_path / "s.npy", np.float32(3))
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 's.npy'}: holds a 0-d")
    ):
        StreamingDiskSource(tmp_path)


def test_object_and_pickled_files_are_named(tmp_path):
    np.save(
        tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True
    )
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 'o.npy'}: holds Python")
    ):
        StreamingDiskSource(tmp_path)


def test_string_dtype_file_is_named(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["ab", "cd"]))
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 's.npy'}: has dtype <U2")
    ):
        StreamingDiskSource(tmp_path)


def test_truncated_file_is_named(tmp_path):
    np.save(tmp_path / "t.npy", np.arange(1000, dtype=np.int64))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 't.npy'}: is truncated")
    ):
        StreamingDiskSource(tmp_path)


def test_corrupt_file_is_named(tmp_path):
    (tmp_path / "c.npy").write_bytes(b"this is not a numpy file at all")
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 'c.npy'}: is not a valid .npy")
    ):
        StreamingDiskSource(tmp_path)


@settings(max_examples=examples(8))
@given(
    length=st.integers(1, 25),
    batch_size=st.integers(1, 30),
    start=st.integers(0, 500),
    shuffle=st.booleans(),
)
def test_any_window_equals_the_memory_source(
    tmp_path_factory, length, batch_size, start, shuffle
):
    data = fields(length)
    disk = StreamingDiskSource(write(tmp_path_factory.mktemp("d"), **data))
    memory = MemorySource(data)
    key = jax.random.key(4) if shuffle else None

    def read(source):
        fn = jax.jit(lambda s, k: source.get_batch_at(s, batch_size, k)["label"])
        return np.asarray(fn(jnp.int32(start), key))

    np.testing.assert_array_equal(read(disk), read(memory))
