"""DataSource: a user source implementing only the public methods works everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax import DataSource, Pipeline, SourceBase


class Squares(DataSource):
    """Record i is {"y": i * i}, computed, with no stored data."""

    def __len__(self) -> int:
        return 9

    @property
    def element_spec(self):
        return {"y": jax.ShapeDtypeStruct((), jnp.int32)}

    def get_batch_at(self, start, batch_size, key=None):
        index = (start + jnp.arange(batch_size, dtype=jnp.int32)) % 9
        return {"y": index * index}


def test_public_methods_alone_feed_every_mode():
    by_iter = [
        np.asarray(b["y"]).tolist() for b in Pipeline(source=Squares(), batch_size=4)
    ]
    assert by_iter == [[0, 1, 4, 9], [16, 25, 36, 49], [64]]
    pipe = Pipeline(source=Squares(), batch_size=4, num_epochs=None)
    assert np.asarray(pipe.scan(lambda b: b["y"], length=3)).ravel().tolist() == [
        0,
        1,
        4,
        9,
        16,
        25,
        36,
        49,
        64,
        0,
        1,
        4,
    ]
    assert np.asarray(pipe.step()["y"]).tolist() == [9, 16, 25, 36]


def test_a_source_without_reads_says_what_to_implement():
    class Empty(DataSource):
        def __len__(self):
            return 3

    with pytest.raises(NotImplementedError, match="must implement get_batch_at"):
        Empty().get_batch_at(0, 2)


def test_a_source_may_set_length_instead_of_len():
    class Counted(DataSource):
        def __init__(self):
            self.length = 5

        @property
        def element_spec(self):
            return {"y": jax.ShapeDtypeStruct((), jnp.int32)}

        def get_batch_at(self, start, batch_size, key=None):
            return {"y": (start + jnp.arange(batch_size, dtype=jnp.int32)) % 5}

    assert len(Counted()) == 5
    batches = [b["y"].tolist() for b in Pipeline(source=Counted(), batch_size=2)]
    assert batches == [[0, 1], [2, 3], [4]]


def test_a_bare_source_base_is_refused_by_the_pipeline():
    class Bare(SourceBase):
        length = 3

    with pytest.raises(TypeError) as info:
        Pipeline(source=Bare(), batch_size=2)
    assert "DataSource (random access) or IterableSource (in order)" in (info.exconly())


def test_the_old_private_hooks_are_refused_with_their_new_names():
    with pytest.raises(TypeError) as info:

        class Old(DataSource):
            def _read(self, plan, start, batch_size, key):
                return {}

            def _steps_per_read(self, batch_size):
                return 4

    message = info.exconly()
    assert "Old defines ['_read', '_steps_per_read']" in message
    assert "_read -> read (subclass PlannedSource)" in message
    assert "_steps_per_read -> steps_per_read" in message
