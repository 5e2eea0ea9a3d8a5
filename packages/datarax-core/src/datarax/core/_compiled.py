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

import dataclasses
import math
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core._source import DataVar

if TYPE_CHECKING:
    from datarax.core._pipeline import Pipeline


def _is_variable(x: object) -> bool:
    return isinstance(x, nnx.Variable)


def is_concrete(values: Sequence[Any]) -> bool:
    """Whether none of ``values`` is a tracer (we are not inside a JAX trace)."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def _probe_fast_write() -> bool:
    probe = nnx.Variable(0)
    try:
        object.__setattr__(probe, "_raw_value", 1)
    except (AttributeError, TypeError):
        return False
    return probe.get_raw_value() == 1


# Variable.set_raw_value checks the trace level on every write (~2-3 us, even with
# its bypass flag, through Variable.__setattr__). Writes made on the host between
# compiled calls happen outside any trace, where that check cannot fail, so they
# store the value directly when this flax version keeps it in the `_raw_value`
# slot (0.12.8 and 0.12.12 do), and go through set_raw_value otherwise.
_FAST_WRITE = _probe_fast_write()


def write_host_value(variable: nnx.Variable, value: Any) -> None:
    """Sets a Variable's raw value from the host, outside any trace."""
    if _FAST_WRITE:
        object.__setattr__(variable, "_raw_value", value)
    else:
        variable.set_raw_value(value)


def _attribute_ids(attributes: dict) -> tuple[int, ...]:
    return tuple(map(id, attributes.values()))


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """The structure of a flattened graph: what a compiled function depends on.

    Hashable, and free of references to live modules or data, so compiled
    functions built from it can be shared by every pipeline of the same
    construction (a pipeline rebuilt to restore a checkpoint compiles nothing).
    """

    graphdef: Any
    treedef: Any
    is_data: tuple[bool, ...]

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
        return [
            v.get_raw_value()
            for v, d in zip(variables, self.is_data, strict=True)
            if not d
        ]


class Graph:
    """The pipeline (first) and the user's modules, flattened once.

    Holds the live Variables (their values are read and written per call) and
    weak references to the nodes, so a cache entry never keeps a pipeline alive.
    """

    def __init__(self, nodes: tuple):
        graphdef, state = nnx.split(nodes)
        leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_variable)[0]
        plain = [
            jax.tree_util.keystr(path)
            for path, leaf in leaves
            if not isinstance(leaf, nnx.Variable)
        ]
        if plain:
            raise TypeError(
                f"modules hold plain array attributes at {plain}; wrap each in an "
                "nnx.Variable (nnx.Param for parameters) so datarax can carry it."
            )
        variables = [leaf for _, leaf in leaves]
        is_data = tuple(isinstance(v, DataVar) for v in variables)
        self.spec = GraphSpec(
            graphdef, jax.tree.structure(state, is_leaf=_is_variable), is_data
        )
        self.carry_vars = [v for v, d in zip(variables, is_data, strict=True) if not d]
        self.data_vars = [v for v, d in zip(variables, is_data, strict=True) if d]
        self._nodes = [weakref.ref(node) for node in nodes]
        # The attribute dicts of every graph node (not the nodes: a dict holds no
        # reference to its owner, so this keeps no pipeline alive) and the
        # identities of their values when flattened.
        self._dicts = [
            vars(node)
            for _, node in nnx.iter_graph(nodes)
            if isinstance(node, nnx.Pytree)
        ]
        self._ids = [_attribute_ids(d) for d in self._dicts]

    def matches(self, nodes: tuple) -> bool:
        """Whether ``nodes`` are still exactly the graph that was flattened.

        Runs before every call (and every buffered batch), so it is one pass of
        identity checks: any attribute of any node that was replaced, added or
        removed since the flattening shows as a different tuple of ids.
        """
        if len(nodes) != len(self._nodes):
            return False
        for new, old in zip(nodes, self._nodes, strict=True):
            if new is not old():
                return False
        return [_attribute_ids(d) for d in self._dicts] == self._ids

    def read(self) -> tuple[list, list]:
        """Current raw values: (carried, data)."""
        return (
            [v.get_raw_value() for v in self.carry_vars],
            [v.get_raw_value() for v in self.data_vars],
        )


StepFn = Callable[..., Any]


class Compiled:
    """A compiled function, shared by all pipelines with the same GraphSpec.

    ``changed`` lists the carried values the function returns (those its step
    can change), recorded when it is traced: an untouched Variable leaves a step
    as the very tracer that went in. A pipeline whose stages hold no state thus
    pays for no outputs but its batches.
    """

    def __init__(self) -> None:
        self.fn: Callable = _unbuilt
        self.changed: tuple[int, ...] = ()
        self.length = 1  # batches per call, for chunk functions


def _unbuilt(*args: Any) -> Any:
    raise RuntimeError("internal: a Compiled was called before it was built")


class Program:
    """One cached kind of run of one pipeline: its live graph and compiled code.

    The pipeline's position never goes through the compiled function: the host
    knows it and advances it (see ``Pipeline._advance``).
    """

    def __init__(self, graph: Graph, compiled: Compiled, owner: object):
        self.graph = graph
        self.compiled = compiled
        self.owner = owner  # what the entry was built for (step_fn), kept alive

    def __call__(self, *args: Any) -> Any:
        """Runs the compiled function and writes back the changed Variables."""
        carry_values, data_values = self.graph.read()
        changed_values, *rest = self.compiled.fn(carry_values, data_values, *args)
        write = write_host_value if is_concrete(carry_values) else _write_traced
        variables = self.graph.carry_vars
        for index, value in zip(self.compiled.changed, changed_values, strict=True):
            write(variables[index], value)
        return rest


def _write_traced(variable: nnx.Variable, value: Any) -> None:
    variable.set_raw_value(value)


def _start(
    spec: GraphSpec,
    carry_values: list,
    data_values: list,
    length: int,
    host_plan: Any = None,
):
    """Merged nodes, start position, run keys and the source's plan for a run."""
    nodes = spec.merge(carry_values, data_values)
    pipe: Pipeline = nodes[0]
    start = jnp.asarray(pipe.position[...], jnp.int32)
    keys = pipe._run_keys()
    records = length * pipe.batch_size
    plan = pipe.source._plan(start, records, keys.shuffle, host_plan)
    return nodes, start, keys, plan


def build_scan(
    spec: GraphSpec,
    compiled: Compiled,
    step_fn: StepFn,
    *,
    length: int,
    has_carry: bool,
    unroll: int,
) -> Callable:
    """``jax.jit`` of ``length`` steps of ``step_fn`` over the pipeline's batches.

    Per-run work (keys, the source's permutation plan) is done once, before the
    loop, so the body is as plain as a hand-written one.
    """

    @jax.jit
    def run(carry_values, data_values, host_plan, init_carry):
        nodes, start, keys, plan = _start(
            spec, carry_values, data_values, length, host_plan
        )
        pipe: Pipeline = nodes[0]
        batch_size = pipe.batch_size
        per_read = max(1, min(length, pipe.source._steps_per_read(batch_size)))
        flags: list[list[bool]] = []

        def one_step(carry, batch_start, raw):
            values, user_carry = carry
            nodes = spec.merge(values, data_values)
            if raw is None:
                batch = nodes[0]._batch(plan, batch_start, keys)
            else:
                batch = nodes[0]._apply_local(raw, batch_start, keys)
            modules = nodes[1:]
            if has_carry:
                user_carry, out = step_fn(user_carry, *modules, batch)
            else:
                out = step_fn(*modules, batch)
            new = spec.carried(nodes)
            flags.append([a is not b for a, b in zip(new, values, strict=True)])
            return (new, user_carry), out

        def read_steps(carry, first_step, count):
            """``count`` steps whose records come from one source read."""
            chunk_start = start + first_step * batch_size
            raw = pipe.source._read(plan, chunk_start, count * batch_size, keys.shuffle)
            raw = {
                k: v.reshape(count, batch_size, *v.shape[1:]) for k, v in raw.items()
            }

            def inner(carry, xs):
                raw_k, k = xs
                return one_step(carry, chunk_start + k * batch_size, raw_k)

            steps = jnp.arange(count, dtype=jnp.int32)
            return jax.lax.scan(inner, carry, (raw, steps), unroll=min(unroll, count))

        carry = (carry_values, init_carry)
        if per_read == 1:
            carry, outs = jax.lax.scan(
                lambda c, i: one_step(c, start + i * batch_size, None),
                carry,
                jnp.arange(length, dtype=jnp.int32),
                unroll=min(unroll, length),
            )
        else:
            # Sources with a costly read (a host callback) read many steps' records
            # at once: an outer loop over reads, an inner one over their steps.
            full, rest = divmod(length, per_read)
            parts = []
            if full:
                carry, outs = jax.lax.scan(
                    lambda c, j: read_steps(c, j * per_read, per_read),
                    carry,
                    jnp.arange(full, dtype=jnp.int32),
                )
                parts.append(jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), outs))
            if rest:
                carry, outs = read_steps(carry, full * per_read, rest)
                parts.append(outs)
            outs = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        values, user_carry = carry
        compiled.changed = tuple(
            i for i in range(len(values)) if any(f[i] for f in flags)
        )
        return [values[i] for i in compiled.changed], user_carry, outs

    return run


def build_chunk(spec: GraphSpec, compiled: Compiled, *, length: int) -> Callable:
    """``jax.jit`` computing the next ``length`` batches, returned one by one.

    The batches are built in one traced Python loop rather than a ``lax.scan``:
    each lands directly in its own output buffer, where a scan would stack them
    and copy them out again (3x slower on XLA:CPU for image batches). Their
    records are read from the source in one piece.
    """

    @jax.jit
    def run(carry_values, data_values, host_plan):
        nodes, start, keys, plan = _start(
            spec, carry_values, data_values, length, host_plan
        )
        batches = nodes[0]._batches(plan, start, length, keys)
        return _changed(compiled, spec.carried(nodes), carry_values), batches

    return run


def _changed(compiled: Compiled, new: list, carry_values: list) -> list:
    """The carried values a traced step changed, recorded on ``compiled``.

    An untouched Variable leaves the step as the very tracer that went in, so
    identity tells which values to return (and later write back).
    """
    compiled.changed = tuple(
        i for i, (a, b) in enumerate(zip(new, carry_values, strict=True)) if a is not b
    )
    return [new[i] for i in compiled.changed]


def build_apply(spec: GraphSpec, compiled: Compiled) -> Callable:
    """``jax.jit`` running the stages on a batch of records read on the host.

    For iteration-only sources: the records arrive as arguments (one global
    batch), the stages see the same positions and keys as in any other mode.
    """

    @jax.jit
    def run(carry_values, data_values, raw, start):
        nodes = spec.merge(carry_values, data_values)
        pipe: Pipeline = nodes[0]
        batch = pipe._apply_local(raw, start, pipe._run_keys())
        return _changed(compiled, spec.carried(nodes), carry_values), batch

    return run


def probe_batch(graph: Graph) -> tuple[bool, Any]:
    """Traces one batch (``jax.eval_shape``, nothing runs) to learn two facts.

    Returns whether building a batch changes any carried Variable (stages with
    RNG streams, batch statistics or counters do; then iteration computes batches
    one at a time so that state is exact after every batch) and the batch's
    shapes.
    """
    changed: list[bool] = []
    spec = graph.spec

    def probe(carry_values, data_values):
        nodes, start, keys, plan = _start(spec, carry_values, data_values, 1)
        batch = nodes[0]._batch(plan, start, keys)
        after = spec.carried(nodes)
        changed.extend(a is not b for a, b in zip(after, carry_values, strict=True))
        return batch

    shapes = jax.eval_shape(probe, *graph.read())
    return any(changed), shapes


def nbytes(shapes: Any) -> int:
    """Total bytes of a pytree of arrays or ``ShapeDtypeStruct`` s."""
    return sum(
        math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes)
    )


def batch_nbytes(graph: Graph) -> int:
    """Bytes of one batch as the pipeline's stages produce it (traced, not run)."""
    return nbytes(probe_batch(graph)[1])
