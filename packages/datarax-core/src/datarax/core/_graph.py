"""A pipeline's module graph, flattened once: live values, and a guard on its shape.

A :class:`Graph` splits the pipeline and the user's modules once and keeps what a
compiled call needs every time: the live ``Variable`` objects and plain array
attributes (read before and written after each call) and a snapshot of the
graph's structure. :meth:`Graph.matches` is the cheap check, run before every
call, that the graph is still the one flattened; :class:`GraphSpec` is the
hashable structure compiled functions are keyed on.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from datarax.core._source import DataVar, SourceBase


def _is_variable(x: object) -> bool:
    return isinstance(x, nnx.Variable)


_ARRAY = object()  # any array value, in a snapshot: slots read arrays live


def _is_array(value: object) -> bool:
    return isinstance(value, jax.Array | np.ndarray)


class _Watched:
    """One container the structure guard watches.

    A module's attributes, or a plain list or dict inside a module. The
    snapshot is the identities of its values, in order. Array values count only
    as "an array": slots read them afresh on every call, so replacing one (a
    step writing back a counter) is no structural change, while adding,
    removing or replacing anything else is.
    """

    def __init__(self, container: dict | list):
        self.container = container
        values = container.values() if isinstance(container, dict) else container
        self.with_arrays = any(_is_array(v) for v in values)
        self.snapshot = self.take()

    def take(self) -> tuple:
        container = self.container
        if isinstance(container, dict):
            values: Any = container.values()
            if not self.with_arrays:  # the common case, the cheapest check
                return tuple(map(id, values))
            keys: tuple = tuple(container)
        else:
            values, keys = container, ()
        return keys + tuple(_ARRAY if _is_array(v) else id(v) for v in values)


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
                "a compiled step changed the structure of the pipeline or of a "
                "module (added, removed or replaced a Variable or sub-module, or "
                "changed a static attribute); inside step(), scan and iteration "
                "only the values of Variables and array attributes may change. "
                "Make structural changes outside the compiled run."
            )
        leaves = jax.tree.leaves(state, is_leaf=_is_variable)
        return [
            leaf.get_raw_value() if isinstance(leaf, nnx.Variable) else leaf
            for leaf, d in zip(leaves, self.is_data, strict=True)
            if not d
        ]


class AttributeSlot:
    """A plain array attribute of a module, read and written like a Variable.

    nnx treats such attributes as state (``nnx.jit`` carries them); so do
    compiled runs. The owner is a module (held weakly) or a plain list or dict
    inside one (``nnx.data([...])``), read and written item by item.
    """

    def __init__(self, owner: Any, name: str | int):
        self._name = name
        if isinstance(owner, nnx.Pytree):
            self._module: weakref.ref | None = weakref.ref(owner)
            self._container = None
        else:  # a plain list or dict: it holds no reference to the pipeline
            self._module, self._container = None, owner
        self._by_item = self._module is None or isinstance(name, int)

    def _owner(self) -> Any:
        return self._container if self._module is None else self._module()

    def get_raw_value(self) -> Any:
        """The attribute's current value."""
        owner = self._owner()
        return owner[self._name] if self._by_item else getattr(owner, self._name)

    def set_raw_value(self, value: Any) -> None:
        """Sets the attribute, as ``nnx.update`` does after ``nnx.jit``."""
        owner = self._owner()
        if self._by_item:
            owner[self._name] = value
        else:
            setattr(owner, self._name, value)


def _slot(owners: dict, path: tuple) -> AttributeSlot:
    """The slot of the plain array at ``path`` (nnx state keys), or a clear error."""
    keys = tuple(getattr(k, "key", k) for k in path)
    where = "/".join(map(str, keys[1:])) or "."
    which = f"modules[{keys[0] - 1}]" if keys[0] else "the pipeline"
    for depth in range(1, len(keys)):
        if isinstance(owners.get(keys[:depth]), SourceBase):
            raise TypeError(
                f"the source {type(owners[keys[:depth]]).__name__} of {which} holds "
                f"an array as a plain attribute at {where!r}: it would be carried "
                "through every compiled call and written into checkpoints. Hold "
                "dataset arrays in datarax.DataVar Variables, and memory maps or "
                "readers behind a plain (non-array) holder object."
            )
    owner = owners.get(keys[:-1])
    if not isinstance(owner, nnx.Pytree | list | dict):
        raise TypeError(
            f"{which} holds an array inside a {type(owner).__name__} at {where!r}; "
            "compiled runs carry plain arrays as module attributes or items of "
            "lists and dicts only. Wrap it in an nnx.Variable (nnx.Param for "
            "parameters), or hold the values in an nnx.List / nnx.Dict."
        )
    return AttributeSlot(owner, keys[-1])


class Graph:
    """The pipeline (first) and the user's modules, flattened once.

    Holds the live Variables and array attributes (their values are read and
    written per call) and weak references to the nodes, so a cache entry never
    keeps a pipeline alive.
    """

    def __init__(self, nodes: tuple):
        graphdef, state = nnx.split(nodes)
        leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_variable)[0]
        owners = {path: node for path, node in nnx.iter_graph(nodes)}
        # The attribute dicts of every module and the plain lists and dicts in
        # them (not the modules: a dict holds no reference to its owner, so this
        # keeps no pipeline alive).
        self._watched = [
            _Watched(vars(node) if isinstance(node, nnx.Pytree) else node)
            for node in owners.values()
            if isinstance(node, nnx.Pytree | list | dict)
        ]
        slots = [
            leaf if isinstance(leaf, nnx.Variable) else _slot(owners, path)
            for path, leaf in leaves
        ]
        is_data = tuple(isinstance(v, DataVar) for v in slots)
        self.spec = GraphSpec(
            graphdef, jax.tree.structure(state, is_leaf=_is_variable), is_data
        )
        self.carry_vars = [v for v, d in zip(slots, is_data, strict=True) if not d]
        self.data_vars = [v for v, d in zip(slots, is_data, strict=True) if d]
        self._nodes = [weakref.ref(node) for node in nodes]

    def matches(self, nodes: tuple) -> bool:
        """Whether ``nodes`` are still exactly the graph that was flattened.

        Runs before every call (and every buffered batch), so it is one pass of
        identity checks: anything in any watched container that was replaced,
        added or removed since the flattening shows as a different snapshot.
        """
        if len(nodes) != len(self._nodes):
            return False
        for new, old in zip(nodes, self._nodes, strict=True):
            if new is not old():
                return False
        for watched in self._watched:  # a loop: no generator per call
            if watched.take() != watched.snapshot:
                return False
        return True

    def nodes(self) -> tuple:
        """The flattened nodes (while they live)."""
        return tuple(ref() for ref in self._nodes)

    def read(self) -> tuple[list, list]:
        """Current raw values: (carried, data)."""
        return (
            [v.get_raw_value() for v in self.carry_vars],
            [v.get_raw_value() for v in self.data_vars],
        )
