"""Sources serve the values they were given, or refuse them by name.

64-bit values JAX would narrow to 32 bits (x64 off), big-endian arrays and
``.npy`` files that shrink under an open source: each is either served exactly or
refused with an error naming the source, the field or file, and the fix.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax import Pipeline
from datarax.sources import MemorySource, StreamingDiskSource

X64 = jax.config.jax_enable_x64
needs_x64_off = pytest.mark.skipif(X64, reason="narrowing happens only without x64")
READ_ERRORS = (ValueError, jax.errors.JaxRuntimeError)  # a callback wraps
FIX = 'jax.config.update("jax_enable_x64", True)'

# (values, offending value as printed, its record, 32-bit dtype)
TOO_WIDE = {
    "int64_above": (np.array([1, 2, 2**40, 3]), "1099511627776", 2, "int32"),
    "int64_below": (np.array([0, -(2**31) - 1]), "-2147483649", 1, "int32"),
    "uint64": (np.array([5, 2**32], np.uint64), "4294967296", 1, "uint32"),
    "float64_big": (np.array([0.5, 1e300, 2.0]), "1e+300", 1, "float32"),
    "float64_small": (np.array([-3.5e38, 0.0]), "-3.5e+38", 0, "float32"),
    "complex128": (np.array([1j, 1 + 1e300j]), "(1+1e+300j)", 1, "complex64"),
    "record_of_2d": (
        np.arange(24, dtype=np.int64).reshape(4, 3, 2) * (2**30),
        "2147483648",
        0,
        "int32",
    ),
    "big_endian_int64": (np.array([7, -(2**40)], ">i8"), "-1099511627776", 1, "int32"),
}

# Values that survive JAX's narrowing: nothing is lost, so they are served.
FITS = {
    "int64_arange": np.arange(10, dtype=np.int64),
    "int64_bounds": np.array([-(2**31), 2**31 - 1, 0], np.int64),
    "uint64_bound": np.array([0, 2**32 - 1], np.uint64),
    "float64_special": np.array([np.inf, -np.inf, np.nan, 3.4e38, 1e-300]),
    "big_endian_int32": np.arange(5, dtype=">i4"),
    "big_endian_float64": np.linspace(-2, 2, 6).astype(">f8"),
}


def served(values: np.ndarray) -> np.ndarray:
    """What a source must serve for ``values``: JAX's dtype, values cast by NumPy."""
    dtype = jax.dtypes.canonicalize_dtype(values.dtype.newbyteorder("="))
    return values.astype(dtype)


def write(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in fields.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def expect_lost_value(owner, field, value, record, dtype):
    return re.compile(
        re.escape(f"{owner}: field {field!r} holds {value} (record {record}), which ")
        + re.escape(f"{dtype} cannot hold")
        + ".*"
        + re.escape(FIX),
        re.DOTALL,
    )


# 1. 64-bit values that do not fit 32 bits ----------------------------------


@needs_x64_off
@pytest.mark.parametrize("case", sorted(TOO_WIDE))
def test_memory_source_refuses_values_32_bits_cannot_hold(case):
    values, shown, record, dtype = TOO_WIDE[case]
    fine = np.zeros(len(values), np.float32)
    with pytest.raises(
        ValueError,
        match=expect_lost_value("MemorySource", "wide", shown, record, dtype),
    ):
        MemorySource({"ok": fine, "wide": values})


@pytest.mark.parametrize("case", sorted(FITS))
def test_memory_source_serves_64_bit_values_that_fit_exactly(case):
    values = FITS[case]
    source = MemorySource({"v": values})
    expected = served(values)
    assert source.element_spec["v"].dtype == expected.dtype
    assert source.element_spec["v"].dtype.isnative
    n = len(values)
    np.testing.assert_array_equal(source.get_batch_at(0, n)["v"], expected)
    key = jax.random.key(0)
    shuffled = np.asarray(source.get_batch_at(0, n, key)["v"])
    np.testing.assert_array_equal(np.sort(shuffled), np.sort(expected))


def test_jax_arrays_are_taken_as_they_are():
    source = MemorySource({"v": jnp.arange(4)})
    assert np.asarray(source.get_batch_at(1, 2)["v"]).tolist() == [1, 2]


@needs_x64_off
@pytest.mark.parametrize("case", sorted(TOO_WIDE))
def test_disk_source_refuses_values_32_bits_cannot_hold_at_the_read(tmp_path, case):
    values, shown, record, dtype = TOO_WIDE[case]
    source = StreamingDiskSource(write(tmp_path / "d", wide=values))
    # Records before the bad one are served, exactly.
    if record:
        batch = source.get_batch_at(0, record)["wide"]
        np.testing.assert_array_equal(batch, served(values[:record]))
    with pytest.raises(
        READ_ERRORS,
        match=expect_lost_value("StreamingDiskSource", "wide", shown, record, dtype),
    ):
        jax.block_until_ready(source.get_batch_at(0, len(values)))


@needs_x64_off
def test_disk_source_names_the_record_of_a_shuffled_read(tmp_path):
    values = np.arange(20, dtype=np.int64)
    values[13] = 2**33
    source = StreamingDiskSource(write(tmp_path / "d", x=values))
    match = expect_lost_value("StreamingDiskSource", "x", 2**33, 13, "int32")
    with pytest.raises(READ_ERRORS, match=match):
        jax.block_until_ready(source.get_batch_at(0, 20, jax.random.key(1)))


@needs_x64_off
@pytest.mark.parametrize("mode", ["iterate", "scan", "step"])
def test_disk_pipeline_stops_with_the_named_error_in_every_mode(tmp_path, mode):
    values = np.arange(16, dtype=np.int64)
    values[9] = 2**40
    source = StreamingDiskSource(write(tmp_path / "d", x=values))
    pipe = Pipeline(source=source, batch_size=4, num_epochs=1)
    match = expect_lost_value("StreamingDiskSource", "x", 2**40, 9, "int32")
    with pytest.raises(READ_ERRORS, match=match):
        if mode == "iterate":
            jax.block_until_ready(list(pipe))
        elif mode == "scan":
            jax.block_until_ready(pipe.scan(lambda b: b["x"].sum(), length=4))
        else:
            jax.block_until_ready([pipe.step() for _ in range(4)])


@pytest.mark.parametrize("case", sorted(FITS))
def test_disk_source_serves_64_bit_values_that_fit_exactly(tmp_path, case):
    values = FITS[case]
    source = StreamingDiskSource(write(tmp_path / "d", v=values))
    expected = served(values)
    assert source.element_spec["v"] == jax.ShapeDtypeStruct((), expected.dtype)
    np.testing.assert_array_equal(source.get_batch_at(0, len(values))["v"], expected)


# 2. Big-endian arrays -------------------------------------------------------


@pytest.mark.parametrize("dtype", [">i4", ">f4", ">u2", ">f8", ">c8"])
def test_big_endian_npy_serves_its_values_in_every_mode(tmp_path, dtype):
    values = (np.arange(12) * 1000 + (7 if dtype == ">u2" else -7000)).astype(dtype)
    expected = served(values)
    source = StreamingDiskSource(write(tmp_path / "d", x=values))
    assert source.element_spec["x"] == jax.ShapeDtypeStruct((), expected.dtype)
    assert source.element_spec["x"].dtype.isnative
    np.testing.assert_array_equal(
        source.get_batch_at(10, 4)["x"], expected[[10, 11, 0, 1]]
    )

    def pipe():
        return Pipeline(source=source, batch_size=3, num_epochs=1)

    iterated = np.concatenate([np.asarray(b["x"]) for b in pipe()])
    scanned = pipe().scan(lambda b: b["x"], length=4)
    stepper = pipe()
    stepped = np.concatenate([np.asarray(stepper.step()["x"]) for _ in range(4)])
    for stream in (iterated, np.asarray(scanned).reshape(-1), stepped):
        np.testing.assert_array_equal(stream, expected)


def test_big_endian_memory_source_serves_its_values(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(3, 2)
    source = MemorySource({"x": values})
    assert source.element_spec["x"] == jax.ShapeDtypeStruct((2,), jnp.int32)
    np.testing.assert_array_equal(source.get_batch_at(0, 3)["x"], values)
    scanned = Pipeline(source=source, batch_size=1).scan(lambda b: b["x"], length=3)
    np.testing.assert_array_equal(np.asarray(scanned).reshape(3, 2), values)


# 3. Files that change after the source opened them --------------------------

# Runs in a child: a SIGBUS (the failure this guards against) kills the child,
# not pytest. The child prints what each read raised.
TRUNCATE = """
import os, sys, numpy as np
from datarax import Pipeline
from datarax.sources import StreamingDiskSource
path = sys.argv[1]
np.save(path, np.arange(100_000, dtype=np.int32))
source = StreamingDiskSource(path)
assert int(source.get_batch_at(99_998, 2)["x"][0]) == 99_998  # pages mapped
with open(path, "r+b") as f:
    f.truncate({size})
reads = {{
    "get_batch_at": lambda: source.get_batch_at(99_990, 8),
    "iterate": lambda: next(iter(Pipeline(source=source, batch_size=8))),
    "scan": lambda: Pipeline(source=source, batch_size=8).scan(
        lambda b: b["x"].sum(), length=2),
}}
for name, read in reads.items():
    try:
        import jax
        jax.block_until_ready(read())
        print(name, "SERVED")
    except Exception as err:
        print(name, type(err).__name__, str(err).replace(chr(10), " "))
"""


def run_child(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
    )


@pytest.mark.parametrize("size", [0, 4096])
def test_file_truncated_after_open_is_named_not_sigbus(tmp_path, size):
    path = tmp_path / "x.npy"
    child = run_child(TRUNCATE.format(size=size), str(path))
    assert child.returncode != -signal.SIGBUS, "the read crashed the process"
    assert child.returncode == 0, child.stderr[-3000:]
    lines = child.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["get_batch_at", "iterate", "scan"]
    expected = (
        f"StreamingDiskSource: {path} changed after the source opened it: it now "
        f"holds {size} bytes, but its header needs 400128"
    )
    for line in lines:
        assert line.split()[1] in ("ValueError", "JaxRuntimeError"), line
        assert expected in line, line


def test_file_deleted_after_open_is_named(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(10, dtype=np.int32))
    source = StreamingDiskSource(path)
    path.unlink()
    match = re.escape(f"StreamingDiskSource: {path} changed after the source opened")
    with pytest.raises(READ_ERRORS, match=match):
        jax.block_until_ready(source.get_batch_at(0, 2))


def test_file_grown_after_open_is_refused(tmp_path):
    # An append cannot be told from a rewrite by the file's stamp (np.save of a
    # longer array over the file also grows it), so a grown file is refused too.
    path = tmp_path / "x.npy"
    np.save(path, np.arange(10, dtype=np.int32))
    source = StreamingDiskSource(path)
    assert np.asarray(source.get_batch_at(8, 3)["x"]).tolist() == [8, 9, 0]
    with open(path, "ab") as f:
        f.write(b"\0" * 64)
    match = re.escape(
        f"StreamingDiskSource: {path} changed after the source opened it: its size "
        "went from 168 to 232 bytes"
    )
    with pytest.raises(READ_ERRORS, match=match):
        jax.block_until_ready(source.get_batch_at(8, 3))


# x64 on: the values stay exact -------------------------------------------------

X64_CHILD = """
import sys, numpy as np, jax
from datarax import Pipeline
from datarax.sources import MemorySource, StreamingDiskSource
assert jax.config.jax_enable_x64
folder = sys.argv[1]
data = {
    "i": np.array([2**40, -(2**62), 1]),
    "u": np.array([2**63, 0, 1], np.uint64),
    "f": np.array([1e300, -1e-300, 0.1]),
}
for name, values in data.items():
    np.save(f"{folder}/{name}.npy", values)
for source in (MemorySource(data), StreamingDiskSource(folder)):
    for name, values in data.items():
        assert source.element_spec[name].dtype == values.dtype, source.element_spec
        batch = source.get_batch_at(0, 3)[name]
        assert np.asarray(batch).tolist() == values.tolist(), (name, batch)
    out = Pipeline(source=source, batch_size=3).scan(lambda b: b["i"], length=1)
    assert np.asarray(out).ravel().tolist() == data["i"].tolist()
print("EXACT")
"""


def test_with_x64_on_64_bit_values_are_served_exactly(tmp_path):
    child = run_child(X64_CHILD, str(tmp_path), JAX_ENABLE_X64="1")
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == "EXACT"
