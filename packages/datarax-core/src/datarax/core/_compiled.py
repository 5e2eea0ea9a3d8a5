"""Compiled runs of a pipeline: its module graph flattened once, one cached ``jax.jit``.

``nnx.jit``, ``nnx.split`` and ``nnx.update`` cost 100-420 us per call, more than a
whole batch of many workloads. A :class:`Program` therefore flattens the pipeline
and the user's modules once, keeps their live ``Variable`` objects, and on every
call hands their raw values to one cached ``jax.jit`` function and writes back the
new ones: the semantics of ``nnx.scan`` lifting every module as carry (with the
dataset's :class:`DataVar` broadcast), at the cost of a plain ``jax.jit`` dispatch.

The flattening stays valid while the graph keeps its structure. Before each call a
cheap guard compares the identities of every node's attributes with a snapshot;
any change (a replaced Variable, a new attribute, ``model.eval()`` flipping a
static flag, other modules passed in) re-flattens. A re-flattened graph with the
same ``GraphDef`` reuses the compiled function, so nothing is traced again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from datarax.core._source import DataVar

if TYPE_CHECKING:
    from datarax.core._pipeline import Pipeline


def _is_variable(x: object) -> bool:
    return isinstance(x, nnx.Variable)


def _attribute_ids(node: object) -> tuple[int, ...]:
    return tuple(map(id, vars(node).values()))


class Graph:
    """The pipeline (first) and the user's modules, flattened once."""

    def __init__(self, nodes: tuple):
        self.nodes = nodes
        self.graphdef, state = nnx.split(nodes)
        self.treedef = jax.tree.structure(state, is_leaf=_is_variable)
        paths_leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_variable)
        plain = [
            jax.tree_util.keystr(path)
            for path, leaf in paths_leaves[0]
            if not isinstance(leaf, nnx.Variable)
        ]
        if plain:
            raise TypeError(
                f"modules hold plain array attributes at {plain}; wrap each in an "
                "nnx.Variable (nnx.Param for parameters) so datarax can carry it."
            )
        variables = [leaf for _, leaf in paths_leaves[0]]
        self.is_data = tuple(isinstance(v, DataVar) for v in variables)
        self.carry_vars = [v for v, d in zip(variables, self.is_data) if not d]
        self.data_vars = [v for v, d in zip(variables, self.is_data) if d]
        self._snapshot = [
            (node, _attribute_ids(node))
            for _, node in nnx.iter_graph(nodes)
            if isinstance(node, nnx.Pytree)
        ]

    def signature(self) -> tuple:
        """What a compiled function depends on: equal signatures share one."""
        return (self.graphdef, self.treedef, self.is_data)

    def matches(self, nodes: tuple) -> bool:
        """Whether ``nodes`` are still exactly the graph that was flattened."""
        if len(nodes) != len(self.nodes):
            return False
        for new, old in zip(nodes, self.nodes):
            if new is not old:
                return False
        for node, ids in self._snapshot:
            if _attribute_ids(node) != ids:
                return False
        return True

    def read(self) -> tuple[list, list]:
        """Current raw values: (carried, data)."""
        return (
            [v.get_raw_value() for v in self.carry_vars],
            [v.get_raw_value() for v in self.data_vars],
        )

    def write(self, carry_values: Sequence[Any]) -> None:
        """Writes new raw values into the live carried Variables."""
        for variable, value in zip(self.carry_vars, carry_values):
            variable.set_raw_value(value)

    # -- inside traces ------------------------------------------------------------

    def merge(self, carry_values: Sequence[Any], data_values: Sequence[Any]) -> tuple:
        """Fresh modules holding the given (traced) values."""
        carry, data = iter(carry_values), iter(data_values)
        values = [next(data) if d else next(carry) for d in self.is_data]
        return nnx.merge(self.graphdef, jax.tree.unflatten(self.treedef, values))

    def carried(self, nodes: tuple) -> list:
        """The carried raw values of merged ``nodes`` after a step mutated them."""
        graphdef, state = nnx.split(nodes)
        if graphdef != self.graphdef:
            raise ValueError(
                "the step changed the structure of the pipeline or of a module "
                "(added, removed or replaced a Variable or sub-module, or changed a "
                "static attribute); inside Pipeline.scan only Variable values may "
                "change. Make structural changes outside the compiled run."
            )
        variables = jax.tree.leaves(state, is_leaf=_is_variable)
        return [v.get_raw_value() for v, d in zip(variables, self.is_data) if not d]


StepFn = Callable[..., Any]


def _loop(
    graph: Graph,
    carry_values: list,
    data_values: list,
    *,
    length: int,
    unroll: int,
    step: Callable[[tuple, Any, Any], tuple[Any, Any]],
    user_carry: Any = None,
) -> tuple[list, Any, Any, jax.Array]:
    """``length`` batches from the pipeline's position, one ``lax.scan``.

    ``step(nodes, user_carry, batch) -> (user_carry, out)``. Returns the carried
    values after the loop, the user carry, the stacked outputs, and the start
    position. Per-run work (keys, permutation plans) is done once, before the loop,
    so the body is as plain as a hand-written one.
    """
    nodes = graph.merge(carry_values, data_values)
    pipe: Pipeline = nodes[0]
    start = jnp.asarray(pipe.position[...], jnp.int32)
    keys = pipe._run_keys()
    plan = pipe.source._plan(start, length * pipe.batch_size, keys.shuffle)

    def body(carry, index):
        values, uc = carry
        nodes = graph.merge(values, data_values)
        batch_start = start + index * pipe.batch_size
        batch = nodes[0]._batch(plan, batch_start, keys)
        uc, out = step(nodes, uc, batch)
        return (graph.carried(nodes), uc), out

    (values, user_carry), outs = jax.lax.scan(
        body,
        (carry_values, user_carry),
        jnp.arange(length, dtype=jnp.int32),
        unroll=min(unroll, length),
    )
    return values, user_carry, outs, start


def _advance(
    graph: Graph, values: list, data_values: list, position: jax.Array
) -> list:
    """Sets the merged pipeline's position (and epoch) and returns carried values."""
    nodes = graph.merge(values, data_values)
    nodes[0]._set_position(position)
    return graph.carried(nodes)


class Program:
    """One compiled kind of run of one pipeline, with its flattened graph."""

    def __init__(self, graph: Graph, fn: Callable, owner: object):
        self.graph = graph
        self.fn = fn
        self.owner = owner  # what the cache entry was built for (e.g. step_fn)

    def __call__(self, *args: Any) -> Any:
        carry_values, data_values = self.graph.read()
        new_values, *rest = self.fn(carry_values, data_values, *args)
        self.graph.write(new_values)
        return rest


def build_scan(
    graph: Graph, step_fn: StepFn, *, length: int, has_carry: bool, unroll: int
) -> Callable:
    """``jax.jit`` of ``length`` steps of ``step_fn`` over the pipeline's batches."""
    def step(nodes, user_carry, batch):
        modules = nodes[1:]
        if has_carry:
            return step_fn(user_carry, *modules, batch)
        return None, step_fn(*modules, batch)

    @jax.jit
    def run(carry_values, data_values, init_carry):
        values, user_carry, outs, start = _loop(
            graph,
            carry_values,
            data_values,
            length=length,
            unroll=unroll,
            step=step,
            user_carry=init_carry,
        )
        batch_size = graph.merge(carry_values, data_values)[0].batch_size
        values = _advance(graph, values, data_values, start + length * batch_size)
        return values, user_carry, outs

    return run


def build_chunk(graph: Graph, *, length: int, unroll: int) -> Callable:
    """``jax.jit`` computing the next ``length`` batches, returned one by one.

    Returns ``(carried values after the last batch, batches, positions, epochs)``
    where ``positions[k]`` / ``epochs[k]`` are the pipeline's position and epoch
    after batch ``k``, so iteration can hand batches out one at a time.
    """

    def step(nodes, user_carry, batch):
        del nodes
        return user_carry, batch

    @jax.jit
    def run(carry_values, data_values):
        values, _, outs, start = _loop(
            graph, carry_values, data_values, length=length, unroll=unroll, step=step
        )
        # Read sizes from the merged pipeline at trace time, never from the graph
        # this function was built for: a re-flattened graph may reuse it.
        pipe = graph.merge(carry_values, data_values)[0]
        batch_size, source_length = pipe.batch_size, len(pipe.source)
        ends = start + batch_size * jnp.arange(1, length + 1, dtype=jnp.int32)
        values = _advance(graph, values, data_values, ends[-1])
        batches = [jax.tree.map(lambda x, k=k: x[k], outs) for k in range(length)]
        positions = [ends[k] for k in range(length)]
        epochs = [ends[k] // source_length for k in range(length)]
        return values, batches, positions, epochs

    return run


def probe_batch(graph: Graph) -> tuple[bool, Any]:
    """Traces one batch (``jax.eval_shape``, nothing runs) to learn two facts.

    Returns whether building a batch changes any carried Variable besides the
    position, and the batch's shapes. Untouched Variables come out of a step as
    the very tracer that went in. Stages with RNG streams, batch statistics or
    counters change state; then iteration must compute batches one at a time to
    keep every batch's state exact.
    """
    changed: list[bool] = []

    def probe(carry_values, data_values):
        nodes = graph.merge(carry_values, data_values)
        pipe = nodes[0]
        keys = pipe._run_keys()
        start = jnp.asarray(pipe.position[...], jnp.int32)
        plan = pipe.source._plan(start, pipe.batch_size, keys.shuffle)
        batch = pipe._batch(plan, start, keys)
        after = graph.carried(nodes)
        changed.extend(a is not b for a, b in zip(after, carry_values))
        return batch

    spec = jax.eval_shape(probe, *graph.read())
    return any(changed), spec
