"""``Pipeline``: a source, stages, and three ways to be fed from them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from datarax.core._checks import check_options, check_prefetch, check_rngs, check_stages
from datarax.core._compiled import build_chunk, cached_program
from datarax.core._feed import (
    advance,
    check_not_closed_over,
    check_room,
    host_plan,
    is_traced,
    traced_step,
)
from datarax.core._iterable import IterableSource
from datarax.core._iterator import iterate
from datarax.core._joint import joint_scan
from datarax.core._keys import seed_key_data
from datarax.core._records import operator_identities
from datarax.core._scan import check_scan_args, scan_builder
from datarax.core._sharding import check_sharding, replicate_dataset
from datarax.core._source import Batch, SourceBase
from datarax.core._stages import Stage, check_callables, checked_input, run_stages
from datarax.nodes._dag import Dag


class StreamVar(nnx.Variable):
    """A pipeline's stream state: position, epoch and seed key.

    Together with the state of stochastic stages this is everything needed to
    continue a stream exactly; ``nnx.state(pipe, StreamVar)`` selects it.
    """


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
        ``num_epochs`` defaults to 1: a ``for`` loop ends after one pass over the
        source, ``ceil(len(source) / batch_size)`` batches. Pass
        ``num_epochs=None`` for an endless stream (``step()`` / ``scan`` never stop).

    Args:
        source: the source to read (a :class:`~datarax.DataSource`, or an
            :class:`~datarax.core.IterableSource` for iteration only).
        stages: callables applied in order to each batch.
        batch_size: records per batch (global: on ``n`` JAX processes each serves a
            ``1/n`` slice, so it must divide by the process count).
        rngs: seeds the shuffle order and stochastic operators (their keys are
            of the seed's PRNG implementation, ``key_impl``); ``nnx.Rngs(0)``.
        shuffle: serve each epoch in a fresh permutation (needs a source that
            supports shuffling).
        num_epochs: epochs that iteration serves; ``None`` for endless.
        drop_last: in iteration, drop the stream's final short batch.
        sharding: a ``NamedSharding`` of the batch's leading axis (e.g.
            ``NamedSharding(mesh, PartitionSpec("data"))``): every batch is then a
            global ``jax.Array`` split over those devices (see docs/scaling.md).
        prefetch: iteration's host batches (iteration-only sources, host
            stages) read and put on the device this many batches ahead, by a
            thread; 0: read when asked for.

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
        source: SourceBase,
        stages: Sequence[Stage] = (),
        batch_size: int,
        rngs: nnx.Rngs | None = None,
        shuffle: bool = False,
        num_epochs: int | None = 1,
        drop_last: bool = False,
        sharding: NamedSharding | None = None,
        prefetch: int = 2,
    ):
        check_options(source, batch_size, shuffle, num_epochs, drop_last)
        self.prefetch = check_prefetch(prefetch)
        self.sharding = check_sharding(
            sharding, len(source), batch_size, num_epochs, drop_last
        )
        stages = check_stages(stages)
        rngs = nnx.Rngs(0) if rngs is None else check_rngs(rngs)
        self.source = source
        self.stages = nnx.List(stages)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.num_epochs = num_epochs
        self.drop_last = bool(drop_last)
        # Key data and impl name, not a typed key: jit checks those per call (5 us).
        self.key_impl, seed = seed_key_data(rngs)
        self.key = StreamVar(seed)
        # Host (NumPy) int32 scalars: the host advances them without a device
        # round trip; compiled runs take them as ordinary inputs.
        self.position = StreamVar(np.asarray(0, np.int32))
        self.epoch = StreamVar(np.asarray(0, np.int32))
        self.nodes: nnx.Dict | None = None
        self._dag: Dag | None = None
        if stages:
            self.operator_identities()  # refuses a stochastic operator at two stages
        if self.sharding is not None:
            replicate_dataset(source, self.sharding)

    @classmethod
    def from_dag(
        cls,
        *,
        source: SourceBase,
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
                ``drop_last``, ``sharding``, as for :class:`Pipeline`.

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
        dag = Dag.build(nodes, edges, sink)
        arity = {name: len(preds) for name, preds in dag.edges}
        check_callables(dict(nodes), "DAG node", arity)
        pipe = cls(source=source, **kwargs)
        pipe.nodes = nnx.data(nnx.Dict(dict(nodes)))
        pipe._dag = dag
        pipe.operator_identities()  # refuses a stochastic operator at two nodes
        return pipe

    @property
    def dag(self) -> Dag | None:
        """For a DAG pipeline, its wiring (edges, sink, run order); else ``None``."""
        return self._dag

    @property
    def edges(self) -> dict[str, list[str]] | None:
        """For a DAG pipeline, node name -> predecessors; else ``None``."""
        return None if self._dag is None else self._dag.edges_dict()

    @property
    def sink(self) -> str | None:
        """For a DAG pipeline, the node whose output is the batch; else ``None``."""
        return None if self._dag is None else self._dag.sink

    def __call__(self, batch: Batch) -> Batch:
        """Runs the stages (or the DAG) on one batch from the source.

        Override in a subclass to wire stages any way you like; stochastic
        operators reached from ``self`` get their per-record keys either way.
        """
        batch = checked_input(batch)
        if self._dag is not None:
            assert self.nodes is not None
            return self._dag.run(self.nodes, batch)
        return run_stages(list(self.stages), batch)

    def operator_identities(self) -> dict[int, tuple]:
        """``id(operator)`` -> its place in this pipeline, per stochastic operator.

        Linear: ``("stage", index, rank)``; DAG: ``("node", name, rank)``;
        subclass: ``("graph", rank)`` in graph order (the source left out). An
        operator's per-record keys derive from its identity, never from the
        batch size or the mode.
        """
        if self._dag is not None:
            assert self.nodes is not None
            groups = [(("node", n), self.nodes[n]) for n in self._dag.order]
            return operator_identities(groups)
        if type(self).__call__ is not Pipeline.__call__:
            return operator_identities([(("graph",), self)], skip="source")
        return operator_identities(
            [(("stage", i), stage) for i, stage in enumerate(self.stages)]
        )

    # -- the three ways to be fed ---------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        """Batches from the current position to the end of ``num_epochs``.

        Position and epoch live in the pipeline, so a second ``iter()`` continues
        where the first stopped. Batches run across epoch boundaries; only the
        stream's final batch may be short (or dropped, with ``drop_last``).
        """
        if not is_traced(self):
            check_not_closed_over("iter(pipeline)", self)
        return iterate(self)

    def step(self) -> Batch:
        """The next full batch, advancing the position by ``batch_size``.

        Traceable: inside your own ``nnx.jit`` / ``nnx.grad`` function that takes
        the pipeline as an argument, ``batch = pipe.step()`` loads the batch inside
        the compiled step and the position update persists like any nnx state
        change (plain ``jax.jit`` carries no nnx state out: return the pipeline
        from your function there). Called eagerly it runs one cached compiled
        function. Ignores ``num_epochs`` and ``drop_last``: the stream is endless.
        Inside your own jit each call plans its batch alone; ``scan`` plans once
        per run and is the fastest way to feed many steps.
        """
        self._require_random_access("Pipeline.step")
        if is_traced(self):
            return traced_step(self)
        check_not_closed_over("Pipeline.step()", self)
        check_room(self, self.batch_size)
        program = cached_program(
            self, ("step",), (self,), None, lambda spec, g: build_chunk(spec, length=1)
        )
        (batch,) = program(host_plan(self, self.batch_size))[0]
        advance(self, self.batch_size)
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
        ``init_carry``, ``step_fn(carry, *modules, batch) -> (carry, out)``.
        With the pipeline itself among ``modules``, scan passes no batch:
        ``step_fn`` fetches its batches by ``pipe.step()``, inside ``nnx.grad`` to
        train the stages' parameters with the model (``nnx.scan`` under
        ``nnx.jit``; the fast data path below is the batch-passing form's). The
        pipeline and every module are lifted as carry, as ``nnx.scan`` does with
        ``nnx.StateAxes({...: nnx.Carry})`` (the dataset's ``DataVar`` s are
        broadcast, never carried): parameter, optimizer, counter and RNG updates
        made in ``step_fn`` persist after the call, plain array attributes of a
        module included, as under ``nnx.jit``. The position advances by
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
                :func:`~datarax.core.default_unroll` picks one from the batch size
                (data-bound loops on CPU) or uses 1 (training steps, GPU, TPU).

        Returns:
            The outputs stacked on a leading axis of ``length``, or
            ``(carry, stacked outputs)`` when ``init_carry`` is given.
        """
        self._require_random_access("Pipeline.scan")
        if not is_traced(self):
            check_not_closed_over("Pipeline.scan", self)
        checked = check_scan_args(self, step_fn, length, modules, init_carry, unroll)
        modules, joint = checked
        has_carry = init_carry is not None
        if joint:
            carry, outs = joint_scan(
                step_fn, length=length, modules=modules, init_carry=init_carry,
                unroll=unroll or 1,
            )  # fmt: skip
            return (carry, outs) if has_carry else outs
        build = scan_builder(
            step_fn,
            length=length,
            num_modules=len(modules),
            has_carry=has_carry,
            unroll=unroll,
        )
        cache_key = ("scan", id(step_fn), length, len(modules), has_carry, unroll)
        program = cached_program(self, cache_key, (self, *modules), step_fn, build)
        carry, outs = program(host_plan(self, length * self.batch_size), init_carry)
        advance(self, length * self.batch_size)
        return (carry, outs) if has_carry else outs

    def _require_random_access(self, what: str) -> None:
        if isinstance(self.source, IterableSource):
            raise TypeError(self.source.needs_random_access(what))
