"""Checkpoints refuse what they cannot restore exactly, by name, and write nothing."""

from __future__ import annotations

import os
import pickle
import random
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.checkpoint import (
    CheckpointError,
    load_state_dict,
    restore,
    save,
    state_dict,
)
from datarax.checkpoint._temporaries import HOST, STALE_AFTER_S
from datarax.sources import MemorySource

BATCH = 4
#: Fork, SIGKILL and pid probes (os.kill(pid, 0)) are POSIX only.
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX processes")


def build(batch_size=BATCH):
    return Pipeline(
        source=MemorySource({"x": np.arange(10)}),
        batch_size=batch_size,
        shuffle=True,
        num_epochs=None,
    )


def next_batch(pipe):
    return np.asarray(next(iter(pipe))["x"]).tolist()


def served(steps):
    """A pipeline after ``steps`` batches, and the batch it serves next."""
    pipe = build()
    it = iter(pipe)
    for _ in range(steps):
        next(it)
    twin = build()
    load_state_dict(state_dict(pipe), twin)
    return pipe, next_batch(twin)


def assert_clean(info, *needles):
    """The message holds every needle, and never points at unsafe loading."""
    text = info.exconly()
    assert text.startswith("datarax.checkpoint.CheckpointError: "), text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    assert "allow_pickle" not in text and "unpickl" not in text


@pytest.fixture
def saved(tmp_path):
    """A checkpoint file of a pipeline one batch in, and its bytes."""
    path = tmp_path / "ck.npz"
    pipe = build()
    next(iter(pipe))
    save(path, pipe)
    return path, path.read_bytes()


# -- files that are not (whole) checkpoints ----------------------------------------


def write_foreign(path, kind):
    if kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(512))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"0": {"position": 4}}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    elif kind == "other npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif kind == "npz of objects":
        with open(path, "wb") as f:
            np.savez(f, **{'["0", "position"]': np.array([None], dtype=object)})
    elif kind == "zip of text":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "hello")
    elif kind == "folder":
        path.mkdir()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("random bytes", "it is not a datarax checkpoint (an .npz archive): it starts"),
        ("pickle", "it holds pickled Python objects, not a datarax checkpoint"),
        ("empty", "the file is empty, not a datarax checkpoint"),
        ("npy", "it is a single NumPy array (.npy), not a datarax checkpoint"),
        ("other npz", "it holds an entry named 'a.npy', but save names each array"),
        ("npz of objects", """array '["0", "position"].npy' holds Python objects"""),
        ("zip of text", "it holds an entry named 'notes.txt'"),
        ("folder", "it is a folder, not a checkpoint file"),
    ],
)
def test_restore_refuses_a_file_that_is_not_a_checkpoint(tmp_path, kind, message):
    path = tmp_path / "ck.npz"
    write_foreign(path, kind)
    pipe, expected = served(1)
    with pytest.raises(CheckpointError) as info:
        restore(path, pipe)
    assert_clean(info, f"cannot restore {str(path)!r}: ", message)
    assert "pickle" not in info.exconly() or kind == "pickle"
    assert next_batch(pipe) == expected  # nothing was written


def test_restore_of_a_missing_file_is_file_not_found_naming_it(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        restore(path, build())


@pytest.mark.parametrize("keep", [3, 10, 0.25, 0.5, 0.75, -1])
def test_restore_refuses_a_truncated_checkpoint(saved, keep):
    path, raw = saved
    size = keep if isinstance(keep, int) and keep > 0 else int(len(raw) * keep)
    size = len(raw) - 1 if keep == -1 else size
    path.write_bytes(raw[:size])
    pipe, expected = served(2)
    with pytest.raises(CheckpointError) as info:
        restore(path, pipe)
    assert_clean(info, f"cannot restore {str(path)!r}: ")
    assert re.search("damaged or truncated|not a datarax checkpoint", info.exconly())
    assert next_batch(pipe) == expected


def member_span(path, member):
    """Where ``member``'s bytes lie in the archive, and its name's last copy."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = path.read_bytes()
    name = member.encode()
    local_name = info.header_offset + 30  # the fixed part of a local header
    extra = int.from_bytes(raw[local_name - 2 : local_name], "little")
    start = local_name + len(name) + extra
    return range(start, start + info.file_size), raw.rindex(name)


def flipped(raw, offset):
    out = bytearray(raw)
    out[offset] ^= 0x5A
    return bytes(out)


def test_restore_refuses_a_flip_in_the_data_and_in_a_name(saved):
    path, raw = saved
    member = '["0", "position"].npy'
    data, central_name = member_span(path, member)
    path.write_bytes(flipped(raw, data[-2]))  # inside the int32 position itself
    pipe, expected = served(2)
    with pytest.raises(CheckpointError) as info:
        restore(path, pipe)
    assert_clean(info, "the file is damaged or truncated", "Bad CRC-32", member)

    path.write_bytes(flipped(raw, central_name + 4))  # the ',' of '["0", ...'
    with pytest.raises(CheckpointError) as info:
        restore(path, pipe)
    assert_clean(info, f"cannot restore {str(path)!r}: ", "not a datarax checkpoint")
    assert next_batch(pipe) == expected


def test_every_sampled_byte_flip_is_refused_or_changes_nothing(saved):
    """Zip checksums cover the data: a flip loads only where zip ignores bytes."""
    path, raw = saved
    intact = build()
    restore(path, intact)
    expected = state_dict(intact)
    offsets = range(0, len(raw), max(1, len(raw) // 150))
    refused = 0
    for offset in offsets:
        path.write_bytes(flipped(raw, offset))
        pipe = build()
        try:
            restore(path, pipe)
        except CheckpointError as err:
            assert "allow_pickle" not in str(err)
            refused += 1
        else:
            np.testing.assert_equal(state_dict(pipe), expected)
    assert refused > len(offsets) // 2


def test_restore_names_the_file_when_its_state_does_not_fit(saved):
    path, _ = saved
    other = Pipeline(source=MemorySource({"x": np.arange(11)}), batch_size=BATCH)
    with pytest.raises(CheckpointError) as info:
        restore(path, other)
    assert_clean(
        info, f"cannot restore {str(path)!r}: ", "source length: 10 in the checkpoint"
    )


# -- malformed state dicts ---------------------------------------------------------


def good():
    pipe = build()
    next(iter(pipe))
    return state_dict(pipe)


def with_entry(path, value):
    """``good()`` with the leaf or dict at ``path`` ("0/position") replaced."""
    d = good()
    *parents, last = path.split("/")
    node = d
    for part in parents:
        node = node[part]
    node[last] = value
    return d


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (5, "a checkpoint state is a dict {'0': {...}, '1': ...}"),
        ([{"position": 0}], "got list [{'position': 0}]"),
        (None, "got NoneType None"),
        ({"0": 5}, "checkpoint entry 0 is int 5; expected the module's state"),
        ({"0": [1, 2]}, "checkpoint entry 0 is list [1, 2]"),
        ({0: {}}, "the checkpoint's entries are [0]; expected ['0']"),
        ({"a": {}}, "the checkpoint's entries are ['a']; expected ['0']"),
        ({"0": {}, "1": {}}, "the checkpoint holds 2 modules ['0', '1'], but 1 were"),
        (
            lambda: with_entry("0/position", {"value": 4}),
            "checkpoint entry 0/position is a dict, but the module holds an array",
        ),
        (
            lambda: with_entry("0/position", [[1], [2, 3]]),
            "checkpoint entry 0/position is list [[1], [2, 3]], not an array",
        ),
        (
            lambda: with_entry("0/position", np.array(4, dtype=object)),
            "checkpoint entry 0/position holds object (Python objects) 4, but the "
            "module holds int32 there, which takes integers only",
        ),
        (
            lambda: with_entry("0/position", "4"),
            "checkpoint entry 0/position holds <U1 (text) '4', but the module",
        ),
        (
            lambda: with_entry("0/key", np.array(["a", "b"])),
            "checkpoint entry 0/key holds <U1 (text) of shape (2,), but the module "
            "holds uint32",
        ),
        (
            lambda: with_entry("0/epoch", b"ab"),
            "checkpoint entry 0/epoch holds |S2 (bytes) b'ab'",
        ),
        (
            lambda: with_entry("0/key", jax.random.key(0)),
            "checkpoint entry 0/key is a typed PRNG key; a checkpoint stores keys as "
            "their uint32 key data",
        ),
        (
            lambda: {"0": {**good()["0"], 7: np.int32(0)}},
            "checkpoint entry 0 has the key 7 (int); state keys are strings",
        ),
        (
            lambda: {"0": {**good()["0"], "extra": np.int32(0)}},
            "checkpoint entry 0 does not match the module's state: missing [], "
            "unexpected ['extra']",
        ),
        (
            lambda: with_entry("0/__construction__", 3),
            "checkpoint entry 0/__construction__ is int 3; expected a dict from each "
            "pipeline's path",
        ),
        (
            lambda: with_entry("0/__construction__/.", [1]),
            "checkpoint entry 0/__construction__/. is list [1]",
        ),
        (
            lambda: with_entry("0/__construction__/./shuffle", np.array([1, 0])),
            "checkpoint entry 0/__construction__/./shuffle is an array of shape (2,) "
            "and dtype int64; expected one number, bool or text",
        ),
    ],
    ids=lambda x: None if callable(x) or isinstance(x, str) else repr(x)[:20],
)
def test_load_state_dict_refuses_a_malformed_dict_naming_the_entry(d, message):
    d = d() if callable(d) else d
    pipe, expected = served(3)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(d, pipe)
    assert_clean(info, message)
    assert isinstance(info.value, ValueError)
    assert next_batch(pipe) == expected


# -- tampered stream states and leaves ---------------------------------------------


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("position", np.int32(-4), "entry 0/position is -4; a stream position counts"),
        ("position", np.float64(3.5), "entry 0/position holds float64 3.5, but the"),
        (
            "position",
            np.float32(4.0),
            "entry 0/position holds float32 4.0, but the module holds int32 there, "
            "which takes integers only (a float is never rounded)",
        ),
        (
            "position",
            np.int64(2**31),
            "entry 0/position holds int64 value 2147483648, which does not fit the "
            "module's int32 (-2147483648..2147483647)",
        ),
        ("position", np.bool_(True), "entry 0/position holds bool True, but the"),
        ("position", np.zeros(1, np.int32), "entry 0/position has shape (1,), the"),
        (
            "epoch",
            np.int32(1),
            "entry 0/epoch is 1, but position 4 over a source of 10 records is in "
            "epoch 0 (a pipeline keeps epoch == position // len(source))",
        ),
        ("epoch", np.int32(-1), "entry 0/epoch is -1, but position 4"),
        (
            "key",
            lambda key: key.astype(np.int64),
            "entry 0/key holds int64 of shape (2,); a pipeline's key is stored as its "
            "raw uint32 key data",
        ),
        ("key", lambda key: key.astype(np.float32), "entry 0/key holds float32 of"),
        ("key", lambda key: key[:1], "entry 0/key has shape (1,), the module expects"),
    ],
)
def test_a_tampered_stream_state_is_refused_and_nothing_is_written(
    entry, value, message
):
    d = good()
    d["0"][entry] = value(d["0"][entry]) if callable(value) else value
    pipe, expected = served(2)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(d, pipe)
    assert_clean(info, "checkpoint " + message)
    assert next_batch(pipe) == expected


class Trainer(nnx.Module):
    """A pipeline nested in a module, beside a model: paths name both."""

    def __init__(self):
        self.data = build()
        self.model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(1))
        self.frozen = nnx.Variable(np.array([True, False]))


def test_a_nested_pipeline_names_its_path_and_no_module_is_written():
    source = Trainer()
    next(iter(source.data))
    d = state_dict(build(), source)
    d["1"]["data"]["position"] = np.int32(8)  # epoch 0 kept: 8 // 10 == 0 is fine
    d["1"]["data"]["epoch"] = np.int32(1)
    first, second = build(), Trainer()
    kernel = np.asarray(second.model.kernel[...]).copy()
    with pytest.raises(CheckpointError) as info:
        load_state_dict(d, first, second)
    assert_clean(info, "checkpoint entry 1/data/epoch is 1, but position 8 over")
    np.testing.assert_array_equal(second.model.kernel[...], kernel)
    assert int(first.position[...]) == 0 and int(second.data.position[...]) == 0


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        (
            "model/kernel",
            np.full((2, 3), 1e300),
            "entry 1/model/kernel holds float64 value 1e+300, which overflows the "
            "module's float32",
        ),
        (
            "model/bias",
            np.array([True, False, True]),
            "entry 1/model/bias holds bool of shape (3,), but the module holds float32 "
            "there, which takes floats or integers only",
        ),
        (
            "model/bias",
            np.array([2**24 + 1, 0, 0]),
            "entry 1/model/bias holds int64 value 16777217, which the module's float32 "
            "cannot hold exactly",
        ),
        (
            "frozen",
            np.array([1, 0], np.int32),
            "entry 1/frozen holds int32 of shape (2,), but the module holds bool "
            "there, which takes bools only",
        ),
        (
            "dropout/rngs/count",
            np.float32(3.0),
            "entry 1/dropout/rngs/count holds float32 3.0, but the module holds "
            "uint32 there, which takes integers only (a float is never rounded)",
        ),
        (
            "dropout/rngs/count",
            np.int64(-1),
            "entry 1/dropout/rngs/count holds int64 value -1, which does not "
            "fit the module's uint32 (0..4294967295)",
        ),
        (
            "dropout/rngs/key",
            np.array([0, 1], np.int64),
            "entry 1/dropout/rngs/key holds int64 of shape (2,), but a PRNG "
            "key is stored as its uint32 key data of shape (2,)",
        ),
        (
            "dropout/rngs/key",
            np.zeros(3, np.uint32),
            "entry 1/dropout/rngs/key holds uint32 of shape (3,), but a PRNG",
        ),
    ],
)
def test_a_model_leaf_of_another_dtype_kind_or_range_is_refused(entry, value, message):
    d = state_dict(build(), Trainer())
    with_path = d["1"]
    *parents, last = entry.split("/")
    for part in parents:
        with_path = with_path[part]
    with_path[last] = value
    target = Trainer()
    before = state_dict(target)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(d, build(), target)
    assert_clean(info, "checkpoint " + message)
    np.testing.assert_equal(state_dict(target), before)


def test_lossless_conversions_are_accepted():
    """Python ints, int64 that fit, and float64 parameters load as before."""
    pipe = build()
    it = iter(pipe)
    next(it), next(it), next(it)  # position 12: epoch 1
    d = state_dict(pipe, Trainer())
    expected = next_batch(pipe)
    d["0"]["position"], d["0"]["epoch"] = 12, np.int64(1)
    d["1"]["model"]["kernel"] = d["1"]["model"]["kernel"].astype(np.float64)
    d["1"]["dropout"]["rngs"]["count"] = np.int64(5)
    restored, trainer = build(), Trainer()
    load_state_dict(d, restored, trainer)
    assert next_batch(restored) == expected
    assert trainer.model.kernel[...].dtype == jnp.float32
    assert int(trainer.dropout.rngs.count[...]) == 5


def test_bfloat16_parameters_round_trip_through_a_file(tmp_path):
    """NumPy files bfloat16 as raw void bytes; restore reads them back as such."""
    model = nnx.Linear(2, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    save(tmp_path / "ck.npz", model)
    other = nnx.Linear(2, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
    restore(tmp_path / "ck.npz", other)
    assert other.kernel[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(other.kernel[...], np.float32),
        np.asarray(model.kernel[...], np.float32),
    )


# -- save --------------------------------------------------------------------------


def test_save_into_a_missing_folder_names_the_path_not_a_temporary(tmp_path):
    path = tmp_path / "run" / "ck.npz"
    with pytest.raises(FileNotFoundError) as info:
        save(path, build())
    assert info.exconly() == (
        f"FileNotFoundError: [Errno 2] cannot save {str(path)!r}: its folder "
        f"{str(path.parent)!r} does not exist; create it first "
        "(Path(folder).mkdir(parents=True))."
    )
    assert list(tmp_path.iterdir()) == []


class Holder(nnx.Module):
    def __init__(self):
        self.notes = nnx.Variable(np.array([None, 3], dtype=object))


def test_save_refuses_python_objects_it_could_not_restore(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.raises(CheckpointError) as info:
        save(path, build(), Holder())
    assert_clean(
        info,
        f"cannot save {str(path)!r}: state entry 1/notes holds Python objects "
        "(array([None, 3], dtype=object)); a checkpoint stores numeric arrays only",
    )
    assert list(tmp_path.iterdir()) == []


# -- temporaries that killed saves leave -------------------------------------------


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@POSIX
def test_save_removes_stale_temporaries_of_its_target_only(tmp_path):
    path = tmp_path / "ck.npz"
    save(path, build())
    dead = dead_pid()
    live = os.getppid()  # the process that started this one: alive, not us
    old = time.time() - STALE_AFTER_S - 60
    files = {
        # name -> (seconds since last write, removed by the next save?)
        f".ck.npz.{HOST}.{dead}.k2j4x0_a.tmp": (None, True),  # its process is gone
        f".ck.npz.{HOST}.{os.getpid()}.zz9q1b3c.tmp": (None, True),  # ours, idle
        f".ck.npz.{HOST}.{live}.a1b2c3d4.tmp": (None, False),  # may be writing
        f".ck.npz.{HOST}.{live}.e5f6g7h8.tmp": (old, True),  # untouched an hour
        f".ck.npz.elsewhere.{dead}.i9j0k1l2.tmp": (None, False),  # cannot ask
        f".ck.npz.elsewhere.{dead}.m3n4o5p6.tmp": (old, True),
        ".ck.npz.q7r8s9t0.tmp": (None, False),  # legacy name: no pid to ask
        ".ck.npz.u1v2w3x4.tmp": (old, True),
        f".ck.npz.old.{HOST}.{dead}.y5z6a7b8.tmp": (None, False),  # another target
        f".other.npz.{HOST}.{dead}.c9d0e1f2.tmp": (old, False),
        f"ck.npz.{HOST}.{dead}.g3h4i5j6.tmp": (old, False),  # not hidden: not ours
    }
    for name, (mtime, _) in files.items():
        (tmp_path / name).write_bytes(b"partial")
        if mtime is not None:
            os.utime(tmp_path / name, (mtime, mtime))
    pipe = build()
    next(iter(pipe))
    save(path, pipe)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"ck.npz"} | {n for n, (_, gone) in files.items() if not gone}
    restored = build()
    restore(path, restored)
    assert int(restored.position[...]) == BATCH


def test_concurrent_saves_in_one_process_never_remove_each_others_files(tmp_path):
    path = tmp_path / "ck.npz"
    pipes = [build(), build()]
    errors = []

    def keep_saving(pipe):
        try:
            for _ in range(40):
                save(path, pipe)
        except BaseException as err:  # reported below, with the thread's traceback
            errors.append(err)

    threads = [threading.Thread(target=keep_saving, args=(p,)) for p in pipes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


# -- saves killed at random moments ------------------------------------------------

#: Imports datarax once, then forks one saver per "go" line: a fork costs
#: milliseconds where a fresh interpreter costs seconds of imports. It forks before
#: JAX starts its backend (no arrays yet), so every child starts its own.
ZYGOTE = textwrap.dedent(
    """
    import os, sys, traceback
    import numpy as np
    from datarax import Pipeline
    from datarax.checkpoint import restore, save
    from datarax.sources import MemorySource

    def say(line):
        os.write(1, (line + "\\n").encode())

    def keep_saving(path, log):
        pipe = Pipeline(source=MemorySource({"x": np.arange(10)}),
                        batch_size=4, shuffle=True, num_epochs=None)
        restore(path, pipe)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        # One write() per line: a kill cannot split it.
        os.write(fd, b"%d\\n" % int(pipe.position[...]))
        ready = False
        while True:
            pipe.step()  # the next batch: compiles less than iteration does
            save(path, pipe)
            os.write(fd, b"%d\\n" % int(pipe.position[...]))
            if not ready:  # compiled and saved once: from now on any moment
                say(f"ready {os.getpid()}")
                ready = True

    say("up")
    for line in sys.stdin:
        command, *args = line.split()
        if command == "go":
            if os.fork() == 0:
                try:
                    keep_saving(*args)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(1)
        elif command == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            say(f"reaped {args[0]} {status}")
    """
)


class Zygote:
    """The forking server above, driven line by line, with a deadline per line."""

    def __init__(self, tmp_path):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            # Children after the first load their few programs from disk.
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
        self.errors = tmp_path / "zygote.err"
        with open(self.errors, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.expect("up")

    def send(self, line):
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()

    def expect(self, prefix, timeout=60.0):
        """The words after ``prefix`` on the next line that starts with it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.buffer.split(b"\n")
            for index, line in enumerate(lines[:-1]):
                if line.decode().startswith(prefix):
                    self.buffer = b"\n".join(lines[:index] + lines[index + 1 :])
                    return line.decode()[len(prefix) :].split()
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                pytest.fail(f"no {prefix!r} line: {self.errors.read_text()[-3000:]}")
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                pytest.fail(f"the zygote ended: {self.errors.read_text()[-3000:]}")
            self.buffer += chunk

    def close(self, children=()):
        """Ends the zygote, and kills ``children`` a failed test left running."""
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        finally:
            self.process.kill()  # a no-op once it has ended
            self.process.stdout.close()
            self.selector.close()


def saved_positions(log):
    return [int(line) for line in log.read_text().split("\n")[:-1]]


@POSIX
def test_saves_killed_at_random_moments_leave_a_checkpoint_that_restores(tmp_path):
    """20 SIGKILLs at seeded random moments: restore always gets a saved position.

    Each child restores the checkpoint, logs that position, then in a loop steps
    the pipeline a batch, saves, and logs the new position. Killed between the
    rename and its log line, the file is one batch past the last logged position.
    """
    rng = random.Random(20)
    path, log = tmp_path / "ck.npz", tmp_path / "saved.log"
    save(path, build())
    log.write_text("0\n")
    zygote = Zygote(tmp_path)
    left_behind, running = 0, set()
    try:
        for _ in range(20):
            zygote.send(f"go {path} {log}")
            pid = int(zygote.expect("ready ")[0])
            running.add(pid)
            time.sleep(rng.uniform(0.0, 0.1))
            os.kill(pid, signal.SIGKILL)
            zygote.send(f"reap {pid}")
            status = int(zygote.expect(f"reaped {pid} ")[0])
            running.discard(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            left_behind += any(p.suffix == ".tmp" for p in tmp_path.iterdir())
            restored = build()
            restore(path, restored)
            last = saved_positions(log)[-1]
            assert int(restored.position[...]) in (last, last + BATCH)
    finally:
        zygote.close(running)
    position = int(restored.position[...])
    reference = build()
    it = iter(reference)
    for _ in range(position // BATCH):
        next(it)
    assert next_batch(restored) == next_batch(reference)
    save(path, restored)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []
    print(f"{left_behind} of 20 kills left a temporary; final position {position}")
