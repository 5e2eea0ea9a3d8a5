"""A declared DAG of pipeline nodes as a value: wiring, validation, execution."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from datarax.core._source import Batch
from datarax.core._stages import Stage, record_count, run_stage


@dataclasses.dataclass(frozen=True)
class Dag:
    """The wiring of a DAG pipeline: who feeds whom, the sink, the run order.

    A hashable value without the nodes themselves (those are the pipeline's
    sub-modules), so it can be a static attribute of the pipeline.

    Examples:
        >>> dag = Dag.build({"a": abs, "b": abs}, {"a": [], "b": ["a"]}, "b")
        >>> dag.order, dag.edges_dict()
        (('a', 'b'), {'a': [], 'b': ['a']})
    """

    edges: tuple[tuple[str, tuple[str, ...]], ...]
    sink: str
    order: tuple[str, ...]

    @classmethod
    def build(
        cls,
        nodes: Mapping[str, object],
        edges: Mapping[str, Sequence[str]],
        sink: str,
    ) -> Dag:
        """Validates the wiring (see :func:`validate_dag`) and returns it."""
        order = validate_dag(nodes, edges, sink)
        return cls(tuple((n, tuple(edges[n])) for n in nodes), sink, order)

    def edges_dict(self) -> dict[str, list[str]]:
        """Node name -> its predecessors, as given to ``from_dag``."""
        return {name: list(preds) for name, preds in self.edges}

    def run(self, nodes: Mapping[str, Stage], batch: Batch) -> Batch:
        """Runs ``nodes`` in order on the source ``batch``; the sink's output."""
        edges = dict(self.edges)
        count = record_count(batch)
        outputs: dict[str, Batch] = {}
        for name in self.order:
            inputs = [outputs[p] for p in edges[name]] if edges[name] else [batch]
            where = f"DAG node {name!r}"
            outputs[name] = run_stage(nodes[name], where, count, *inputs)
        return outputs[self.sink]


def validate_dag(
    nodes: Mapping[str, object], edges: Mapping[str, Sequence[str]], sink: str
) -> tuple[str, ...]:
    """Checks a DAG's wiring and returns its nodes in execution order.

    ``edges[name]`` lists the nodes whose outputs ``name`` takes as positional
    arguments, in order; ``[]`` means it reads the source batch.

    Args:
        nodes: node name -> callable.
        edges: node name -> names of its predecessors.
        sink: the node whose output is the pipeline's batch.

    Returns:
        The node names in a topological order (predecessors first, ties in the
        order of ``nodes``).

    Raises:
        ValueError: naming the offending nodes, for a node without an ``edges``
            entry, an ``edges`` entry or predecessor that is not a node, a sink
            that is not a node, a cycle, or a dead node (one whose output cannot
            reach the sink).

    Examples:
        >>> validate_dag({"a": abs, "b": abs}, {"a": [], "b": ["a"]}, "b")
        ('a', 'b')
    """
    _check_types(nodes, edges, sink)
    names = list(nodes)
    missing = [n for n in names if n not in edges]
    if missing:
        raise ValueError(
            f"DAG nodes {missing} have no entry in edges; give each node its list of "
            "predecessors ([] to read the source batch)."
        )
    unknown_keys = [n for n in edges if n not in nodes]
    if unknown_keys:
        raise ValueError(
            f"edges names {unknown_keys}, which are not in nodes {names}; add them "
            "to nodes or remove their edges entries."
        )
    unknown = sorted(
        {f"{p!r} (input of {n!r})" for n in names for p in edges[n] if p not in nodes}
    )
    if unknown:
        raise ValueError(
            f"edges refer to unknown nodes: {', '.join(unknown)}; known nodes are "
            f"{names}."
        )
    if sink not in nodes:
        raise ValueError(f"sink {sink!r} is not one of the nodes {names}.")

    order = _topological_order(names, edges)

    # Dead nodes: walk backwards from the sink; whatever is not reached computes
    # an output nobody uses.
    live, todo = {sink}, [sink]
    while todo:
        for pred in edges[todo.pop()]:
            if pred not in live:
                live.add(pred)
                todo.append(pred)
    dead = [n for n in names if n not in live]
    if dead:
        raise ValueError(
            f"DAG nodes {dead} are dead: the sink {sink!r} does not depend on them, so "
            "their outputs would be unused; remove them or wire them towards the sink."
        )
    return order


def _check_types(
    nodes: Mapping[str, object], edges: Mapping[str, Sequence[str]], sink: str
) -> None:
    """Refuses node names that are not str and edges that are not lists of names.

    Node names become attribute names of the pipeline's ``nodes`` and keys of
    checkpoints; a string given as an edges entry would be read letter by letter.
    """
    if not isinstance(nodes, Mapping) or not isinstance(edges, Mapping):
        raise TypeError(
            "nodes and edges must be dicts: nodes={name: callable}, "
            "edges={name: [predecessor names]}."
        )
    bad = list(
        dict.fromkeys(n for n in [*nodes, *edges, sink] if not isinstance(n, str))
    )
    if bad:
        raise TypeError(
            f"DAG node names must be str, got {bad!r}; name nodes with strings "
            "(e.g. 'decode', 'augment')."
        )
    for name, preds in edges.items():
        if isinstance(preds, str | bytes) or not isinstance(preds, Sequence):
            hint = (
                f"; write edges[{name!r}] = [{preds!r}] for one predecessor"
                if isinstance(preds, str)
                else " ([] for a node that reads the source batch)"
            )
            raise TypeError(
                f"edges[{name!r}] must be a list of node names, got {preds!r}{hint}."
            )
        bad = [p for p in preds if not isinstance(p, str)]
        if bad:
            raise TypeError(f"edges[{name!r}] names non-str nodes {bad!r}.")


def _topological_order(
    names: list[str], edges: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """Kahn's algorithm; raises ``ValueError`` naming the nodes on a cycle."""
    indegree = {n: len(set(edges[n])) for n in names}
    users: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for pred in set(edges[n]):
            users[pred].append(n)
    ready = [n for n in names if indegree[n] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for user in users[node]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) < len(names):
        cycle = _find_cycle([n for n in names if n not in order], edges)
        raise ValueError(
            f"DAG has a cycle: {' -> '.join(cycle)}; a node cannot depend on its own "
            "output."
        )
    return tuple(order)


def _find_cycle(candidates: list[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle among ``candidates`` (nodes Kahn's algorithm could not order)."""
    node, seen = candidates[0], []
    remaining = set(candidates)
    while node not in seen:
        seen.append(node)
        node = next(p for p in edges[node] if p in remaining)
    # seen is a path that enters a loop at `node`; edges point to inputs, so
    # reverse it to read in data-flow order.
    loop = seen[seen.index(node) :]
    loop.reverse()
    first = min(range(len(loop)), key=lambda i: candidates.index(loop[i]))
    loop = loop[first:] + loop[:first]  # start at the earliest-declared node
    return [*loop, loop[0]]
