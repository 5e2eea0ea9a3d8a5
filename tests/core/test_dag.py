"""Pipeline.from_dag: wiring, execution order and validation errors."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from datarax import Pipeline
from datarax.nodes import validate_dag
from datarax.operators import ElementOperator
from datarax.sources import MemorySource


def add(k):
    return lambda b: {"x": b["x"] + k}


def source():
    return MemorySource({"x": np.arange(12, dtype=np.int32)})


def test_dag_wires_predecessors_in_listed_order():
    pipe = Pipeline.from_dag(
        source=source(),
        nodes={
            "a": add(100),
            "b": add(1000),
            "diff": lambda first, second: {"x": first["x"] - second["x"]},
            "out": lambda d: {"x": d["x"] * 2},
        },
        edges={"a": [], "b": [], "diff": ["b", "a"], "out": ["diff"]},
        sink="out",
        batch_size=4,
    )
    assert np.asarray(next(iter(pipe))["x"]).tolist() == [1800] * 4
    assert pipe.sink == "out"
    assert pipe.edges == {"a": [], "b": [], "diff": ["b", "a"], "out": ["diff"]}
    assert set(pipe.nodes.keys()) == {"a", "b", "diff", "out"}


def test_dag_scan_equals_iteration():
    def build():
        return Pipeline.from_dag(
            source=source(),
            nodes={
                "noise": ElementOperator(
                    lambda r, k: {"x": r["x"], "u": jax.random.uniform(k)},
                    stochastic=True,
                ),
                "keep": add(0),
                "merge": lambda a, b: {"x": a["x"] + b["x"], "u": a["u"]},
            },
            edges={"noise": [], "keep": [], "merge": ["noise", "keep"]},
            sink="merge",
            batch_size=5,
            shuffle=True,
            num_epochs=None,
        )

    it = iter(build())
    by_iter = [next(it) for _ in range(6)]
    by_scan = build().scan(lambda b: b, length=6)
    for k, batch in enumerate(by_iter):
        np.testing.assert_array_equal(batch["x"], by_scan["x"][k])
        np.testing.assert_array_equal(batch["u"], by_scan["u"][k])


@pytest.mark.parametrize(
    ("nodes", "edges", "sink", "message"),
    [
        (
            {"a": add(1), "b": add(2)},
            {"a": ["b"], "b": ["a"]},
            "a",
            "DAG has a cycle: a -> b -> a",
        ),
        (
            {"a": add(1)},
            {"a": ["ghost"]},
            "a",
            "edges refer to unknown nodes: 'ghost' (input of 'a')",
        ),
        (
            {"a": add(1)},
            {"a": [], "phantom": []},
            "a",
            "edges names ['phantom'], which are not in nodes",
        ),
        ({"a": add(1)}, {"a": []}, "nope", "sink 'nope' is not one of the nodes"),
        (
            {"a": add(1), "orphan": add(2)},
            {"a": [], "orphan": []},
            "a",
            "DAG nodes ['orphan'] are dead",
        ),
        (
            {"a": add(1), "b": add(2)},
            {"a": []},
            "a",
            "DAG nodes ['b'] have no entry in edges",
        ),
    ],
    ids=[
        "cycle",
        "unknown-input",
        "unknown-edge-key",
        "missing-sink",
        "dead",
        "no-edges",
    ],
)
def test_from_dag_rejects_bad_wiring_and_names_nodes(nodes, edges, sink, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Pipeline.from_dag(
            source=source(), nodes=nodes, edges=edges, sink=sink, batch_size=4
        )


def test_cycle_message_names_a_longer_cycle():
    edges = {"s": [], "a": ["s", "c"], "b": ["a"], "c": ["b"], "out": ["c"]}
    nodes = {n: add(0) for n in edges}
    with pytest.raises(
        ValueError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    ):
        validate_dag(nodes, edges, "out")


def test_dag_node_error_names_the_node():
    pipe = Pipeline.from_dag(
        source=source(),
        nodes={"a": add(1), "bad": lambda b: [b]},
        edges={"a": [], "bad": ["a"]},
        sink="bad",
        batch_size=4,
    )
    with pytest.raises(TypeError, match=re.escape("DAG node 'bad' returned a list")):
        next(iter(pipe))


def test_from_dag_refuses_stages():
    with pytest.raises(TypeError, match="not stages="):
        Pipeline.from_dag(
            source=source(),
            nodes={"a": add(1)},
            edges={"a": []},
            sink="a",
            batch_size=4,
            stages=[add(1)],
        )
