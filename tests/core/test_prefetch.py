"""Iteration reads host batches ahead of the consumer (``Pipeline(prefetch=)``)."""

from __future__ import annotations

import gc
import time

import jax
import numpy as np
import pytest
from polling import wait_for

from datarax import IterableSource, Pipeline
from datarax.core import _prefetch
from datarax.sources import StreamingDiskSource


class Tally:
    count = 0


class Counted(IterableSource):
    """40 records in chunks of 4; counts the chunks read, can fail at one.

    Each read waits ``delay`` seconds (a network read): 5 ms makes reading
    ahead in a thread worth it (``Ahead`` times the first batches).
    """

    def __init__(self, fail_at: int | None = None, delay: float = 0.005):
        self.reads = Tally()  # a plain object: nnx attribute writes cost ~0.1 ms
        self.fail_at = fail_at
        self.delay = delay

    @property
    def read(self) -> int:
        return self.reads.count

    def __len__(self) -> int:
        return 40

    @property
    def element_spec(self):
        return {"x": jax.ShapeDtypeStruct((), np.int32)}

    def iter_epoch(self, epoch, key_data, skip):
        for start in range(skip, 40, 4):
            if self.fail_at is not None and start >= self.fail_at:
                raise OSError(f"disk gone at record {start}")
            if self.delay:
                time.sleep(self.delay)
            self.reads.count += 1
            yield {"x": np.arange(start, min(start + 4, 40)) + 100 * epoch}


def test_batches_are_read_ahead_while_the_consumer_works():
    source = Counted()
    pipe = Pipeline(source=source, batch_size=4, num_epochs=None, prefetch=3)
    it = iter(pipe)
    # The first three batches are read when asked for, and timed: slow reads.
    assert [next(it)["x"].tolist()[0] for _ in range(4)] == [0, 4, 8, 12]
    # The consumer holds batch 3; the thread reads the next ones meanwhile.
    assert wait_for(lambda: source.read >= 7)
    assert [next(it)["x"].tolist()[0] for _ in range(9)] == [
        16, 20, 24, 28, 32, 36, 100, 104, 108
    ]  # fmt: skip
    assert int(pipe.position[...]) == 52


def test_quick_small_batches_are_read_in_the_consumers_thread(monkeypatch):
    # Reads here take 0.06-0.3 ms; "slow" from 50 ms keeps a loaded machine's
    # slowest read on the quick side (the 5 ms reads above stay slow at 0.2 ms).
    monkeypatch.setattr(_prefetch, "SLOW_READ", 0.05)
    source = Counted(delay=0)
    pipe = Pipeline(source=source, batch_size=4, num_epochs=None, prefetch=2)
    it = iter(pipe)
    for _ in range(6):
        next(it)
    time.sleep(0.2)
    # A thread would cost more than such a read: nothing is read ahead.
    assert source.read == 6 and not it._records.threaded


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
    pipe = Pipeline(source=Counted(fail_at=24), batch_size=4, prefetch=2)
    it = iter(pipe)
    assert [next(it)["x"].tolist()[0] for _ in range(6)] == [0, 4, 8, 12, 16, 20]
    assert it._records.threaded  # batches 3-5 came through the thread
    with pytest.raises(OSError, match="disk gone at record 24"):
        next(it)
    assert int(pipe.position[...]) == 24  # nothing of the failed batch served


def test_the_thread_stops_when_the_loop_is_left():
    pipe = Pipeline(source=Counted(), batch_size=4)
    it = iter(pipe)
    for _ in range(5):  # the thread starts after the third batch
        next(it)
    thread = it._records._thread
    assert thread.is_alive() and thread.name == "datarax-prefetch"
    del it, pipe
    gc.collect()
    assert wait_for(lambda: not thread.is_alive())


def test_a_restore_reopens_the_stream_at_the_restored_position(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(64, dtype=np.int32))
    pipe = Pipeline(source=StreamingDiskSource(tmp_path), batch_size=4, shuffle=True)
    want = [b["x"].tolist() for b in pipe]
    pipe = Pipeline(source=StreamingDiskSource(tmp_path), batch_size=4, shuffle=True)
    it = iter(pipe)
    assert [next(it)["x"].tolist() for _ in range(5)] == want[:5]
    pipe.position[...] = np.int32(8)  # moved under the iterator: batches ahead dropped
    assert [next(it)["x"].tolist() for _ in range(3)] == want[2:5]


def test_the_thread_stops_at_the_end_of_the_stream():
    pipe = Pipeline(source=Counted(), batch_size=4, num_epochs=1)
    it = iter(pipe)
    for _ in range(5):  # the thread starts after the third batch
        next(it)
    thread = it._records._thread
    assert len(list(it)) == 5 and int(pipe.position[...]) == 40
    assert wait_for(lambda: not thread.is_alive())  # the iterator is still held
