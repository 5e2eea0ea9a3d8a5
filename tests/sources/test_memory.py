"""MemorySource / EagerSourceBase: the data model's random access, validated."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from datarax import DataSource, DataVar
from datarax.sources import EagerSourceBase, MemorySource


def arange_source(n: int) -> MemorySource:
    return MemorySource({"i": np.arange(n, dtype=np.int32)})


def test_len_and_element_spec():
    source = MemorySource(
        {"x": np.zeros((7, 3, 2), np.float32), "y": jnp.arange(7, dtype=jnp.int32)}
    )
    assert len(source) == 7
    assert isinstance(source, EagerSourceBase) and isinstance(source, DataSource)
    assert source.element_spec == {
        "x": jax.ShapeDtypeStruct((3, 2), jnp.float32),
        "y": jax.ShapeDtypeStruct((), jnp.int32),
    }


def test_natural_order_crosses_epochs():
    source = arange_source(10)
    assert np.asarray(source.get_batch_at(8, 4)["i"]).tolist() == [8, 9, 0, 1]
    assert np.asarray(source.get_batch_at(25, 3)["i"]).tolist() == [5, 6, 7]
    # a batch larger than the source wraps several times
    assert np.asarray(source.get_batch_at(3, 12)["i"]).tolist() == [
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        0,
        1,
        2,
        3,
        4,
    ]


@given(
    length=st.integers(1, 40),
    batch_size=st.integers(1, 17),
    start=st.integers(0, 200),
    shuffle=st.booleans(),
)
def test_every_record_once_per_epoch(length, batch_size, start, shuffle):
    """From any start and batch size, each epoch's positions hold a permutation."""
    source = arange_source(length)
    key = jax.random.key(3) if shuffle else None
    first_epoch = -(-start // length)
    begin = first_epoch * length
    records = []
    position = begin
    while position < begin + 2 * length:
        got = source.get_batch_at(position, batch_size, key)["i"]
        records.extend(np.asarray(got).tolist())
        position += batch_size
    for e in range(2):
        epoch = records[e * length : (e + 1) * length]
        assert sorted(epoch) == list(range(length))
        if not shuffle:
            assert epoch == list(range(length))


def test_shuffled_epochs_are_distinct_permutations():
    source = arange_source(64)
    key = jax.random.key(0)
    epochs = [np.asarray(source.get_batch_at(e * 64, 64, key)["i"]) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(64))
    assert len({tuple(e.tolist()) for e in epochs}) == 3
    assert epochs[0].tolist() != list(range(64))


def test_same_arguments_same_batch_and_no_hidden_state():
    source = arange_source(30)
    before = nnx.state(source)
    key = jax.random.key(5)
    a = source.get_batch_at(17, 9, key)["i"]
    b = source.get_batch_at(17, 9, key)["i"]
    np.testing.assert_array_equal(a, b)
    assert jax.tree.all(jax.tree.map(np.array_equal, before, nnx.state(source)))


def test_legacy_and_typed_keys_give_the_same_order():
    source = arange_source(20)
    typed = source.get_batch_at(0, 20, jax.random.key(4))["i"]
    legacy = source.get_batch_at(0, 20, jax.random.PRNGKey(4))["i"]
    np.testing.assert_array_equal(typed, legacy)


@pytest.mark.parametrize("legacy", [False, True])
def test_traceable_under_jit_vmap_and_nnx_scan(legacy):
    source = arange_source(13)
    key = jax.random.PRNGKey(1) if legacy else jax.random.key(1)
    eager = np.asarray(source.get_batch_at(11, 5, key)["i"])

    jitted = jax.jit(lambda s, k: source.get_batch_at(s, 5, k)["i"])
    np.testing.assert_array_equal(jitted(jnp.int32(11), key), eager)

    starts = jnp.array([11, 16, 21], jnp.int32)
    vmapped = jax.vmap(lambda s: source.get_batch_at(s, 5, key)["i"])(starts)
    np.testing.assert_array_equal(vmapped[0], eager)
    np.testing.assert_array_equal(
        np.ravel(vmapped), np.asarray(source.get_batch_at(11, 15, key)["i"])
    )

    @nnx.jit
    def scanned(source, key):
        @nnx.scan(in_axes=(None, 0), out_axes=0)  # the source broadcast
        def body(src, start):
            return src.get_batch_at(start, 5, key)["i"]

        return body(source, starts)

    np.testing.assert_array_equal(scanned(source, key), vmapped)


def test_get_batch_at_checks_batch_size():
    source = arange_source(5)
    with pytest.raises(TypeError, match="static Python int"):
        source.get_batch_at(0, jnp.int32(2))
    with pytest.raises(ValueError, match="at least 1"):
        source.get_batch_at(0, 0)


def test_bad_key_is_named():
    with pytest.raises(TypeError, match="expected one PRNG key"):
        arange_source(5).get_batch_at(0, 2, jnp.zeros(3, jnp.float32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "MemorySource: no fields"),
        (
            {"x": np.arange(10), "y": np.arange(9)},
            "MemorySource: fields differ in length {'x': 10, 'y': 9}",
        ),
        ({"x": [1, 2, 3]}, "MemorySource: fields {'x': 'list'} are not arrays"),
        ({"x": np.arange(3), "s": np.float32(1)}, "fields {'s': 'float32'} are not"),
        ({"x": np.array(3)}, "MemorySource: fields ['x'] are 0-d"),
        (
            {"x": np.array([{}, {}], dtype=object)},
            "MemorySource: fields {'x': 'object'} have dtypes JAX cannot hold",
        ),
        ({"s": np.array(["a", "b"])}, "fields {'s': '<U1'} have dtypes"),
        ({"x": np.zeros((0, 2))}, "the fields hold no records {'x': 0}"),
        ("not a mapping", "expected a mapping of field name -> array"),
    ],
    ids=[
        "empty",
        "ragged",
        "list",
        "scalar",
        "0-d",
        "object",
        "str",
        "no-rows",
        "not-mapping",
    ],
)
def test_bad_data_is_refused_naming_fields(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MemorySource(data)


def test_arrays_are_data_variables_not_plain_attributes():
    source = MemorySource({"x": np.arange(6), "y": np.ones((6, 2))})
    data = nnx.state(source, DataVar)
    assert len(jax.tree.leaves(data)) == 2
    assert jax.tree.leaves(nnx.state(source, nnx.Not(DataVar))) == []


def test_jax_input_is_not_copied():
    x = jnp.arange(8)
    source = MemorySource({"x": x})
    assert source.arrays[0].get_raw_value() is x
