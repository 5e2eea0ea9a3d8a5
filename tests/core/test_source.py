"""DataSource: a user source implementing only the public methods works everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax import DataSource, Pipeline


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
