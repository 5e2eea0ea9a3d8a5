"""IterableSource: iteration-only sources feed the same stream as random access."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from datarax import IterableSource, Pipeline
from datarax.checkpoint import load_state_dict, state_dict
from datarax.operators import ElementOperator
from datarax.sources import MemorySource
from datarax.sources._order import epoch_table_host


class ArrayStream(IterableSource):
    """A real in-order stream: yields chunks of 3 records, shuffles per epoch."""

    supports_shuffle = True

    def __init__(self, data, *, declared=None, chunk=3, spec=None):
        self.rows = Rows(data)  # a holder object: the arrays stay out of nnx state
        self.length = declared or len(next(iter(data.values())))
        self.chunk = chunk
        spec = spec or {k: (v.shape[1:], str(v.dtype)) for k, v in data.items()}
        self.spec = tuple(spec.items())  # static attributes must be hashable

    def __len__(self):
        return self.length

    @property
    def element_spec(self):
        return {k: jax.ShapeDtypeStruct(*s) for k, s in self.spec}

    def iter_epoch(self, epoch, key_data, skip):
        data = self.rows.data
        n = len(next(iter(data.values())))
        order = np.arange(n)
        if key_data is not None:
            order = epoch_table_host(key_data, epoch, n)
        for low in range(skip, n, self.chunk):
            rows = order[low : low + self.chunk]
            yield {k: v[rows] for k, v in data.items()}


class Rows:
    def __init__(self, data):
        self.data = data


def jitter(record, key):
    return {**record, "x": record["x"] + jax.random.uniform(key)}


def data(n=23):
    return {
        "label": np.arange(n, dtype=np.int32),
        "x": np.arange(n * 2, dtype=np.float32).reshape(n, 2),
    }


def build(source, *, batch_size=4, shuffle=False, num_epochs=2, seed=3):
    return Pipeline(
        source=source,
        stages=[ElementOperator(jitter, stochastic=True)],
        batch_size=batch_size,
        shuffle=shuffle,
        rngs=nnx.Rngs(seed),
        num_epochs=num_epochs,
    )


def host(batches):
    return [jax.tree.map(np.asarray, b) for b in batches]


@pytest.mark.parametrize("shuffle", [False, True])
def test_iteration_equals_the_random_access_stream(shuffle):
    got = host(build(ArrayStream(data()), shuffle=shuffle))
    want = host(build(MemorySource(data()), shuffle=shuffle))
    assert len(got) == len(want) == 12  # 46 records: 11 full batches and 2
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["label"], w["label"])
        np.testing.assert_allclose(g["x"], w["x"], rtol=1e-6)
    labels = np.concatenate([b["label"] for b in got])
    if shuffle:  # each epoch a permutation, and the two epochs differ
        assert sorted(labels[:23]) == sorted(labels[23:]) == list(range(23))
        assert labels[:23].tolist() != labels[23:].tolist()


@given(first=st.integers(0, 9), batch_size=st.sampled_from([1, 4, 5]))
def test_resume_from_a_checkpoint_serves_the_same_next_batches(first, batch_size):
    original = build(ArrayStream(data()), shuffle=True, num_epochs=None)
    batches = iter(original)
    for _ in itertools.islice(batches, first):
        pass
    saved = state_dict(original)
    want = host(itertools.islice(batches, 6))
    resumed = build(ArrayStream(data()), shuffle=True, num_epochs=None)
    load_state_dict(saved, resumed)
    got = host(itertools.islice(iter(resumed), 6))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["label"], w["label"])
        np.testing.assert_allclose(g["x"], w["x"], rtol=1e-6)
    # the new batch size goes on from the same record position
    other = build(ArrayStream(data()), shuffle=True, num_epochs=None, batch_size=2)
    load_state_dict(saved, other)
    pairs = np.concatenate([b["label"] for b in host(itertools.islice(other, 4))])
    np.testing.assert_array_equal(pairs, np.concatenate([b["label"] for b in want])[:8])


def test_scan_step_and_get_batch_at_say_why_and_what_instead():
    pipe = build(ArrayStream(data()))
    for call in (
        lambda: pipe.scan(lambda b: b["x"].sum(), length=2),
        pipe.step,
        lambda: pipe.source.get_batch_at(0, 4),
    ):
        with pytest.raises(TypeError, match="iteration-only.*Iterate the pipeline"):
            call()


def test_a_stream_shorter_or_longer_than_declared_is_an_error():
    short = build(ArrayStream(data(), declared=30), num_epochs=1)
    with pytest.raises(RuntimeError, match="ended after 23 records.*declared 30"):
        list(short)
    bad = ArrayStream(data(), spec={"label": ((2,), "int32"), "x": ((2,), "f4")})
    with pytest.raises(ValueError, match=r"field 'label' has records of shape \(\)"):
        list(build(bad))


def test_a_mix_refuses_an_iteration_only_child():
    from datarax.sources import MixDataSourcesNode

    with pytest.raises(
        TypeError, match=r"sources\[1\] cannot be mixed.*iteration-only"
    ):
        MixDataSourcesNode([MemorySource(data()), ArrayStream(data())], [1, 1])


def test_the_old_base_name_still_works_with_a_warning():
    import datarax.sources

    with pytest.warns(DeprecationWarning, match="datarax.core.IterableSource"):
        old = datarax.sources.IterableSourceBase
    assert old is IterableSource

    class Written(old):  # as datarax 0.1 documented it: self.length, no __len__
        supports_shuffle = True

        def __init__(self, data):
            self.rows = Rows(data)
            self.length = len(next(iter(data.values())))
            self.spec = tuple((k, (v.shape[1:], str(v.dtype))) for k, v in data.items())

        element_spec = ArrayStream.element_spec
        iter_epoch = ArrayStream.iter_epoch
        chunk = 3

    batches = build(Written(data()), batch_size=10, num_epochs=1)
    labels = [b["label"].tolist() for b in batches]
    assert labels == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
