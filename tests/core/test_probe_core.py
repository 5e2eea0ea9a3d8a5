"""Bad inputs an adversarial probe still got through (issue 10), now refused.

Silent ones first (wrong records served without a word), then raw errors from
NumPy, JAX or Python that now name the argument and the fix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.checkpoint import CheckpointError, restore, save, state_dict
from datarax.core import IterableSource, convert_for_jax
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


def source(n=10):
    return MemorySource({"x": np.arange(n, dtype=np.int32)})


def make(**kwargs):
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("num_epochs", None)
    return Pipeline(source=source(8), **kwargs)


# -- silent: get_batch_at positions -------------------------------------------------


@pytest.mark.parametrize("start", [-1, -11, np.int64(-3), 2**31, np.int64(2**40)])
def test_a_start_outside_the_stream_positions_is_refused(start):
    with pytest.raises(ValueError, match="start must be a stream position from 0"):
        source().get_batch_at(start, 3)


def test_the_last_int32_position_is_served():
    records = source().get_batch_at(2**31 - 1, 1)["x"]
    assert records.tolist() == [(2**31 - 1) % 10]


# -- silent: casts that change values -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "effect"),
    [
        (np.arange(3) + 0.7, np.int32, "be truncated to an integer"),
        (np.array([1.0, np.nan, 3.0]), np.int32, "become an arbitrary integer"),
        (np.array([0, 2, 1]), np.bool_, "become True or False"),
        (np.array([1 + 1j]), np.float32, "lose its imaginary part"),
        (np.array([2**32 - 1], np.uint32), np.int32, "wrap around"),
    ],
    ids=["fraction", "nan", "int-to-bool", "complex", "uint32"],
)
def test_a_cast_that_changes_a_value_is_refused(values, dtype, effect):
    with pytest.raises(ValueError) as info:
        convert_for_jax(values, np.dtype(dtype), owner="S", field="f")
    assert effect in info.exconly() and "S: field 'f' holds" in info.exconly()


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([1.0, 2.0, -3.0]), np.int32),
        (np.array([0, 1, 1]), np.bool_),
        (np.array([1 + 0j, 2]), np.float32),
        (np.array([7], np.uint32), np.int32),
        (np.array([1.5], ">f8"), np.float64),
    ],
    ids=["whole-floats", "zero-one", "real-complex", "small-uint", "big-endian"],
)
def test_a_cast_that_keeps_every_value_is_served(values, dtype):
    out = convert_for_jax(values, np.dtype(dtype), owner="S", field="f")
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, values.real.astype(dtype))


def chunked(chunks, spec):
    """An iterable source of 4 records that yields ``chunks`` in every epoch."""

    class Chunks(IterableSource):
        length = 4
        element_spec = spec

        def iter_epoch(self, epoch, key_data, skip):
            yield from chunks

    return Chunks()


def test_an_iterable_chunk_of_floats_for_an_int_spec_is_refused():
    spec = {"x": jax.ShapeDtypeStruct((), jnp.int32)}
    chunks = [{"x": np.arange(4) + 0.7}]
    with pytest.raises(ValueError) as info:
        list(Pipeline(source=chunked(chunks, spec), batch_size=2))
    assert "field 'x' holds 0.7 (record 0)" in info.exconly()


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([[np.arange(4)]], "iter_epoch yielded a list"),
        ([{"x": np.asarray(3)}], "field 'x' has records of shape ()"),
    ],
    ids=["list", "0-d"],
)
def test_malformed_iterable_chunks_are_named(chunks, message):
    spec = {"x": jax.ShapeDtypeStruct((), jnp.int32)}
    with pytest.raises((TypeError, ValueError), match=message):
        list(Pipeline(source=chunked(chunks, spec), batch_size=2))


# -- silent or misattributed: reads that contradict the element spec ---------------


class Renamed(MemorySource):
    def read(self, plan, start, batch_size, key):
        return {"z": super().read(plan, start, batch_size, key)["x"]}


class Recast(MemorySource):
    def read(self, plan, start, batch_size, key):
        x = super().read(plan, start, batch_size, key)["x"]
        return {"x": x.astype(jnp.float32)}


class OneMore(MemorySource):
    def read(self, plan, start, batch_size, key):
        return super().read(plan, start, batch_size + 1, key)


class Nothing(MemorySource):
    def read(self, plan, start, batch_size, key):
        return None


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (Renamed, "Renamed.read returned the fields ['z'], but its element_spec"),
        (Recast, "Recast.read returned field 'x' as float32[2] for 2 records"),
        (OneMore, "OneMore.read returned field 'x' as int32[3] for 2 records"),
        (Nothing, "Nothing.read returned a NoneType"),
    ],
    ids=["fields", "dtype", "count", "none"],
)
@pytest.mark.parametrize("mode", ["iter", "step", "scan"])
def test_a_read_that_contradicts_the_spec_names_the_source(kind, message, mode):
    pipe = Pipeline(source=kind({"x": np.arange(8, dtype=np.int32)}), batch_size=2)
    calls = {
        "iter": lambda: next(iter(pipe)),
        "step": pipe.step,
        "scan": lambda: pipe.scan(lambda b: b["x"], length=2),
    }
    with pytest.raises((TypeError, ValueError), match=message.replace("[", r"\[")):
        calls[mode]()


# -- raw: scan, stages, options -----------------------------------------------------


@pytest.mark.parametrize(
    ("step_fn", "init_carry", "message"),
    [
        (lambda c, b: (jnp.zeros(3), b["x"]), jnp.zeros(()), r"carry as float32\[3\]"),
        (lambda c, b: (c.astype(jnp.int32), 0), jnp.zeros(()), r"carry as int32\[\]"),
        (lambda c, b: ((c, c), 0), jnp.zeros(()), "returned a carry of structure"),
        (lambda c, b: (c, b["x"]), "abc", "init_carry is a str"),
    ],
    ids=["shape", "dtype", "structure", "str-carry"],
)
def test_scan_carries_keep_their_type(step_fn, init_carry, message):
    pipe = make()
    with pytest.raises(TypeError, match=message):
        pipe.scan(step_fn, length=2, init_carry=init_carry)
    assert int(pipe.position[...]) == 0


def test_scan_outputs_must_be_arrays():
    with pytest.raises(TypeError, match="step_fn returned a str in its output"):
        make().scan(lambda b: "loss", length=2)


def test_a_carry_of_python_numbers_and_none_outputs_still_work():
    carry, outs = make().scan(
        lambda c, b: (c + b["x"].sum(), None), length=2, init_carry=0
    )
    assert int(carry) == 6 and outs is None


def test_a_run_past_the_int32_positions_is_refused_before_it_runs():
    pipe = make()
    with pytest.raises(OverflowError, match="passed 2\\*\\*31 - 1 records"):
        pipe.scan(lambda b: b["x"], length=2**31)
    assert int(pipe.position[...]) == 0


def test_a_class_given_as_a_stage_is_refused():
    with pytest.raises(TypeError, match="is the class ElementOperator, not an"):
        make(stages=[ElementOperator])


def test_rngs_need_a_default_stream():
    with pytest.raises(ValueError, match="rngs has no default stream"):
        make(rngs=nnx.Rngs(params=0))
    make(rngs=nnx.Rngs(default=0, params=1))  # a default and others: fine


def test_a_pipeline_called_on_an_array_says_what_it_takes():
    with pytest.raises(TypeError, match="a pipeline is called on a batch"):
        make()(jnp.zeros(3))


@pytest.mark.parametrize(("length", "error"), [(-3, ValueError), (5.0, TypeError)])
def test_a_source_length_must_be_a_positive_int(length, error):
    class Odd(MemorySource):
        def __len__(self):
            return length

    with pytest.raises(error, match="len"):
        Pipeline(source=Odd({"x": np.arange(4)}), batch_size=2)


def test_a_dag_node_of_the_wrong_arity_counts_its_inputs():
    with pytest.raises(TypeError, match="called with 1 positional argument"):
        Pipeline.from_dag(
            source=source(),
            nodes={"a": lambda x, y: x},
            edges={"a": []},
            sink="a",
            batch_size=2,
        )


@pytest.mark.parametrize("preds", [None, {"b"}], ids=["none", "set"])
def test_edges_that_are_not_lists_get_no_nonsense_fix(preds):
    with pytest.raises(TypeError) as info:
        Pipeline.from_dag(
            source=source(), nodes={"a": abs}, edges={"a": preds}, sink="a",
            batch_size=2,
        )  # fmt: skip
    assert "must be a list of node names" in info.exconly()
    assert "= [" not in info.exconly()


# -- raw: checkpoint paths ----------------------------------------------------------


def test_checkpoint_paths_and_modules_are_checked(tmp_path):
    pipe = make()
    with pytest.raises(TypeError, match="save takes the checkpoint's path first"):
        save(pipe, tmp_path / "c.npz")
    with pytest.raises(TypeError, match="restore takes the checkpoint's path first"):
        restore(3, pipe)
    with pytest.raises(CheckpointError, match="it is a folder; save to a file"):
        save(tmp_path, pipe)
    with pytest.raises(TypeError, match="save got no modules"):
        save(tmp_path / "c.npz")
    with pytest.raises(TypeError, match="state_dict got no modules"):
        state_dict()
    assert list(tmp_path.iterdir()) == []


# -- second probe run: what was left --------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "message"),
    [({}, "returned a batch with no fields"), ({0: 1}, "non-str field names [0]")],
    ids=["empty", "int-keys"],
)
def test_a_stage_must_return_named_fields(returned, message):
    pipe = make(stages=[lambda batch: returned])
    with pytest.raises(TypeError) as info:
        pipe.step()
    assert message in info.exconly()


def test_an_error_inside_a_stage_names_the_stage():
    def broken(batch):
        return {"x": float(batch["x"][0]) + batch["x"]}

    with pytest.raises(jax.errors.ConcretizationTypeError) as info:
        make(stages=[broken]).step()
    notes = "\n".join(info.value.__notes__)
    assert "datarax: raised in stage 0 (broken)" in notes


@pytest.mark.parametrize("spec", [{"x": 3}, [("x", 3)]], ids=["int", "list"])
def test_an_element_spec_of_the_wrong_form_is_named(spec):
    class Odd(MemorySource):
        element_spec = spec

    with pytest.raises(TypeError, match="the element_spec of Odd must map"):
        Pipeline(source=Odd({"x": np.arange(4)}), batch_size=2)
