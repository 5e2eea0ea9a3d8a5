"""HFSource serves the values of its columns, or refuses them by name.

An int64 column (the default integer type of ``datasets``) holding values beyond
int32, or a float64 column beyond float32, would silently wrap or become inf
when JAX narrows it without x64.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from datarax import Pipeline

datasets = pytest.importorskip("datasets")
hf = pytest.importorskip("datarax.integrations.hf")

pytestmark = pytest.mark.hf

FIX = 'jax.config.update("jax_enable_x64", True)'
needs_x64_off = pytest.mark.skipif(
    jax.config.jax_enable_x64, reason="narrowing happens only without x64"
)


def lost_value(column, value, record, dtype):
    return re.compile(
        re.escape(f"HFSource: field {column!r} holds {value} (record {record}), ")
        + re.escape(f"which {dtype} cannot hold")
        + ".*"
        + re.escape(FIX),
        re.DOTALL,
    )


@needs_x64_off
@pytest.mark.parametrize(
    ("values", "shown", "record", "dtype"),
    [
        (np.array([0, 1, 2**40]), "1099511627776", 2, "int32"),
        (np.array([-(2**35), 1]), "-34359738368", 0, "int32"),
        (np.array([1, 2**33], np.uint64), "8589934592", 1, "uint32"),
        (np.array([0.25, -1e300]), "-1e+300", 1, "float32"),
        (np.array([[1, 2], [3, 2**31]]), "2147483648", 1, "int32"),  # a list column
    ],
)
def test_column_beyond_32_bits_is_refused_by_name(values, shown, record, dtype):
    dataset = datasets.Dataset.from_dict(
        {"ok": np.arange(len(values), dtype=np.int32), "wide": values}
    )
    with pytest.raises(ValueError, match=lost_value("wide", shown, record, dtype)):
        hf.HFSource(dataset)


def test_int64_column_that_fits_is_served_exactly():
    labels = np.array([-(2**31), 2**31 - 1, 0, 7, 123_456_789], np.int64)
    weights = np.array([1e-300, 3.0e38, -0.5, np.inf, 2.0])
    dataset = datasets.Dataset.from_dict({"label": labels, "weight": weights})
    assert dataset.features["label"].dtype == "int64"
    source = hf.HFSource(dataset)
    want_label = labels.astype(jax.dtypes.canonicalize_dtype(np.int64))
    want_weight = weights.astype(jax.dtypes.canonicalize_dtype(np.float64))
    batch = source.get_batch_at(0, 5)
    np.testing.assert_array_equal(batch["label"], want_label)
    np.testing.assert_array_equal(batch["weight"], want_weight)
    streamed = np.concatenate(
        [np.asarray(b["label"]) for b in Pipeline(source=source, batch_size=2)]
    )
    np.testing.assert_array_equal(streamed, want_label)


X64_CHILD = """
import numpy as np, jax, datasets
from datarax.integrations.hf import HFSource
assert jax.config.jax_enable_x64
data = {"i": np.array([2**40, -(2**62), 1]), "f": np.array([1e300, -1e-300, 0.1])}
source = HFSource(datasets.Dataset.from_dict(data))
batch = source.get_batch_at(0, 3)
for name, values in data.items():
    assert batch[name].dtype == values.dtype, batch[name].dtype
    assert np.asarray(batch[name]).tolist() == values.tolist(), batch[name]
print("EXACT")
"""


def test_with_x64_on_64_bit_columns_are_served_exactly():
    child = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(X64_CHILD)],
        capture_output=True,
        text=True,
        timeout=240,
        env={
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "JAX_ENABLE_X64": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        },
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == "EXACT"


@needs_x64_off
def test_streaming_source_refuses_a_value_beyond_int32():
    dataset = datasets.Dataset.from_dict({"x": np.array([1, 2**40, 3])})
    source = hf.HFStreamingSource(dataset.to_iterable_dataset())
    with pytest.raises(ValueError) as info:
        list(Pipeline(source=source, batch_size=3))
    assert "field 'x' holds 1099511627776 (record 1)" in info.exconly()
    assert "jax_enable_x64" in info.exconly()
