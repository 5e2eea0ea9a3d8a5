"""``Pipeline``: a source, stages, and three ways to be fed from them."""

from __future__ import annotations

import collections
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core._compiled import (
    Compiled,
    Graph,
    GraphSpec,
    Program,
    batch_nbytes,
    build_chunk,
    build_scan,
    write_host_value,
)
from datarax.core._iterator import PipelineIterator, StreamIterator
from datarax.core._records import (
    RecordContext,
    RecordKeyed,
    batch_positions,
    record_context,
)
from datarax.core._source import (
    Batch,
    DataSource,
    as_key,
    fold_in_host,
    iteration_only_message,
)
from datarax.nodes._dag import validate_dag

Stage = Callable[..., Batch]


class StreamVar(nnx.Variable):
    """A pipeline's stream state: position, epoch and seed key.

    Together with the state of stochastic stages this is everything needed to
    continue a stream exactly; ``nnx.state(pipe, StreamVar)`` selects it.
    """


class RunKeys(NamedTuple):
    """Keys derived once per compiled run from the pipeline's seed key."""

    shuffle: jax.Array | None  # given to the source; None when not shuffling
    ops: jax.Array  # root of every stochastic operator's per-record keys


# Compiled programs are cached per pipeline instance, outside the module graph so
# that nnx.clone / nnx.merge copies never share (and never see) them.
_PROGRAMS: weakref.WeakKeyDictionary[Pipeline, collections.OrderedDict] = (
    weakref.WeakKeyDictionary()
)
_MAX_PROGRAMS = 32
# Compiled functions, shared by pipelines of the same structure (LRU).
_COMPILED: collections.OrderedDict[tuple, Compiled] = collections.OrderedDict()
_MAX_COMPILED = 64
_INT32_MAX = 2**31 - 1  # a scan called with a fresh lambda each time must not leak


def default_unroll(batch_bytes: int, num_modules: int = 0) -> int:
    """The ``lax.scan`` unroll that ``Pipeline.scan`` uses when none is given.

    On XLA:CPU (2 cores) the best unroll of a data-bound loop (no modules:
    evaluation, benchmarks, preprocessing) followed the size of the batch the
    stages produce. Per 1,000 steps, unroll 1 / 2 / 4 / 8: tokens 32x128 int32
    (16 KiB) 0.49 / 0.78 / 0.79 / 0.73 ms; tabular 256x100 float32 (100 KiB)
    6.4 / 5.9 / 5.8 / 6.6 ms; images 64x32x32x3 float32 (768 KiB) 446 / 52 / 45 /
    38 ms. So: under 64 KiB 1, under 256 KiB 4, else 8. A training step (modules
    given) gained 15% at unroll 8 on the digits demo but compiled 3x longer
    (3.8 s against 1.2 s): 1. GPU and TPU run each step as a few large kernels,
    where unrolling mostly lengthens compiles: 1. Pass ``unroll=`` to ``scan`` to
    choose yourself.

    Args:
        batch_bytes: bytes of one batch as the stages produce it.
        num_modules: how many modules the step receives.

    Returns:
        The unroll factor.
    """
    if jax.default_backend() != "cpu" or num_modules:
        return 1
    if batch_bytes < 64 * 2**10:
        return 1
    if batch_bytes < 256 * 2**10:
        return 4
    return 8


class Pipeline(nnx.Module):
    """A data pipeline: a source, stages, and batches by iteration, step or scan.

    Three construction shapes compile to the same machinery:

    * ``Pipeline(source=..., stages=[a, b], batch_size=...)``: a linear chain;
    * :meth:`Pipeline.from_dag`: named nodes wired by ``edges``;
    * a subclass overriding ``__call__(self, batch)``: any topology you write.

    Stages are callables ``batch -> batch`` (usually ``nnx.Module`` s, which may
    hold ``nnx.Param`` s and RNG streams). The pipeline serves one *record stream*:
    epoch after epoch of the source, shuffled per epoch when ``shuffle=True``. It is
    fed three ways, all serving the same records in the same order with the same
    augmentation randomness:

    * ``for batch in pipe``: Python iteration, bounded by ``num_epochs``;
    * ``pipe.step()``: the next full batch, also from inside your own ``nnx.jit``;
    * ``pipe.scan(step_fn, length=n)``: ``n`` training steps, data loading
      included, compiled into one XLA program.

    ``position`` (records served) and ``epoch`` are ``nnx.Variable`` s of the
    pipeline, so every mode continues where the last one stopped.

    Warning:
        ``num_epochs`` defaults to 1: iteration stops after one pass over the
        source. A ``for`` loop meant to run for more batches than one epoch holds
        (e.g. 100 batches of 32 over 1,000 records) ends early, after
        ``ceil(len(source) / batch_size)`` batches. Pass ``num_epochs=None`` for an
        endless stream, or use ``step()`` / ``scan``, which never stop.

    Args:
        source: the :class:`~datarax.DataSource` to read.
        stages: callables applied in order to each batch.
        batch_size: records per batch (global: on ``n`` JAX processes each serves a
            ``1/n`` slice, so it must divide by the process count).
        rngs: seeds the shuffle order and stochastic operators; default
            ``nnx.Rngs(0)``.
        shuffle: serve each epoch in a fresh permutation (needs a source that
            supports shuffling).
        num_epochs: epochs that iteration serves; ``None`` for endless.
        drop_last: in iteration, drop the stream's final short batch.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.sources import MemorySource
        >>> pipe = Pipeline(source=MemorySource({"x": np.arange(10)}), batch_size=4)
        >>> [batch["x"].tolist() for batch in pipe]
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        >>> int(pipe.position[...]), int(pipe.epoch[...])
        (10, 1)
    """

    def __init__(
        self,
        *,
        source: DataSource,
        stages: Sequence[Stage] = (),
        batch_size: int,
        rngs: nnx.Rngs | None = None,
        shuffle: bool = False,
        num_epochs: int | None = 1,
        drop_last: bool = False,
    ):
        if not isinstance(source, DataSource):
            raise TypeError(
                f"Pipeline source must be a datarax DataSource, got "
                f"{type(source).__name__}; wrap arrays in "
                "datarax.sources.MemorySource({...})."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be a Python int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        processes = jax.process_count()
        if batch_size % processes:
            raise ValueError(
                f"batch_size={batch_size} is the global batch size and must divide "
                f"by the number of JAX processes ({processes})."
            )
        if num_epochs is not None and (
            isinstance(num_epochs, bool) or not isinstance(num_epochs, int)
        ):
            raise TypeError(f"num_epochs must be an int or None, got {num_epochs!r}.")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(
                f"num_epochs must be at least 1 (or None for endless), got "
                f"{num_epochs}."
            )
        if shuffle and not source.supports_shuffle:
            raise ValueError(
                f"shuffle=True needs a source that can shuffle; "
                f"{type(source).__name__} cannot. Use shuffle=False."
            )
        if len(source) < 1:
            raise ValueError(f"the source {type(source).__name__} holds no records.")
        stages = list(stages)
        for index, stage in enumerate(stages):
            if not callable(stage):
                raise TypeError(
                    f"stage {index} is a {type(stage).__name__}, not a callable "
                    "batch -> batch."
                )
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.source = source
        self.stages = nnx.List(stages)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.num_epochs = num_epochs
        self.drop_last = bool(drop_last)
        # Raw key data, not a typed key: jit checks typed-key arguments on every
        # call (~5 us), and checkpoints store key data anyway.
        self.key = StreamVar(jax.random.key_data(rngs()))
        # Host (NumPy) int32 scalars: the host advances them without a device
        # round trip; compiled runs take them as ordinary inputs.
        self.position = StreamVar(np.asarray(0, np.int32))
        self.epoch = StreamVar(np.asarray(0, np.int32))
        self.nodes: nnx.Dict | None = None
        self.sink: str | None = None
        self._edges: tuple[tuple[str, tuple[str, ...]], ...] | None = None
        self._order: tuple[str, ...] | None = None

    @classmethod
    def from_dag(
        cls,
        *,
        source: DataSource,
        nodes: Mapping[str, Stage],
        edges: Mapping[str, Sequence[str]],
        sink: str,
        **kwargs: Any,
    ) -> Pipeline:
        """A pipeline whose stages form a declared DAG.

        ``edges[name]`` lists the nodes whose outputs ``name`` receives as
        positional arguments, in order; ``[]`` means it reads the source batch.
        The batch is the output of ``sink``.

        Args:
            source: the source to read.
            nodes: node name -> callable.
            edges: node name -> names of its predecessors.
            sink: the node whose output is the pipeline's batch.
            **kwargs: ``batch_size``, ``rngs``, ``shuffle``, ``num_epochs``,
                ``drop_last``, as for :class:`Pipeline`.

        Raises:
            ValueError: naming the nodes, for unknown names, cycles, a missing
                sink, dead nodes (the sink does not depend on them) and nodes
                without an ``edges`` entry.

        Examples:
            >>> import numpy as np
            >>> from datarax.sources import MemorySource
            >>> pipe = Pipeline.from_dag(
            ...     source=MemorySource({"x": np.arange(4)}),
            ...     nodes={"a": lambda b: {"x": b["x"] + 1},
            ...            "b": lambda b: {"x": b["x"] * 10},
            ...            "sum": lambda a, b: {"x": a["x"] + b["x"]}},
            ...     edges={"a": [], "b": [], "sum": ["a", "b"]},
            ...     sink="sum", batch_size=4)
            >>> next(iter(pipe))["x"].tolist()
            [1, 12, 23, 34]
        """
        if "stages" in kwargs:
            raise TypeError("from_dag takes nodes= and edges=, not stages=.")
        order = validate_dag(nodes, edges, sink)
        for name, node in nodes.items():
            if not callable(node):
                raise TypeError(
                    f"DAG node {name!r} is a {type(node).__name__}, not a callable."
                )
        pipe = cls(source=source, **kwargs)
        pipe.nodes = nnx.data(nnx.Dict(dict(nodes)))
        pipe.sink = sink
        pipe._edges = tuple((name, tuple(edges[name])) for name in nodes)
        pipe._order = order
        return pipe

    @property
    def edges(self) -> dict[str, list[str]] | None:
        """For a DAG pipeline, node name -> predecessors; else ``None``."""
        if self._edges is None:
            return None
        return {name: list(preds) for name, preds in self._edges}

    def __call__(self, batch: Batch) -> Batch:
        """Runs the stages (or the DAG) on one batch from the source.

        Override in a subclass to wire stages any way you like; stochastic
        operators reached from ``self`` get their per-record keys either way.
        """
        if self._order is not None:
            return self._run_dag(batch)
        for index, stage in enumerate(self.stages):
            batch = _checked(stage(batch), f"stage {index} ({_name(stage)})")
        return batch

    def _run_dag(self, batch: Batch) -> Batch:
        assert self._edges is not None and self.nodes is not None
        edges = dict(self._edges)
        outputs: dict[str, Batch] = {}
        for name in self._order:
            inputs = [outputs[p] for p in edges[name]] if edges[name] else [batch]
            outputs[name] = _checked(self.nodes[name](*inputs), f"DAG node {name!r}")
        return outputs[self.sink]

    # -- the stream -----------------------------------------------------------------

    def _run_keys(self) -> RunKeys:
        key = as_key(self.key[...])
        shuffle = jax.random.fold_in(key, 0) if self.shuffle else None
        return RunKeys(shuffle=shuffle, ops=jax.random.fold_in(key, 1))

    def _batch(self, plan: Any, start: jax.Array, keys: RunKeys) -> Batch:
        """The (process-local slice of the) batch at stream position ``start``."""
        local = self.batch_size // jax.process_count()
        start = start + jax.process_index() * local
        raw = self.source._read(plan, start, local, keys.shuffle)
        return self._apply(raw, start, local, keys)

    def _batches(
        self, plan: Any, start: jax.Array, count: int, keys: RunKeys
    ) -> list[Batch]:
        """``count`` consecutive batches from ``start``, read from the source at once.

        One read of ``count * batch_size`` records sliced statically costs XLA:CPU
        one kernel where a read per batch costs several per batch.
        """
        batch_size = self.batch_size
        raw = self.source._read(plan, start, count * batch_size, keys.shuffle)
        return [
            self._apply_local(
                {
                    name: x[k * batch_size : (k + 1) * batch_size]
                    for name, x in raw.items()
                },
                start + k * batch_size,
                keys,
            )
            for k in range(count)
        ]

    def _apply_local(self, raw: Batch, start: jax.Array, keys: RunKeys) -> Batch:
        """Runs the stages on this process's slice of a global batch of records."""
        local = self.batch_size // jax.process_count()
        low = jax.process_index() * local
        part = {name: x[low : low + local] for name, x in raw.items()}
        return self._apply(part, start + low, local, keys)

    def _apply(self, raw: Batch, start: jax.Array, count: int, keys: RunKeys) -> Batch:
        """Runs the stages on records read from stream positions ``start...``."""
        context = RecordContext(
            positions=batch_positions(start, count),
            source_length=len(self.source),
            op_key=keys.ops,
            identities=self._operator_identities(),
        )
        with record_context(context):
            return _checked(self(raw), type(self).__name__)

    def _host_plan(self, num_records: int) -> Any:
        """The source's host-made plan for the next ``num_records`` records.

        ``None`` inside a trace (``scan`` within the user's own jit): the source
        then plans inside the compiled run.
        """
        raw = self.position.get_raw_value()
        if isinstance(raw, jax.core.Tracer):
            return None
        # The key data of RunKeys.shuffle, which runs derive in-graph.
        key = fold_in_host(self.key.get_raw_value(), 0) if self.shuffle else None
        return self.source._host_plan(int(raw), num_records, key)

    def _set_position(self, position: jax.Array) -> None:
        """Sets position and epoch inside a trace."""
        self.position.set_value(position)
        self.epoch.set_value(position // len(self.source))

    def _advance(self, count: int) -> None:
        """Moves the stream position forward by ``count`` records."""
        raw = self.position.get_raw_value()
        if isinstance(raw, jax.core.Tracer):  # scan() inside the user's own jit
            self._set_position(raw + count)
        else:
            self._write_position(int(raw) + count)

    def _write_position(self, position: int) -> None:
        """Sets position and epoch from the host, outside any trace."""
        if position > _INT32_MAX:
            raise OverflowError(
                f"stream position {position} passed 2**31 - 1 records; build a new "
                "pipeline (the record stream of epoch e is the same in any "
                "pipeline of the same construction)."
            )
        write_host_value(self.position, np.asarray(position, np.int32))
        write_host_value(self.epoch, np.asarray(position // len(self.source), np.int32))

    def _operator_identities(self) -> dict[int, tuple]:
        """id(operator) -> its place in this pipeline (called at trace time).

        Linear: (stage index, rank inside the stage); DAG: (node name, rank);
        subclass: rank in graph order. Never the batch size or mode.
        """
        if self._order is not None:
            assert self.nodes is not None
            groups = [(("node", name), self.nodes[name]) for name in self._order]
        elif type(self).__call__ is not Pipeline.__call__:
            groups = [(("graph",), self)]
        else:
            groups = [(("stage", i), stage) for i, stage in enumerate(self.stages)]
        identities: dict[int, tuple] = {}
        for prefix, root in groups:
            rank = 0
            for path, node in nnx.iter_graph(root):
                if root is self and path[:1] == ("source",):
                    continue
                if (
                    isinstance(node, RecordKeyed)
                    and node.needs_record_keys
                    and id(node) not in identities
                ):
                    identities[id(node)] = (*prefix, rank)
                    rank += 1
        return identities

    def _construction(self) -> dict[str, int | str | bool]:
        """What a checkpoint of this pipeline can only be restored into.

        Source length and element spec, seed, shuffle, and the structure of the
        stages or DAG (types and names); not the batch size, which may change.
        """
        spec = {
            name: (tuple(s.shape), str(s.dtype))
            for name, s in self.source.element_spec.items()
        }
        key_data = np.asarray(self.key.get_raw_value()).tobytes()
        return {
            "source length": len(self.source),
            "element spec": repr(sorted(spec.items())),
            "seed": zlib.crc32(key_data),
            "shuffle": self.shuffle,
            "structure": self._structure(),
        }

    def _structure(self) -> str:
        """Types and names of the stages, DAG or sub-modules, for checkpoints."""
        parts = [type(self).__qualname__]
        if self._order is not None:
            assert self.nodes is not None
            for name in self._order:
                parts.append(f"{name}={_name(self.nodes[name])}")
            parts.append(f"edges={self._edges!r}, sink={self.sink!r}")
        else:
            parts.extend(f"{i}={_name(s)}" for i, s in enumerate(self.stages))
        for path, node in nnx.iter_graph(self):
            if (
                path
                and path[0] not in ("source", "stages", "nodes")
                and isinstance(node, nnx.Module)
            ):
                parts.append(f"{'/'.join(map(str, path))}={type(node).__qualname__}")
        return "; ".join(parts)

    # -- the three ways to be fed ---------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        """Batches from the current position to the end of ``num_epochs``.

        Position and epoch live in the pipeline, so a second ``iter()`` continues
        where the first stopped. Batches run across epoch boundaries; only the
        stream's final batch may be short (or dropped, with ``drop_last``).
        """
        if not self.source.random_access:
            return StreamIterator(self)
        return PipelineIterator(self)

    def step(self) -> Batch:
        """The next full batch, advancing the position by ``batch_size``.

        Traceable: inside your own ``nnx.jit`` / ``nnx.grad`` function that takes
        the pipeline as an argument, ``batch = pipe.step()`` loads the batch inside
        the compiled step and the position update persists like any nnx state
        change. Called eagerly it runs one cached compiled function. Ignores
        ``num_epochs`` and ``drop_last``: the stream is endless.

        Inside your own jit each call plans its batch alone (a shuffled source
        computes the permutation of the epochs it touches); ``scan`` plans once
        per run and is the fastest way to feed many steps.
        """
        if not self.source.random_access:
            raise TypeError(iteration_only_message(self.source, "Pipeline.step"))
        if isinstance(self.position.get_raw_value(), jax.core.Tracer):
            keys = self._run_keys()
            start = jnp.asarray(self.position[...], jnp.int32)
            plan = self.source._plan(start, self.batch_size, keys.shuffle)
            batch = self._batch(plan, start, keys)
            self._set_position(start + self.batch_size)
            return batch
        program = self._program(
            ("step",), (self,), None, lambda s, c, g: build_chunk(s, c, length=1)
        )
        (batch,) = program(self._host_plan(self.batch_size))[0]
        self._advance(self.batch_size)
        return batch

    def scan(
        self,
        step_fn: Callable[..., Any],
        *,
        length: int,
        modules: Sequence[nnx.Pytree] = (),
        init_carry: Any = None,
        unroll: int | None = None,
    ) -> Any:
        """Runs ``length`` steps of ``step_fn`` as one compiled loop.

        Each step loads the next full batch (the stream runs on into the next
        epoch) and calls ``step_fn(*modules, batch) -> out``, or, with
        ``init_carry``, ``step_fn(carry, *modules, batch) -> (carry, out)``. The
        pipeline and every module are lifted as carry, as ``nnx.scan`` does with
        ``nnx.StateAxes({...: nnx.Carry})`` (the dataset's ``DataVar`` s are
        broadcast, never carried): parameter, optimizer, counter and RNG updates
        made in ``step_fn`` persist after the call. The position advances by
        ``length * batch_size``, so scan and iteration continue each other.

        The compiled program is cached on the pipeline, keyed on
        ``(id(step_fn), length, len(modules), init_carry is not None)``: calling
        again with the same ``step_fn`` and ``length`` does not trace ``step_fn``
        again, and costs one ``jax.jit`` dispatch plus a few microseconds. The
        cache holds a reference to ``step_fn``, so a recycled ``id`` can never run a
        stale body. Changing the structure of the pipeline or a module between
        calls (not just Variable values) is detected and re-flattened.

        Args:
            step_fn: the training (or evaluation) step.
            length: number of steps, a static Python int.
            modules: ``nnx.Module`` s and other nnx graph nodes (``nnx.Optimizer``)
                that ``step_fn`` receives.
            init_carry: optional initial carry (any pytree of arrays).
            unroll: ``lax.scan`` unroll factor; by default
                :func:`default_unroll` picks one from the batch size (data-bound
                loops on CPU) or uses 1 (training steps, GPU, TPU).

        Returns:
            The outputs stacked on a leading axis of ``length``, or
            ``(carry, stacked outputs)`` when ``init_carry`` is given.
        """
        if not callable(step_fn):
            raise TypeError(f"step_fn must be callable, got {step_fn!r}.")
        if not self.source.random_access:
            raise TypeError(iteration_only_message(self.source, "Pipeline.scan"))
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a Python int >= 1, got {length!r}.")
        modules = tuple(modules)
        for index, module in enumerate(modules):
            if not isinstance(module, nnx.Pytree):
                raise TypeError(
                    f"modules[{index}] is a {type(module).__name__}, not an "
                    "nnx.Module (or other nnx graph node such as nnx.Optimizer); "
                    "pass arrays through init_carry instead."
                )
        has_carry = init_carry is not None
        if unroll is not None and (
            isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1
        ):
            raise ValueError(f"unroll must be a Python int >= 1, got {unroll!r}.")

        def build(spec: GraphSpec, compiled: Compiled, graph: Graph) -> Callable:
            chosen = unroll
            if chosen is None:
                chosen = default_unroll(batch_nbytes(graph), len(modules))
            return build_scan(
                spec,
                compiled,
                step_fn,
                length=length,
                has_carry=has_carry,
                unroll=chosen,
            )

        cache_key = ("scan", id(step_fn), length, len(modules), has_carry, unroll)
        program = self._program(
            cache_key,
            (self, *modules),
            step_fn,
            build,
        )
        carry, outs = program(self._host_plan(length * self.batch_size), init_carry)
        self._advance(length * self.batch_size)
        return (carry, outs) if has_carry else outs

    def _program(
        self,
        cache_key: tuple,
        nodes: tuple,
        owner: object,
        build: Callable[[GraphSpec, Compiled, Graph], Callable],
    ) -> Program:
        """The cached program for ``cache_key``, re-flattened if the graph changed.

        ``cache_key`` starts with the kind of run and, for scan, ``id(step_fn)``;
        ``owner`` is the object the entry is for (``step_fn``), held so its id
        cannot be recycled. Compiled functions are shared across pipelines with
        the same structure (keyed on the GraphSpec and the owner itself).
        """
        programs = _PROGRAMS.get(self)
        if programs is None:
            programs = _PROGRAMS[self] = collections.OrderedDict()
        program = programs.get(cache_key)
        if program is not None and program.owner is owner:
            if program.graph.matches(nodes):
                programs.move_to_end(cache_key)
                return program
        graph = Graph(nodes)
        compiled_key = (cache_key[0], *cache_key[2:], owner, graph.spec)
        compiled = _COMPILED.get(compiled_key)
        if compiled is None:
            compiled = Compiled()
            compiled.fn = build(graph.spec, compiled, graph)
            _COMPILED[compiled_key] = compiled
            if len(_COMPILED) > _MAX_COMPILED:
                _COMPILED.popitem(last=False)
        program = Program(graph, compiled, owner)
        programs[cache_key] = program
        programs.move_to_end(cache_key)
        if len(programs) > _MAX_PROGRAMS:
            programs.popitem(last=False)
        return program


def _name(stage: object) -> str:
    """A stage's name for messages: a function's name, else its class's."""
    if isinstance(stage, nnx.Module):
        return type(stage).__name__
    return getattr(stage, "__name__", type(stage).__name__)


def _checked(batch: Any, where: str) -> Batch:
    """Refuses a stage output that is not a dict of arrays, naming the stage."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{where} returned a {type(batch).__name__}; stages must return a batch: "
            "a dict of field name -> array."
        )
    return batch  # type: ignore[return-value]
