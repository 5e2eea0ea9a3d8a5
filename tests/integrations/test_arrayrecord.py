"""ArrayRecordSource and write_array_record: real ArrayRecord files in tmp_path."""

from __future__ import annotations

import copy
import importlib
import io
import os
import pickle
import re
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

pytest.importorskip("array_record")

from array_record.python.array_record_module import (  # noqa: E402
    ArrayRecordReader,
    ArrayRecordWriter,
)

from datarax import Pipeline  # noqa: E402
from datarax.checkpoint import load_state_dict, state_dict  # noqa: E402
from datarax.integrations.arrayrecord import (  # noqa: E402
    ArrayRecordSource,
    write_array_record,
)
from datarax.sources import MemorySource  # noqa: E402

pytestmark = pytest.mark.arrayrecord


def fields(n: int, offset: int = 0) -> dict[str, np.ndarray]:
    """Columns of ``n`` records: an int64 label, a 2x3 float32 array, a 0-d bool."""
    label = np.arange(offset, offset + n, dtype=np.int64)
    return {
        "label": label,
        "x": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3) / 7 + offset,
        "flag": label % 3 == 0,
    }


def rows(columns: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(columns.values())))
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def write(path, columns) -> str:
    write_array_record(path, rows(columns))
    return str(path)


def write_raw(path, payloads, options="group_size:1") -> str:
    """Records datarax did not write, through array_record's own writer."""
    writer = ArrayRecordWriter(str(path), options)
    for payload in payloads:
        writer.write(payload)
    writer.close()
    return str(path)


def build(source, batch_size=4, shuffle=True, seed=0):
    return Pipeline(
        source=source,
        batch_size=batch_size,
        shuffle=shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


# -- reading datarax records ---------------------------------------------------


def test_length_element_spec_and_natural_order(tmp_path):
    data = fields(11)
    source = ArrayRecordSource(write(tmp_path / "d.array_record", data))
    assert len(source) == 11
    assert source.element_spec == {
        "label": jax.ShapeDtypeStruct((), jnp.int32),  # as JAX holds int64
        "x": jax.ShapeDtypeStruct((2, 3), jnp.float32),
        "flag": jax.ShapeDtypeStruct((), jnp.bool_),
    }
    batch = source.get_batch_at(9, 4)
    assert np.asarray(batch["label"]).tolist() == [9, 10, 0, 1]
    np.testing.assert_array_equal(batch["x"][1], data["x"][10])
    assert np.asarray(batch["flag"]).tolist() == [True, False, True, False]


def test_reader_is_not_nnx_state(tmp_path):
    source = ArrayRecordSource(write(tmp_path / "d.array_record", fields(30)))
    assert jax.tree.leaves(nnx.state(source)) == []


def test_deepcopy_and_pickle_open_their_own_readers(tmp_path):
    source = ArrayRecordSource(write(tmp_path / "d.array_record", fields(6)))
    expected = np.asarray(source.get_batch_at(4, 3)["label"])  # readers now open
    for copied in (copy.deepcopy(source), pickle.loads(pickle.dumps(source))):
        np.testing.assert_array_equal(copied.get_batch_at(4, 3)["label"], expected)


def test_shuffled_epochs_are_different_permutations(tmp_path):
    n = 20
    source = ArrayRecordSource(write(tmp_path / "d.array_record", fields(n)))
    key = jax.random.key(3)
    stream = np.asarray(source.get_batch_at(0, 3 * n, key)["label"])
    epochs = stream.reshape(3, n)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(n))
    assert len({tuple(e) for e in epochs.tolist()}) == 3
    assert epochs[0].tolist() != list(range(n))


@pytest.mark.parametrize("legacy", [False, True])
def test_traceable_under_jit_vmap_and_nnx_scan(tmp_path, legacy):
    data = fields(13)
    source = ArrayRecordSource(write(tmp_path / "d.array_record", data))
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
    memory = MemorySource(data)
    np.testing.assert_array_equal(eager, memory.get_batch_at(11, 5, key)["label"])


@given(
    length=st.integers(1, 25),
    batch_size=st.integers(1, 9),
    steps=st.integers(1, 6),
    shuffle=st.booleans(),
)
@settings(max_examples=6)
def test_scan_iteration_and_memory_source_serve_one_stream(
    tmp_path_factory, length, batch_size, steps, shuffle
):
    data = fields(length)
    path = write(tmp_path_factory.mktemp("d") / "d.array_record", data)

    def step(batch):
        return batch["label"], batch["x"]

    def pipe(source):
        return build(source, batch_size=batch_size, shuffle=shuffle)

    scanned = pipe(ArrayRecordSource(path)).scan(step, length=steps)
    memory = pipe(MemorySource(data)).scan(step, length=steps)
    np.testing.assert_array_equal(scanned[0], memory[0])
    np.testing.assert_array_equal(scanned[1], memory[1])
    it = iter(pipe(ArrayRecordSource(path)))
    by_iter = [next(it) for _ in range(steps)]
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(b["label"]) for b in by_iter]), np.ravel(scanned[0])
    )
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(b["x"]) for b in by_iter]),
        np.asarray(scanned[1]).reshape(-1, 2, 3),
    )


def test_finite_iteration_serves_every_record_once_per_epoch(tmp_path):
    source = ArrayRecordSource(write(tmp_path / "d.array_record", fields(10)))
    pipe = Pipeline(source=source, batch_size=4, shuffle=True, num_epochs=2)
    labels = np.concatenate([np.asarray(b["label"]) for b in pipe])
    assert [len(labels[:10]), len(labels[10:])] == [10, 10]
    assert sorted(labels[:10]) == sorted(labels[10:]) == list(range(10))


def test_checkpoint_resumes_mid_epoch_in_iteration_and_scan(tmp_path):
    path = write(tmp_path / "d.array_record", fields(23))
    original = build(ArrayRecordSource(path), batch_size=4, seed=7)
    it = iter(original)
    for _ in range(3):  # 12 of 23 records: mid-epoch
        next(it)
    saved = state_dict(original)
    expected = [np.asarray(next(it)["label"]) for _ in range(5)]  # into epoch 1

    restored = build(ArrayRecordSource(path), batch_size=4, seed=7)
    load_state_dict(saved, restored)
    it = iter(restored)
    got = [np.asarray(next(it)["label"]) for _ in range(5)]
    np.testing.assert_array_equal(np.stack(got), np.stack(expected))

    scanned = build(ArrayRecordSource(path), batch_size=4, seed=7)
    load_state_dict(saved, scanned)
    np.testing.assert_array_equal(
        scanned.scan(lambda b: b["label"], length=5), np.stack(expected)
    )


def test_multiple_files_by_glob_and_by_list(tmp_path):
    parts = [fields(4, 0), fields(7, 100), fields(5, 200)]
    paths = [
        write(tmp_path / f"part-{i:05d}.array_record", p) for i, p in enumerate(parts)
    ]
    by_glob = ArrayRecordSource(str(tmp_path / "part-*.array_record"))
    assert by_glob.paths == tuple(paths)
    assert len(by_glob) == 16
    labels = np.asarray(by_glob.get_batch_at(0, 16)["label"])
    assert labels.tolist() == [*range(4), *range(100, 107), *range(200, 205)]

    # A list keeps its own order; the same stream as memory, shuffled too.
    order = [2, 0, 1]
    by_list = ArrayRecordSource([paths[i] for i in order])
    columns = {k: np.concatenate([parts[i][k] for i in order]) for k in parts[0] if k}
    key = jax.random.key(1)
    for k in (None, key):
        got = by_list.get_batch_at(5, 40, k)
        ref = MemorySource(columns).get_batch_at(5, 40, k)
        for name in columns:
            np.testing.assert_array_equal(got[name], ref[name])


@settings(max_examples=10)
@given(
    dtype=st.sampled_from(
        [
            np.int8,
            np.uint8,
            np.int16,
            np.uint16,
            np.int32,
            np.uint32,
            np.int64,
            np.float16,
            np.float32,
            np.float64,
            np.complex64,
            np.bool_,
            ml_dtypes.bfloat16,
        ]
    ),
    shape=st.lists(st.integers(1, 3), max_size=3).map(tuple),
    n=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_write_read_round_trip_keeps_dtypes_and_shapes(
    tmp_path_factory, dtype, shape, n, seed
):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((n, *shape)) * 50).astype(dtype)
    scalar = rng.integers(-5, 5, n).astype(np.int16)  # a 0-d field beside it
    path = tmp_path_factory.mktemp("rt") / "r.array_record"
    write_array_record(
        path, ({"v": v, "s": s} for v, s in zip(values, scalar, strict=True))
    )
    source = ArrayRecordSource(path)
    # On the host: exactly what was written, dtype included.
    host = source.host_read(np.arange(n))
    assert host["v"].dtype == np.dtype(dtype) and host["v"].shape == (n, *shape)
    np.testing.assert_array_equal(host["v"], values)
    np.testing.assert_array_equal(host["s"], scalar)
    # In JAX: the dtype JAX holds (64-bit types narrow without x64).
    spec = source.element_spec["v"]
    assert spec == jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype))
    batch = source.get_batch_at(0, n)
    assert batch["v"].dtype == spec.dtype and batch["v"].shape == (n, *shape)
    np.testing.assert_array_equal(batch["v"], jnp.asarray(values))
    assert batch["s"].shape == (n,)


# -- records datarax did not write, read with decode= ---------------------------


def test_raw_float32_records_with_decode(tmp_path):
    data = np.arange(40, dtype=np.float32).reshape(10, 4) / 3
    path = write_raw(tmp_path / "raw.array_record", [r.tobytes() for r in data])
    source = ArrayRecordSource(path, decode=lambda b: {"x": np.frombuffer(b, "<f4")})
    assert len(source) == 10
    assert source.element_spec == {"x": jax.ShapeDtypeStruct((4,), jnp.float32)}
    np.testing.assert_array_equal(source.get_batch_at(8, 4)["x"], data[[8, 9, 0, 1]])
    pipe = build(source, batch_size=3)
    ref = build(MemorySource({"x": data}), batch_size=3)
    np.testing.assert_array_equal(
        pipe.scan(lambda b: b["x"], length=7), ref.scan(lambda b: b["x"], length=7)
    )


def test_np_save_records_with_decode_and_default_writer_options(tmp_path):
    images = np.arange(6 * 5 * 5 * 3, dtype=np.uint8).reshape(6, 5, 5, 3)
    labels = np.arange(6, dtype=np.int32)

    def encode(image, label):
        buffer = io.BytesIO()
        np.savez(buffer, image=image, label=label)
        return buffer.getvalue()

    def decode(record):
        with np.load(io.BytesIO(record)) as npz:
            return {"image": npz["image"], "label": npz["label"]}

    # ArrayRecord's default options (many records per chunk) read fine, only slower.
    path = write_raw(
        tmp_path / "npz.array_record",
        [encode(*pair) for pair in zip(images, labels, strict=True)],
        options="",
    )
    source = ArrayRecordSource(path, decode=decode)
    assert source.element_spec == {
        "image": jax.ShapeDtypeStruct((5, 5, 3), jnp.uint8),
        "label": jax.ShapeDtypeStruct((), jnp.int32),
    }
    key = jax.random.key(0)
    got = source.get_batch_at(3, 9, key)
    ref = MemorySource({"image": images, "label": labels}).get_batch_at(3, 9, key)
    np.testing.assert_array_equal(got["image"], ref["image"])
    np.testing.assert_array_equal(got["label"], ref["label"])


def test_decode_giving_another_byte_order_or_mapping_is_accepted(tmp_path):
    path = write_raw(
        tmp_path / "be.array_record",
        [np.full(3, i, ">i4").tobytes() for i in range(5)],
    )

    def decode(record):
        values = np.frombuffer(record, ">i4")
        if values[0] == 2:  # unusual, but the same fields, dtype and shape
            return types.MappingProxyType({"x": values.astype("<i4")})
        return {"x": values}

    source = ArrayRecordSource(path, decode=decode)
    assert source.element_spec["x"].dtype == jnp.int32
    assert np.asarray(source.get_batch_at(0, 5)["x"])[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_writer_takes_any_byte_order_and_stores_little_endian(tmp_path):
    path = tmp_path / "w.array_record"
    values = [np.arange(3, dtype=">i4"), np.arange(3, 6, dtype="<i4")]
    write_array_record(path, [{"v": v} for v in values])
    host = ArrayRecordSource(path).host_read(np.arange(2))["v"]
    assert host.dtype == np.dtype("<i4")
    assert host.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_decode_errors_name_the_record(tmp_path):
    path = write_raw(tmp_path / "raw.array_record", [b"ok"] * 3 + [b"bad"])

    def decode(record):
        if record == b"bad":
            raise KeyError("unknown tag")
        return {"x": np.int32(1)}

    source = ArrayRecordSource(path, decode=decode)
    with pytest.raises(ValueError, match="decode raised ZeroDivisionError"):
        ArrayRecordSource(path, decode=lambda b: 1 / 0)
    with pytest.raises(
        jax.errors.JaxRuntimeError,
        match=re.escape(
            f"decode raised KeyError('unknown tag') on record 3 (record 3 of {path})"
        ),
    ):
        source.get_batch_at(0, 4)


def test_decode_result_differing_from_record_0_names_the_record(tmp_path):
    payloads = [np.full(2, i, "<f4").tobytes() for i in range(8)]
    payloads[6] = np.zeros(3, "<f4").tobytes()
    path = write_raw(tmp_path / "raw.array_record", payloads)
    source = ArrayRecordSource(path, decode=lambda b: {"x": np.frombuffer(b, "<f4")})
    np.testing.assert_array_equal(source.get_batch_at(0, 6)["x"][5], [5, 5])
    message = (
        f"decode gave record 6 (record 6 of {path}) that field 'x' is float32[3] "
        "where record 0 has float32[2]"
    )
    with pytest.raises(jax.errors.JaxRuntimeError, match=re.escape(message)):
        source.get_batch_at(4, 4)


def test_decode_results_that_are_not_numeric_dicts_are_refused(tmp_path):
    path = write_raw(tmp_path / "raw.array_record", [b"ab", b"cd"])
    where = f"the decoded record 0 (record 0 of {path})"
    with pytest.raises(TypeError, match=re.escape(f"{where} is a bytes, not a dict")):
        ArrayRecordSource(path, decode=lambda b: b)
    with pytest.raises(
        ValueError, match=re.escape(f"{where} field 'text' has dtype <U2")
    ):
        ArrayRecordSource(path, decode=lambda b: {"text": b.decode()})
    with pytest.raises(TypeError, match="decode must be a function"):
        ArrayRecordSource(path, decode="utf-8")


# -- bad input ------------------------------------------------------------------


def test_records_datarax_did_not_write_need_decode(tmp_path):
    path = write_raw(tmp_path / "raw.array_record", [b"\x00\x01\x02\x03"] * 3)
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: record 0 was not written by write_array_record"),
    ) as info:
        ArrayRecordSource(path)
    assert "pass decode=" in info.exconly()


def test_foreign_record_among_datarax_records_names_it(tmp_path):
    good = write(tmp_path / "good.array_record", fields(5))
    reader = ArrayRecordReader(good)
    payloads = reader.read_all()
    reader.close()
    payloads[3] = b"not a datarax record"
    path = write_raw(tmp_path / "mixed.array_record", payloads)
    source = ArrayRecordSource(path)
    source.get_batch_at(0, 3)
    with pytest.raises(
        jax.errors.JaxRuntimeError,
        match=re.escape(f"record 3 (record 3 of {path}) was not written by"),
    ):
        source.get_batch_at(2, 2)


def test_files_with_different_fields_are_named(tmp_path):
    a = write(tmp_path / "a.array_record", fields(3))
    b = write(tmp_path / "b.array_record", {"label": np.arange(3, dtype=np.int32)})
    with pytest.raises(ValueError, match=re.escape(f"{b} holds records")) as info:
        ArrayRecordSource([a, b])
    assert a in info.exconly()


def test_missing_paths_are_named(tmp_path):
    missing = tmp_path / "nope.array_record"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} does not")):
        ArrayRecordSource(missing)
    good = write(tmp_path / "a.array_record", fields(2))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} does not")):
        ArrayRecordSource([good, missing])
    pattern = str(tmp_path / "*.zip")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"no files match {pattern!r}")
    ):
        ArrayRecordSource(pattern)
    with pytest.raises(ValueError, match="paths is empty"):
        ArrayRecordSource([])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is a folder")):
        ArrayRecordSource(tmp_path)


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_corrupt_files_are_named(tmp_path, damage):
    path = tmp_path / "bad.array_record"
    if damage == "text":
        path.write_bytes(b"this is not an ArrayRecord file\n" * 100)
    else:
        good = write(tmp_path / "good.array_record", fields(50))
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is not a readable ArrayRecord file")
    ):
        ArrayRecordSource(path)


def test_file_without_records_is_refused(tmp_path):
    path = write_raw(tmp_path / "empty.array_record", [])
    with pytest.raises(ValueError, match="hold no records"):
        ArrayRecordSource(path)
    # An empty shard among others is fine.
    good = write(tmp_path / "good.array_record", fields(3))
    assert len(ArrayRecordSource([path, good])) == 3


def test_writer_refuses_records_unlike_the_first_and_names_them(tmp_path):
    path = tmp_path / "w.array_record"
    base = {"a": np.zeros(3, np.float32), "b": np.int32(1)}
    cases = {
        "fields": ({"a": np.zeros(3, np.float32)}, "record 2 has fields ['a']"),
        "shape": (
            {**base, "a": np.zeros(4, np.float32)},
            "record 2 field 'a' is float32[4] where record 0 has float32[3]",
        ),
        "dtype": (
            {**base, "b": np.int64(1)},
            "record 2 field 'b' is int64[] where record 0 has int32[]",
        ),
    }
    for bad, message in cases.values():
        with pytest.raises(ValueError, match=re.escape(message)):
            write_array_record(path, [base, base, bad, base])
        # Written to a temporary name first: nothing is left behind.
        assert os.listdir(tmp_path) == []


def test_writer_refuses_non_numeric_fields_empty_input_and_bad_records(tmp_path):
    path = tmp_path / "w.array_record"
    with pytest.raises(ValueError, match=re.escape("field 'text' has dtype <U5")):
        write_array_record(path, [{"text": "hello"}])
    with pytest.raises(ValueError, match=re.escape("field 'o' has dtype object")):
        write_array_record(path, [{"o": np.array([{}, None], dtype=object)}])
    with pytest.raises(ValueError, match="records is empty"):
        write_array_record(path, iter([]))
    with pytest.raises(TypeError, match=re.escape("record 1 is a list")):
        write_array_record(path, [{"a": 1}, [1, 2]])
    with pytest.raises(ValueError, match=re.escape("record 0 has no fields")):
        write_array_record(path, [{}])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_array_record(tmp_path / "no" / "w.array_record", [{"a": 1}])
    assert os.listdir(tmp_path) == []


def test_import_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.delitem(sys.modules, "datarax.integrations.arrayrecord")
    monkeypatch.setitem(sys.modules, "array_record", None)  # import fails
    with pytest.raises(
        ImportError,
        match=re.escape('pip install "datarax-integrations[arrayrecord]"'),
    ):
        importlib.import_module("datarax.integrations.arrayrecord")


def test_write_refuses_a_folder_and_records_that_are_not_an_iterable(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; write to a file"):
        write_array_record(tmp_path, [{"x": np.zeros(2)}])
    with pytest.raises(TypeError, match="records must be an iterable of dicts"):
        write_array_record(tmp_path / "a.array_record", None)
    with pytest.raises(TypeError, match="records must be an iterable of dicts"):
        write_array_record(tmp_path / "a.array_record", {"x": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []
