"""HostMapSource: host stages on worker threads and processes, in stream order."""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hostfns
import jax
import numpy as np
import pytest
from PIL import Image
from polling import wait_for

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, state_dict
from datarax.operators import ElementOperator, HostOperator
from datarax.sources import (
    HostMapSource,
    HostRecordSource,
    HostStageError,
    ImageFolderSource,
)

if TYPE_CHECKING:
    import psutil

CLASSES = ("cat", "dog", "fox")
PER_CLASS = 7  # 21 images: batches of 6 leave a short last batch


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JPEG and PNG files of varied noise, 40x48, in one subfolder per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
            pixels[..., 0] = label * 100  # the class is visible in the pixels
            suffix = ".png" if i % 3 == 0 else ".jpg"
            Image.fromarray(pixels).save(root / name / f"{i}{suffix}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def source(folder: Path, **kwargs) -> HostMapSource:
    stages = [
        HostOperator(hostfns.decode),
        HostOperator(hostfns.random_crop, stochastic=True),
    ]
    return HostMapSource(ImageFolderSource(folder), stages, **kwargs)


def pipeline(folder: Path, batch_size: int = 6, **kwargs) -> Pipeline:
    options = {"shuffle": True, "num_epochs": 2}
    workers = {k: kwargs.pop(k) for k in ("workers", "processes") if k in kwargs}
    return Pipeline(
        source=source(folder, **workers), batch_size=batch_size, **{**options, **kwargs}
    )


def stream(batches) -> dict[str, np.ndarray]:
    """The records of ``batches`` laid end to end."""
    batches = [jax.tree.map(np.asarray, b) for b in batches]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_image_folder_lists_classes_and_files_in_order(folder):
    files = ImageFolderSource(folder)
    assert files.classes == list(CLASSES)
    assert len(files) == 21  # notes.txt is not an image
    assert files.labels == [0] * 7 + [1] * 7 + [2] * 7
    record = files.record(8)
    assert record["label"] == 1
    assert (
        record["image"] == (folder / "dog" / files.files[8].split("/")[1]).read_bytes()
    )
    assert len(ImageFolderSource(folder, suffixes=None)) == 22


def test_image_folder_refuses_what_is_not_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolderSource(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no subfolders"):
        ImageFolderSource(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no file ending in"):
        ImageFolderSource(tmp_path)


def test_the_stream_does_not_depend_on_workers_batch_size_or_mode(folder):
    want = stream(pipeline(folder, workers=1))
    assert want["image"].shape == (42, 24, 24, 3) and want["image"].dtype == np.uint8
    # Each epoch a permutation of the 21 files, and the epochs differ.
    assert (
        sorted(want["label"][:21])
        == sorted(want["label"][21:])
        == sorted([0, 1, 2] * 7)
    )
    assert want["label"][:21].tolist() != want["label"][21:].tolist()
    # The class shows in the red channel (0, 100, 200 before JPEG's chroma
    # blur): the label travelled with its image.
    np.testing.assert_allclose(
        want["image"][..., 0].mean((1, 2)) / 100, want["label"], atol=0.3
    )
    for other in (
        pipeline(folder, workers=4),
        pipeline(folder, batch_size=4, workers=2),
    ):
        got = stream(other)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    # scan reads through a host callback, in chunks of steps: the same records.
    scanned = pipeline(folder, workers=2).scan(lambda batch: batch, length=5)
    np.testing.assert_array_equal(
        scanned["image"].reshape(30, 24, 24, 3), want["image"][:30]
    )
    # step() inside the caller's own jit, continuing where the scan stopped.
    pipe = pipeline(folder, workers=3)
    pipe.scan(lambda batch: batch, length=2)
    from flax import nnx

    @nnx.jit
    def next_batch(pipe):
        return pipe.step()

    np.testing.assert_array_equal(next_batch(pipe)["image"], want["image"][12:18])
    assert int(pipe.position[...]) == 18


def test_host_randomness_is_per_epoch_and_per_stage(folder):
    natural = stream(Pipeline(source=source(folder), batch_size=7, num_epochs=2))
    first, second = natural["image"][:21], natural["image"][21:]
    # The same file in two epochs is cropped differently (and the same way
    # again in a new pipeline with the same seed).
    assert (first != second).any(axis=(1, 2, 3)).mean() > 0.8
    again = stream(Pipeline(source=source(folder), batch_size=21, num_epochs=1))
    np.testing.assert_array_equal(again["image"], first)


def test_device_stages_follow_the_host_stages(folder):
    as_float = ElementOperator(lambda r, key: {**r, "image": r["image"] / 255.0})
    pipe = Pipeline(source=source(folder), stages=[as_float], batch_size=6)
    batch = next(iter(pipe))
    assert batch["image"].dtype == np.float32 and float(batch["image"].max()) <= 1.0


def test_resume_mid_epoch_with_work_in_flight(folder):
    original = pipeline(folder, workers=2, num_epochs=None)
    batches = iter(original)
    list(itertools.islice(batches, 3))  # the workers are two batches ahead now
    assert original.source.stats().in_flight > 0
    saved = state_dict(original)
    want = stream(itertools.islice(batches, 4))
    resumed = pipeline(folder, workers=3, num_epochs=None)
    load_state_dict(saved, resumed)
    got = stream(itertools.islice(iter(resumed), 4))
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_a_failing_stage_names_the_record_and_keeps_the_traceback(folder):
    stages = [HostOperator(hostfns.decode), HostOperator(hostfns.fail_on_label_1)]
    failing = HostMapSource(ImageFolderSource(folder), stages, workers=2)
    pipe = Pipeline(source=failing, batch_size=6)
    it = iter(pipe)
    next(it)  # records 0-5 are all cats
    with pytest.raises(HostStageError) as caught:
        next(it)
    err = caught.value
    assert (err.stage, err.position, err.index) == ("fail_on_label_1", 7, 7)
    assert "stream position 7 (record 7)" in str(err)
    assert "refusing label 1" in str(err) and 'hostfns.py", line' in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert int(pipe.position[...]) == 6  # nothing of the failed batch was served
    # In a compiled run the same text reaches the caller inside JAX's error.
    with pytest.raises(Exception, match="host stage 'fail_on_label_1' failed"):
        jax.block_until_ready(pipe.scan(lambda batch: batch["label"], length=2))


def test_output_that_is_not_fixed_shape_numbers_is_refused_by_name(folder):
    def keep_bytes(record, rng):
        return record

    with pytest.raises(
        HostStageError, match=r"\('keep_bytes'\) returned field 'image' as bytes"
    ):
        HostMapSource(ImageFolderSource(folder), [keep_bytes])

    def ragged(record, rng):
        return {"x": np.zeros(1 + record["label"])}

    pipe = Pipeline(
        source=HostMapSource(ImageFolderSource(folder), [ragged]), batch_size=21
    )
    with pytest.raises(
        HostStageError, match=r"field 'x' of shape \(2,\).*but of shape \(1,\)"
    ):
        next(iter(pipe))


def test_stats_show_where_the_time_went(folder):
    # prefetch=0: the pipeline's own thread would read one batch past the end.
    pipe = pipeline(folder, workers=2, prefetch=0)
    list(pipe)
    stats = pipe.source.stats()
    assert stats.records == 42 and stats.reads == 7
    assert stats.prefetched_reads == 6  # every read but the first was ready ahead
    assert set(stats.stage_seconds) == {"decode", "random_crop"}
    assert stats.bottleneck() in {"read", "decode", "random_crop"}
    assert stats.stage_seconds["decode"] > 0 and stats.records_per_second > 0


def _host_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("datarax-host")]


def test_breaking_out_and_dropping_the_pipeline_leaves_no_threads(folder):
    pipe = pipeline(folder, workers=3)
    for _ in pipe:
        break
    assert _host_threads()
    del pipe
    gc.collect()
    assert wait_for(lambda: _host_threads() == [])


def test_a_custom_record_source_and_plain_function_stages():
    class Lines(HostRecordSource):
        def __init__(self, lines):
            self.lines = lines

        def __len__(self):
            return len(self.lines)

        def record(self, index):
            return {"text": self.lines[index]}

    def lengths(record, rng):
        return {"chars": len(record["text"]), "words": len(record["text"].split())}

    lines = ["a b", "ccc", "dd ee ff", "g"]
    pipe = Pipeline(source=HostMapSource(Lines(lines), [lengths]), batch_size=4)
    batch = next(iter(pipe))
    assert batch["chars"].tolist() == [3, 3, 8, 1]
    assert batch["words"].tolist() == [2, 1, 3, 1]
    assert batch["chars"].dtype == np.int32
    with pytest.raises(TypeError, match="HostRecordSource"):
        HostMapSource([1, 2, 3], [lengths])
    with pytest.raises(ValueError, match="workers must be an int of at least 1"):
        HostMapSource(Lines(lines), [lengths], workers=0)
    with pytest.raises(TypeError, match="cannot take two arguments"):
        HostOperator(lambda record: record)


def test_scan_reads_big_batches_in_order_so_each_was_prepared_ahead():
    # 6 MiB batches: scan reads one per host callback. Unrolled, XLA ran those
    # independent callbacks out of stream order and the read-ahead missed.
    def build() -> Pipeline:
        source = HostMapSource(hostfns.Counted(512), [hostfns.big_image], workers=2)
        return Pipeline(source=source, batch_size=32, shuffle=True)

    pipe = build()
    firsts = pipe.scan(lambda batch: batch["image"][:, 0, 0, 0], length=12)
    stats = pipe.source.stats()
    assert (stats.reads, stats.prefetched_reads) == (12, 11)
    want = stream(itertools.islice(build(), 12))["image"][:, 0, 0, 0]
    np.testing.assert_array_equal(np.asarray(firsts).reshape(-1), want)


@pytest.mark.parametrize("processes", [False, True])
def test_host_batches_reach_a_cpu_device_without_a_copy(processes):
    # 64-byte aligned: XLA's CPU client aliases the NumPy buffer (2.9 ms against
    # 0.08 ms for a 9.6 MB batch, measured); NumPy aligns large arrays to 16.
    source = HostMapSource(
        hostfns.Counted(64), [hostfns.big_image], workers=2, processes=processes
    )
    try:
        batch = next(source.host_batches(0, 8, None))
        assert [int(v) for v in batch["image"][:, 0, 0, 0]] == list(range(8))
        for array in batch.values():
            assert array.ctypes.data % 64 == 0
        if jax.default_backend() == "cpu":
            image = jax.device_put(batch["image"])
            assert image.unsafe_buffer_pointer() == batch["image"].ctypes.data
    finally:
        source.close()


@pytest.mark.slow
def test_process_workers_serve_the_thread_stream_and_report_a_death(folder):
    want = stream(pipeline(folder, workers=1))
    pipe = pipeline(folder, workers=2, processes=True)
    got = stream(pipe)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])
    # An error raised in a worker process carries the worker's traceback.
    stages = [HostOperator(hostfns.decode), HostOperator(hostfns.fail_on_label_1)]
    failing = Pipeline(
        source=HostMapSource(
            ImageFolderSource(folder), stages, workers=2, processes=True
        ),
        batch_size=6,
    )
    with pytest.raises(
        HostStageError, match="(?s)position 7 .*refusing label 1.*hostfns.py"
    ):
        list(failing)
    # A worker that dies is reported, never waited for; the next read recovers.
    # No read-ahead (prefetch=0): work prepared ahead for positions 6-17 would
    # reach label 1 while the first read runs, and a dead worker fails every
    # task of its pool, the first read's too.
    stages = [HostOperator(hostfns.decode), HostOperator(hostfns.exit_on_label_1)]
    dying = Pipeline(
        source=HostMapSource(
            ImageFolderSource(folder), stages, workers=2, processes=True, prefetch=0
        ),
        batch_size=6,
        prefetch=0,
    )
    it = iter(dying)
    next(it)
    with pytest.raises(RuntimeError, match="host worker process died"):
        next(it)
    assert int(dying.position[...]) == 6
    del pipe, failing, dying, it
    gc.collect()
    assert wait_for(lambda: multiprocessing.active_children() == [])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_stopped_program_leaves_no_worker_process(folder, how, tmp_path):
    """A loop whose host stages run in worker processes, and whose batches a
    thread prefetches, stopped by a terminal's Ctrl-C (SIGINT to the process
    group: the program ends promptly with its KeyboardInterrupt) or killed
    (SIGKILL to the main process alone: nothing of it runs after). Either way
    every worker process ends."""
    import psutil

    script = Path(hostfns.__file__).with_name("interrupted.py")
    env = {**os.environ, "PYTHONPATH": str(script.parent), "JAX_PLATFORMS": "cpu"}
    log = tmp_path / "stderr.txt"  # a file: a pipe nobody reads could fill
    with open(log, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(script), str(folder)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, as a terminal's job
        )
    workers = []
    try:
        ready = child.stdout.readline().split()
        assert ready[:1] == ["ready"], (child.wait(timeout=60), log.read_text())
        workers = [psutil.Process(int(pid)) for pid in ready[1:]]
        assert workers  # the worker processes (and multiprocessing's tracker)
        if how == "ctrl-c":
            os.killpg(child.pid, signal.SIGINT)
        else:
            os.kill(child.pid, signal.SIGKILL)
        # The program's own end, not its pipes' (its workers hold them too).
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a hang: what each thread was doing
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            alive = [w.pid for w in workers if not _ended(w)]
            os.killpg(child.pid, signal.SIGKILL)
            pytest.fail(
                f"still running 60 s after {how}; workers alive: {alive}; "
                f"its threads:\n{log.read_text()[-6000:]}"
            )
        assert wait_for(lambda: all(_ended(worker) for worker in workers))
    finally:
        # The whole group, whatever failed: a process started after "ready"
        # may hold the pipe too. An empty group raises ProcessLookupError.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        child.stdout.close()
        child.wait(timeout=30)  # reaped, so no ResourceWarning reaches a later test
    err = log.read_text()
    if how == "ctrl-c":
        assert child.returncode == -signal.SIGINT, err
        assert "KeyboardInterrupt" in err
    else:
        assert child.returncode == -signal.SIGKILL


def _ended(process: psutil.Process) -> bool:
    """Whether a ``psutil.Process`` has ended (a zombie waits only for its reaping)."""
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_dropped_pipeline_still_finishes_the_run_it_dispatched(folder):
    # scan returns before its host callbacks ran; the pipeline is gone at once.
    labels = pipeline(folder, workers=2).scan(lambda batch: batch["label"], length=5)
    gc.collect()
    assert np.asarray(labels).shape == (5, 6)
    gc.collect()
    assert wait_for(lambda: _host_threads() == [])


def test_a_clone_keeps_the_workers_after_the_original_is_dropped(folder):
    from flax import nnx

    def make():
        return nnx.clone(pipeline(folder, workers=2, num_epochs=None, prefetch=0))

    clone = make()  # the original pipeline (and its source) is gone
    gc.collect()
    it = iter(clone)
    for _ in range(6):
        next(it)
    # Still reading ahead: the clone owns the shared workers now.
    assert clone.source.stats().prefetched_reads >= 4
    assert _host_threads()


def test_a_record_source_that_miscounts_or_cannot_travel_is_named(folder):
    class Short(HostRecordSource):
        def __len__(self):
            return 8

        def record(self, index):
            return {"x": index}

        def read_records(self, indices):
            records = [self.record(i) for i in indices]
            return records[:-1] if len(records) > 1 else records  # one short

    # One worker: each read asks the source for 2 records (2 tasks per worker).
    short = HostMapSource(Short(), [lambda r, rng: r], workers=1)
    pipe = Pipeline(source=short, batch_size=4)
    with pytest.raises(HostStageError, match="returned 1 records for the 2 indices"):
        next(iter(pipe))
    with pytest.raises(TypeError, match=r"processes=True\): host stage '<lambda>'"):
        HostMapSource(ImageFolderSource(folder), [lambda r, rng: r], processes=True)
