"""Resume as a property: a restored pipeline serves the records the original would.

The acceptance test of issue 10 ("checkpoints that cannot lie"). With
``num_epochs=None`` a pipeline serves one endless record stream. Stop it after
any number of calls (epoch boundaries included) in any mode and take its state;
a freshly built pipeline of the same construction but another batch size,
restored from that state (a ``state_dict`` that the caller then overwrites, or a
file), serves from the same record on: the same labels and, through a stochastic
stage, the same per-record keys, by iteration, ``step`` or ``scan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import pytest
from budget import examples
from flax import nnx
from hypothesis import event, given, settings, strategies as st

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, restore, save, state_dict
from datarax.operators import ElementOperator
from datarax.sources import MemorySource, MixDataSourcesNode, StreamingDiskSource

# 300 examples in the first test pass, 3/8 of them in the second (budget.py).
# Once its programs are compiled
# an example costs 30-40 ms, while each (construction, batch size, mode) compiles
# a program of its own in 0.05-2.4 s. So every draw comes from the small finite
# sets below: all examples share 33 programs (about 18 s of compiling).
EXAMPLES = examples(300)


def tag(record, key):
    # The record's key itself rather than a draw from it: the key is what must
    # depend on the seed, the operator, the epoch and the position only, and it
    # compiles in half the time of a jax.random.uniform on top.
    return {"label": record["label"], "key": jax.random.key_data(key)}


def memory(length, first):
    return MemorySource({"label": np.arange(first, first + length, dtype=np.int32)})


def mix(sources, weights, block_size):
    return MixDataSourcesNode(sources, weights, block_size=block_size)


class Construction(NamedTuple):
    """One way to build a pipeline, and the batch sizes and modes drawn for it.

    ``modes[batch_size]`` lists the modes tried at that batch size: ``"iter"``,
    ``"step"`` or ``"scanL"`` (``scan`` of length L). Each (construction, batch
    size, mode) compiles one program, so the lists are short and vary between
    constructions: together they cover every mode, scan length and batch size.
    """

    name: str
    source: Callable[[dict], object]  # disk sources -> a fresh source
    length: int
    shuffle: bool
    stochastic: bool
    modes: dict[int, tuple[str, ...]]


# Labels tell the sources apart: memory 0.. and 300.., disk 100.. and 200...
# Stochastic stages compile 5-10x slower than plain ones (the per-record keys)
# and iteration over a disk source runs 16 batches per program: the stochastic
# disk construction is therefore fed by step and scan only.
CONSTRUCTIONS = (
    Construction(
        "memory, shuffled, stochastic",
        lambda disk: memory(7, 0),
        7,
        True,
        True,
        {3: ("iter", "step", "scan2"), 5: ("iter", "scan3")},
    ),
    Construction(
        "memory",
        lambda disk: memory(12, 300),
        12,
        False,
        False,
        {
            1: ("iter", "step", "scan3"),
            4: ("iter", "step", "scan1"),
            5: ("iter", "scan2"),
        },
    ),
    Construction(
        "disk, shuffled",
        lambda disk: disk[12],
        12,
        True,
        False,
        {
            1: ("iter", "step", "scan2"),
            3: ("iter", "step", "scan3"),
            4: ("iter", "scan1"),
        },
    ),
    Construction(
        "disk, stochastic",
        lambda disk: disk[7],
        7,
        False,
        True,
        {4: ("step", "scan2"), 5: ("step", "scan1")},
    ),
    Construction(
        "mix of 2 memory, stochastic",
        lambda disk: mix([memory(7, 0), memory(7, 300)], [1, 1], 4),
        14,
        False,
        True,
        {1: ("iter", "step"), 4: ("step", "scan2")},
    ),
    Construction(
        "mix of 3 (memory, disk, memory), shuffled",
        lambda disk: mix([memory(7, 0), disk[7], memory(7, 300)], [2, 1, 1], 3),
        21,
        True,
        False,
        {1: ("iter", "step"), 3: ("step", "scan3")},
    ),
)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """Disk sources of 7 and 12 records.

    Opened once for all examples: a StreamingDiskSource object is part of the
    static structure that compiled programs are keyed on, so a new one, even of
    the same folder, compiles every program again.
    """
    sources = {}
    for length, first in ((7, 100), (12, 200)):
        folder = tmp_path_factory.mktemp(f"disk{length}")
        labels = np.arange(first, first + length, dtype=np.int32)
        np.save(folder / "label.npy", labels)
        sources[length] = StreamingDiskSource(folder)
    return sources


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints") / "ck.npz"


class Case(NamedTuple):
    construction: str
    seed: int
    batch_size: int
    new_batch_size: int  # of the restored pipeline
    stop_mode: str
    stop_calls: int  # calls in stop_mode before the checkpoint
    at_boundary: bool  # stop_calls end exactly on an epoch boundary
    reference_mode: str  # how the original goes on after the checkpoint
    via_file: bool  # save/restore, else state_dict/load_state_dict
    resume_mode: str  # how the restored pipeline goes on


def records_per_call(mode, batch_size):
    return batch_size * (int(mode[4:]) if mode.startswith("scan") else 1)


@st.composite
def cases(draw):
    construction = draw(st.sampled_from(CONSTRUCTIONS))
    sizes = sorted(construction.modes)
    batch_size = draw(st.sampled_from(sizes))
    new_batch_size = draw(st.sampled_from([b for b in sizes if b != batch_size]))
    stop_mode = draw(st.sampled_from(construction.modes[batch_size]))
    at_boundary = draw(st.booleans())
    if at_boundary:  # the first or second boundary that a call can end on
        per_call = records_per_call(stop_mode, batch_size)
        every = math.lcm(per_call, construction.length) // per_call
        stop_calls = every * draw(st.integers(1, 2))
    else:
        stop_calls = draw(st.integers(0, 7))
    return Case(
        construction=construction.name,
        seed=draw(st.integers(0, 1000)),
        batch_size=batch_size,
        new_batch_size=new_batch_size,
        stop_mode=stop_mode,
        stop_calls=stop_calls,
        at_boundary=at_boundary,
        reference_mode=draw(st.sampled_from(construction.modes[batch_size])),
        via_file=draw(st.booleans()),
        resume_mode=draw(st.sampled_from(construction.modes[new_batch_size])),
    )


def build(construction, disk, batch_size, seed):
    stages = [ElementOperator(tag, stochastic=True)] if construction.stochastic else []
    return Pipeline(
        source=construction.source(disk),
        stages=stages,
        batch_size=batch_size,
        shuffle=construction.shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


def identity(batch):  # module level: scan programs are cached per step_fn
    return batch


def read(pipe, mode, calls, iterator=None):
    """The records served by ``calls`` calls in ``mode``, field by field."""
    if mode == "iter":
        iterator = iter(pipe) if iterator is None else iterator
        batches = [next(iterator) for _ in range(calls)]
    elif mode == "step":
        batches = [pipe.step() for _ in range(calls)]
    else:
        length = int(mode[4:])
        outs = [pipe.scan(identity, length=length) for _ in range(calls)]
        batches = [{k: v.reshape(-1, *v.shape[2:]) for k, v in o.items()} for o in outs]
    if not batches:
        return {}
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def overwrite(tree):
    """Changes every numeric array of a state dict in place, key data included."""
    for value in tree.values():
        if isinstance(value, dict):
            overwrite(value)
        elif value.dtype == np.bool_:
            np.logical_not(value, out=value)
        elif value.dtype.kind in "iuf":
            value += 1


def stream_state(pipe):
    return int(pipe.position[...]), int(pipe.epoch[...])


@settings(max_examples=EXAMPLES)
@given(case=cases())
def test_restored_pipeline_serves_the_same_records_from_the_same_position(
    case, disk, checkpoint_path
):
    construction = next(c for c in CONSTRUCTIONS if c.name == case.construction)
    event(construction.name)
    event(f"stop at an epoch boundary: {case.at_boundary}")
    original = build(construction, disk, case.batch_size, case.seed)
    length = len(original.source)
    assert length == construction.length
    iterator = iter(original) if case.stop_mode == "iter" else None
    read(original, case.stop_mode, case.stop_calls, iterator)
    position = case.stop_calls * records_per_call(case.stop_mode, case.batch_size)
    assert stream_state(original) == (position, position // length)
    if case.at_boundary:
        assert position % length == 0

    # The state at the stop, then the reference: two epochs' worth of records
    # from the original, which goes on as if nothing happened.
    d = state_dict(original)
    if case.via_file:
        save(checkpoint_path, original)
    count = 2 * length
    calls = -(-count // records_per_call(case.reference_mode, case.batch_size))
    if case.reference_mode != "iter":
        iterator = None
    expected = read(original, case.reference_mode, calls, iterator)

    restored = build(construction, disk, case.new_batch_size, case.seed)
    if case.via_file:
        restore(checkpoint_path, restored)
    else:
        load_state_dict(d, restored)
        overwrite(d)  # the caller reuses the dict: the pipeline owns its state
    assert stream_state(restored) == (position, position // length)
    calls = -(-count // records_per_call(case.resume_mode, case.new_batch_size))
    got = read(restored, case.resume_mode, calls)
    assert set(got) == set(expected)
    for field in expected:
        np.testing.assert_array_equal(
            got[field][:count], expected[field][:count], err_msg=field
        )
