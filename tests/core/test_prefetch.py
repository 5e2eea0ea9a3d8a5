"""Iteration reads host batches ahead of the consumer (``Pipeline(prefetch=)``)."""

from __future__ import annotations

import gc
import threading
import time

import jax
import numpy as np
import pytest

from datarax import IterableSource, Pipeline
from datarax.sources import StreamingDiskSource


class Counted(IterableSource):
    """40 records in chunks of 4; counts the chunks read, can fail at one."""

    def __init__(self, fail_at: int | None = None):
        self.read = 0
        self.fail_at = fail_at

    def __len__(self) -> int:
        return 40

    @property
    def element_spec(self):
        return {"x": jax.ShapeDtypeStruct((), np.int32)}

    def iter_epoch(self, epoch, key_data, skip):
        for start in range(skip, 40, 4):
            if self.fail_at is not None and start >= self.fail_at:
                raise OSError(f"disk gone at record {start}")
            self.read += 1
            yield {"x": np.arange(start, min(start + 4, 40)) + 100 * epoch}


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _prefetch_threads() -> int:
    return sum(t.name == "datarax-prefetch" for t in threading.enumerate())


def test_batches_are_read_ahead_while_the_consumer_works():
    source = Counted()
    pipe = Pipeline(source=source, batch_size=4, num_epochs=None, prefetch=3)
    it = iter(pipe)
    assert next(it)["x"].tolist() == [0, 1, 2, 3]
    # The consumer holds batch 0; the thread reads batches 1-3 meanwhile (one
    # more is in its hands, waiting for room).
    assert wait_for(lambda: source.read >= 4)
    assert [next(it)["x"].tolist()[0] for _ in range(12)] == [
        4, 8, 12, 16, 20, 24, 28, 32, 36, 100, 104, 108
    ]  # fmt: skip
    assert int(pipe.position[...]) == 52


def test_prefetch_0_reads_each_batch_when_asked_for():
    source = Counted()
    pipe = Pipeline(source=source, batch_size=4, num_epochs=None, prefetch=0)
    it = iter(pipe)
    next(it)
    time.sleep(0.2)
    assert source.read == 1
    with pytest.raises(ValueError, match="prefetch must be a Python int >= 0"):
        Pipeline(source=source, batch_size=4, prefetch=-1)


def test_an_error_comes_after_the_batches_before_it():
    pipe = Pipeline(source=Counted(fail_at=8), batch_size=4, prefetch=2)
    it = iter(pipe)
    assert next(it)["x"].tolist() == [0, 1, 2, 3]
    assert next(it)["x"].tolist() == [4, 5, 6, 7]
    with pytest.raises(OSError, match="disk gone at record 8"):
        next(it)
    assert int(pipe.position[...]) == 8  # nothing of the failed batch served


def test_the_thread_stops_when_the_loop_is_left(tmp_path):
    before = _prefetch_threads()
    np.save(tmp_path / "x.npy", np.arange(64, dtype=np.int32))
    pipe = Pipeline(source=StreamingDiskSource(tmp_path), batch_size=4, shuffle=True)
    for batch in pipe:  # a host source: read by the thread, in the shuffled order
        assert batch["x"].shape == (4,)
        break
    assert _prefetch_threads() == before + 1
    del batch, pipe
    gc.collect()
    assert wait_for(lambda: _prefetch_threads() == before)


def test_a_restore_reopens_the_stream_at_the_restored_position(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(64, dtype=np.int32))
    pipe = Pipeline(source=StreamingDiskSource(tmp_path), batch_size=4, shuffle=True)
    want = [b["x"].tolist() for b in pipe]
    pipe = Pipeline(source=StreamingDiskSource(tmp_path), batch_size=4, shuffle=True)
    it = iter(pipe)
    assert [next(it)["x"].tolist() for _ in range(5)] == want[:5]
    pipe.position[...] = np.int32(8)  # moved under the iterator: batches ahead dropped
    assert [next(it)["x"].tolist() for _ in range(3)] == want[2:5]
