"""Compiled runs of a pipeline: its module graph flattened once, one cached ``jax.jit``.

``nnx.jit``, ``nnx.split`` and ``nnx.update`` cost 100-420 us per call, more than a
whole batch of many workloads. A :class:`Program` therefore flattens the pipeline
and the user's modules once, keeps their live ``Variable`` objects (and plain
array attributes, which nnx treats as state too), and on every call hands their
raw values to one cached ``jax.jit`` function and writes back the new ones: the
semantics of ``nnx.scan`` lifting every module as carry (with the dataset's
:class:`DataVar` broadcast), at the cost of a plain ``jax.jit`` dispatch.

The flattening stays valid while the graph keeps its structure. Before each call a
cheap guard compares the identities of every node's attributes with a snapshot;
any change (a replaced Variable, a new attribute, ``model.eval()`` flipping a
static flag, other modules passed in) re-flattens. A re-flattened graph with the
same ``GraphDef`` reuses the compiled function, so nothing is traced again.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from datarax.core._cache import LRUCache
from datarax.core._feed import (
    Stream,
    open_window,
    read_batch,
    read_batches,
    stage_records,
)
from datarax.core._graph import Graph, GraphSpec
from datarax.core._keys import run_keys
from datarax.core._source import DataSource


class ChangeRecorder:
    """Records, while a step is traced, which carried values it changed.

    An untouched Variable leaves a step as the very tracer that went in, so
    identity tells which values a compiled function must return (and its caller
    write back): a pipeline whose stages hold no state pays for no outputs but
    its batches. A body traced more than once (a scan split in two loops)
    accumulates.
    """

    def __init__(self) -> None:
        self._changed: set[int] = set()

    def note(self, new: Sequence[Any], old: Sequence[Any]) -> None:
        """Compares one traced step's carried values after and before."""
        self._changed.update(
            i for i, (a, b) in enumerate(zip(new, old, strict=True)) if a is not b
        )

    @property
    def any(self) -> bool:
        """Whether any value changed."""
        return bool(self._changed)

    def finish(self, compiled: Compiled, values: Sequence[Any]) -> list:
        """Stores the changed indices on ``compiled``; returns those values."""
        compiled.changed = tuple(sorted(self._changed))
        return [values[i] for i in compiled.changed]


def _changed_values(
    compiled: Compiled, spec: GraphSpec, nodes: tuple, carry_values: Sequence[Any]
) -> list:
    """The carried values one traced step changed (recorded on ``compiled``)."""
    new = spec.carried(nodes)
    recorder = ChangeRecorder()
    recorder.note(new, carry_values)
    return recorder.finish(compiled, new)


class Compiled:
    """A compiled function, shared by all pipelines with the same GraphSpec.

    ``changed`` lists the carried values the function returns; its builder
    records it when the function is traced (see :class:`ChangeRecorder`).
    ``length`` is the number of batches a chunk function computes.
    """

    def __init__(self, length: int = 1) -> None:
        self.fn: Callable = _unbuilt
        self.changed: tuple[int, ...] = ()
        self.length = length


def _unbuilt(*args: Any) -> Any:
    raise RuntimeError("internal: a Compiled was called before it was built")


class Program:
    """One cached kind of run of one pipeline: its live graph and compiled code.

    The pipeline's position never goes through the compiled function: the host
    knows it and advances it.
    """

    def __init__(self, graph: Graph, compiled: Compiled, owner: object):
        self.graph = graph
        self.compiled = compiled
        self.owner = owner  # what the entry was built for (step_fn), kept alive

    def __call__(self, *args: Any) -> Any:
        """Runs the compiled function and writes back the changed values."""
        carry_values, data_values = self.graph.read()
        changed_values, *rest = self.compiled.fn(carry_values, data_values, *args)
        variables = self.graph.carry_vars
        for index, value in zip(self.compiled.changed, changed_values, strict=True):
            variables[index].set_raw_value(value)
        return rest


Builder = Callable[[GraphSpec, Graph], Compiled]

# Programs per pipeline instance, outside the module graph so that nnx.clone /
# nnx.merge copies never share (and never see) them; compiled functions shared by
# pipelines of the same structure.
_PROGRAMS: weakref.WeakKeyDictionary[object, LRUCache[tuple, Program]] = (
    weakref.WeakKeyDictionary()
)
_COMPILED: LRUCache[tuple, Compiled] = LRUCache(maxsize=64)


def cached_program(
    pipe: object, cache_key: tuple, nodes: tuple, owner: object, build: Builder
) -> Program:
    """The cached program of ``pipe`` for ``cache_key``, re-flattened if needed.

    ``cache_key`` starts with the kind of run; ``owner`` is the object the entry
    is for (``step_fn``), held so its id cannot be recycled. Compiled functions
    are shared across pipelines with the same structure (keyed on the
    ``GraphSpec`` and the owner itself).
    """
    programs = _PROGRAMS.get(pipe)
    if programs is None:
        programs = _PROGRAMS[pipe] = LRUCache(maxsize=32)
    program = programs.get(cache_key)
    if program is not None and program.owner is owner:
        if program.graph.matches(nodes):
            return program
    graph = Graph(nodes)
    compiled_key = (cache_key[0], *cache_key[2:], owner, graph.spec)
    compiled = _COMPILED.get(compiled_key)
    if compiled is None:
        compiled = build(graph.spec, graph)
        _COMPILED.put(compiled_key, compiled)
    program = Program(graph, compiled, owner)
    programs.put(cache_key, program)
    return program


def program_count(pipe: object) -> int:
    """How many programs ``pipe`` holds in its cache (for tests and debugging)."""
    programs = _PROGRAMS.get(pipe)
    return 0 if programs is None else len(programs)


def build_chunk(spec: GraphSpec, *, length: int) -> Compiled:
    """``jax.jit`` computing the next ``length`` batches, returned one by one.

    The batches are built in one traced Python loop rather than a ``lax.scan``:
    each lands directly in its own output buffer, where a scan would stack them
    and copy them out again (3x slower on XLA:CPU for image batches). Their
    records are read from the source in one piece.
    """
    compiled = Compiled(length)

    @jax.jit
    def run(carry_values, data_values, host_plan):
        nodes = spec.merge(carry_values, data_values)
        stream: Stream = nodes[0]
        window = open_window(stream, length * stream.batch_size, host_plan)
        batches = read_batches(stream, window, length)
        return _changed_values(compiled, spec, nodes, carry_values), batches

    compiled.fn = run
    return compiled


def build_apply(spec: GraphSpec) -> Compiled:
    """``jax.jit`` running the stages on a batch of records read on the host.

    For iteration-only sources: the records arrive as arguments (one global
    batch), the stages see the same positions and keys as in any other mode.
    """
    compiled = Compiled()

    @jax.jit
    def run(carry_values, data_values, raw, start):
        nodes = spec.merge(carry_values, data_values)
        stream: Stream = nodes[0]
        keys = run_keys(stream.key[...], stream.shuffle, stream.key_impl)
        batch = stage_records(stream, raw, start, keys)
        return _changed_values(compiled, spec, nodes, carry_values), batch

    compiled.fn = run
    return compiled


def probe_batch(graph: Graph) -> tuple[bool, Any]:
    """Traces one batch (``jax.eval_shape``, nothing runs) to learn two facts.

    Returns whether building a batch changes any carried value (stages with RNG
    streams, batch statistics or counters do; then iteration computes batches
    one at a time so that state is exact after every batch) and the batch's
    shapes.
    """
    recorder = ChangeRecorder()
    spec = graph.spec

    def probe(carry_values, data_values):
        nodes = spec.merge(carry_values, data_values)
        stream: Stream = nodes[0]
        window = open_window(stream, stream.batch_size)
        batch = read_batch(stream, window, window.start)
        recorder.note(spec.carried(nodes), carry_values)
        return batch

    shapes = jax.eval_shape(probe, *graph.read())
    return recorder.any, shapes


def nbytes(shapes: Any) -> int:
    """Total bytes of a pytree of arrays or ``ShapeDtypeStruct`` s."""
    return sum(
        math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes)
    )


def steps_per_read(stream: Stream) -> int:
    """How many batches the pipeline's source wants read at once."""
    source: DataSource = stream.source  # type: ignore[assignment]
    return source.steps_per_read(stream.batch_size)
