"""Misuse of the pipeline's API is a named error that shows the expected form.

Each case here once gave wrong data without a word (one stochastic operator at
two places, a pipeline closed over by the user's jit, a step that returns a bare
array with ``init_carry``) or an error from deep inside Python or JAX (issue 10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


def source(n=8):
    return MemorySource({"x": np.arange(n, dtype=np.float32)})


def make(**kwargs):
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("num_epochs", None)
    return Pipeline(source=source(), **kwargs)


def noise(field):
    return ElementOperator(
        lambda r, key: {**r, field: jax.random.uniform(key)}, stochastic=True
    )


class Model(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(()))


class Counter(nnx.Module):
    def __init__(self):
        self.count = nnx.Variable(jnp.zeros((), jnp.int32))


# -- one stochastic operator instance, one place -----------------------------------


def test_one_stochastic_instance_at_two_stages_is_refused():
    aug = noise("a")
    with pytest.raises(ValueError) as info:
        make(stages=[aug, aug])
    assert "at stage 1 is the same instance as at stage 0" in info.exconly()
    assert "nnx.clone(op)" in info.exconly()


def test_one_stochastic_instance_at_two_dag_nodes_is_refused():
    aug = noise("a")
    with pytest.raises(ValueError, match="DAG node 'second' is the same instance"):
        Pipeline.from_dag(
            source=source(),
            nodes={"first": aug, "second": aug},
            edges={"first": [], "second": ["first"]},
            sink="second",
            batch_size=2,
        )


def test_a_subclass_calling_one_instance_twice_is_refused_at_the_first_batch():
    class Twice(Pipeline):
        def __init__(self):
            super().__init__(source=source(), batch_size=2)
            self.aug = noise("a")

        def __call__(self, batch):
            return self.aug(self.aug(batch))

    with pytest.raises(ValueError, match="ran twice on one batch"):
        next(iter(Twice()))


def test_two_instances_draw_their_own_randomness():
    first = noise("a")
    second = nnx.clone(first)
    pipe = make(
        stages=[first, ElementOperator(lambda r, k: {**r, "b": r["a"]}), second]
    )
    batch = pipe.step()
    # The second instance overwrote "a" with its own draw; "b" kept the first's.
    assert not np.allclose(batch["a"], batch["b"])
    shared = make(stages=[noise("a")]).step()["a"]
    np.testing.assert_array_equal(batch["b"], shared)


def test_a_stateless_function_may_appear_twice():
    def double(batch):
        return {"x": batch["x"] * 2}

    pipe = make(stages=[double, double])
    np.testing.assert_array_equal(pipe.step()["x"], [0.0, 4.0])


# -- a pipeline closed over by the user's jit ----------------------------------------


@pytest.mark.parametrize("jit", [nnx.jit, jax.jit], ids=["nnx.jit", "jax.jit"])
@pytest.mark.parametrize("use", ["step", "scan", "iter"])
def test_a_pipeline_closed_over_by_a_jit_is_refused(jit, use):
    pipe = make()
    calls = {
        "step": lambda: pipe.step()["x"],
        "scan": lambda: pipe.scan(lambda b: b["x"], length=2),
        "iter": lambda: next(iter(pipe))["x"],
    }
    with pytest.raises(TypeError) as info:
        jit(calls[use])()
    assert "does not take the pipeline as an argument" in info.exconly()
    assert "def train_step(model, pipe)" in info.exconly()
    assert int(pipe.position[...]) == 0


def test_a_pipeline_passed_to_nnx_jit_moves_on():
    pipe = make()

    @nnx.jit
    def take(pipe):
        return pipe.step()["x"]

    served = [np.asarray(take(pipe)).tolist() for _ in range(3)]
    assert served == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert int(pipe.position[...]) == 6
    assert np.asarray(pipe.step()["x"]).tolist() == [6.0, 7.0]


def test_scan_inside_nnx_jit_with_the_pipeline_as_argument():
    pipe = make()

    @nnx.jit
    def run(pipe):
        return pipe.scan(lambda b: b["x"], length=2)

    np.testing.assert_array_equal(run(pipe), [[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(run(pipe), [[4.0, 5.0], [6.0, 7.0]])


# -- scan misuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_fn", "returned"),
    [
        (lambda carry, b: b["x"], "an array of shape (2,)"),
        (lambda carry, b: "done", "a str"),
        (lambda carry, b: (carry, b["x"], 1), "a tuple of 3"),
    ],
    ids=["bare-array", "str", "triple"],
)
def test_a_step_with_carry_must_return_carry_and_out(step_fn, returned):
    pipe = make()
    with pytest.raises(TypeError) as info:
        pipe.scan(step_fn, length=2, init_carry=jnp.zeros(()))
    message = info.exconly()
    assert "step_fn must return a tuple (carry, out)" in message
    assert "step_fn(carry, batch) -> (carry, out)" in message
    assert returned in message
    assert int(pipe.position[...]) == 0


def test_a_step_with_carry_may_return_a_list():
    pipe = make()
    carry, outs = pipe.scan(
        lambda c, b: [c + b["x"].sum(), b["x"]], length=2, init_carry=jnp.zeros(())
    )
    assert float(carry) == 6.0
    np.testing.assert_array_equal(outs, [[0.0, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize(
    ("kwargs", "form"),
    [
        ({}, "step_fn(batch) -> out"),
        ({"modules": (Model(),)}, "step_fn(modules[0], batch) -> out"),
        ({"init_carry": jnp.zeros(())}, "step_fn(carry, batch) -> (carry, out)"),
    ],
    ids=["plain", "module", "carry"],
)
def test_a_step_of_the_wrong_arity_is_named_before_tracing(kwargs, form):
    with pytest.raises(TypeError) as info:
        make().scan(lambda a, b, c, d: a, length=1, **kwargs)
    assert f"Pipeline.scan calls {form}" in info.exconly()


def test_modules_must_be_a_tuple():
    with pytest.raises(TypeError) as info:
        make().scan(lambda m, b: b["x"], length=1, modules=Model())
    assert "write modules=(model,)" in info.exconly()


def test_an_error_in_the_step_names_how_scan_called_it():
    def step(model, counter, batch):
        return model.w[...] * batch["x"] + counter.count[...]

    with pytest.raises(AttributeError) as info:
        make().scan(step, length=1, modules=(Counter(), Model()))
    notes = "\n".join(info.value.__notes__)
    assert "step_fn(modules[0], modules[1], batch) -> out" in notes
    assert "in the order given (Counter, Model)" in notes


# -- stages and operators ------------------------------------------------------------


def test_a_per_record_function_given_as_a_stage_is_refused():
    def jitter(record, key):
        return record

    with pytest.raises(TypeError) as info:
        make(stages=[jitter])
    assert "stage 0 is jitter(record, key)" in info.exconly()
    assert "ElementOperator(fn)" in info.exconly()


def test_a_dag_node_must_take_one_argument_per_predecessor():
    with pytest.raises(TypeError) as info:
        Pipeline.from_dag(
            source=source(),
            nodes={"a": lambda b: b, "b": lambda b: b, "sum": lambda a: a},
            edges={"a": [], "b": [], "sum": ["a", "b"]},
            sink="sum",
            batch_size=2,
        )
    assert "DAG node 'sum' is <lambda>(a)" in info.exconly()
    assert "called with 2 positional arguments" in info.exconly()


def test_stages_with_defaults_varargs_and_builtins_pass_the_arity_check():
    class Scale(nnx.Module):
        def __call__(self, batch, factor=3.0):
            return {"x": batch["x"] * factor}

    def passthrough(*batches):
        return batches[0]

    pipe = make(stages=[Scale(), passthrough, dict])
    np.testing.assert_array_equal(pipe.step()["x"], [0.0, 3.0])


@pytest.mark.parametrize(
    "stages", [noise("a"), {"a": noise("a")}, "noise"], ids=["one", "dict", "str"]
)
def test_stages_must_be_a_list(stages):
    with pytest.raises(TypeError, match="stages takes a list of stages"):
        make(stages=stages)


def test_a_key_used_by_a_non_stochastic_operator_gets_a_note():
    op = ElementOperator(lambda r, key: {"x": r["x"] + jax.random.uniform(key)})
    with pytest.raises(Exception) as info:
        make(stages=[op]).step()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "ElementOperator(stochastic=False) calls <lambda>(record, None)" in notes
    assert "build it with stochastic=True" in notes


def test_an_element_function_must_take_record_and_key():
    with pytest.raises(TypeError, match=r"ElementOperator calls fn\(record, key\)"):
        ElementOperator(lambda record: record)


@pytest.mark.parametrize("stochastic", ["yes", 1, None])
def test_stochastic_must_be_a_bool(stochastic):
    with pytest.raises(TypeError, match="stochastic must be a bool"):
        ElementOperator(lambda r, k: r, stochastic=stochastic)


@pytest.mark.parametrize(
    "rngs", [0, jax.random.key(0), jax.random.PRNGKey(0)], ids=["int", "key", "legacy"]
)
def test_rngs_must_be_nnx_rngs(rngs):
    with pytest.raises(TypeError) as info:
        make(rngs=rngs)
    assert "rngs must be an nnx.Rngs" in info.exconly()
    assert "rngs=nnx.Rngs(0)" in info.exconly()


@pytest.mark.parametrize(
    ("nodes", "edges", "sink", "message"),
    [
        ({0: abs}, {0: []}, 0, r"DAG node names must be str, got \[0\]"),
        (
            {"a": abs, "b": abs},
            {"a": [], "b": "a"},
            "b",
            r"edges\['b'\] must be a list",
        ),
        ({"a": abs}, {"a": [1]}, "a", r"edges\['a'\] names non-str nodes \[1\]"),
        ([abs], {"a": []}, "a", "nodes and edges must be dicts"),
    ],
    ids=["int-names", "str-edges", "int-predecessor", "list-nodes"],
)
def test_dag_wiring_types_are_checked(nodes, edges, sink, message):
    with pytest.raises(TypeError, match=message):
        Pipeline.from_dag(
            source=source(), nodes=nodes, edges=edges, sink=sink, batch_size=2
        )


def test_a_pipeline_steps_from_another_thread():
    # The closed-over check compares trace states; a worker thread (prefetch) is
    # at the top level too and must not be refused.
    import threading

    pipe, served = make(), []
    worker = threading.Thread(target=lambda: served.append(pipe.step()["x"]))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(served[0], [0.0, 1.0])
