"""Checkpoints of pipelines and modules as plain dicts of NumPy arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from datarax.checkpoint._errors import CheckpointError
from datarax.checkpoint._fingerprint import construction
from datarax.checkpoint._leaves import describe, is_typed_key, preview, restore_leaf
from datarax.core import DataVar, Pipeline

CONSTRUCTION = "__construction__"
"""Key under which a module's entry records the construction of its pipelines."""

StateDict = dict[str, Any]


def state_dict(*modules: nnx.Pytree) -> StateDict:
    """The resumable state of ``modules`` as a plain nested dict of NumPy arrays.

    Entry ``"0"`` holds the first module's state, ``"1"`` the second's, and so on:
    ``nnx.to_pure_dict`` of every Variable except the datasets' ``DataVar`` s (a
    pipeline over a 1 GB source checkpoints in a few KB), with new-style PRNG keys
    stored as their key data. Every pipeline found in a module also records its
    construction (source length and element spec, shuffle, the structure of its
    stages or DAG; the seed is its key Variable), so that restoring into another
    construction fails loudly instead of serving a different stream.

    Args:
        *modules: pipelines, models, optimizers: any nnx graph nodes.

    Returns:
        ``{"0": {...}, "1": {...}, ...}``, NumPy arrays at the leaves.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.sources import MemorySource
        >>> pipe = Pipeline(source=MemorySource({"x": np.arange(10)}), batch_size=4)
        >>> _ = next(iter(pipe))
        >>> int(state_dict(pipe)["0"]["position"])
        4
    """
    check_some(modules, "state_dict")
    out: StateDict = {}
    for index, module in enumerate(modules):
        _check_module(module, index)
        pure = nnx.to_pure_dict(nnx.state(module, nnx.Not(DataVar)))
        entry = _to_numpy(pure)
        constructions = {
            path: _as_arrays(construction(pipe)) for path, pipe in _pipelines(module)
        }
        if constructions:
            entry[CONSTRUCTION] = constructions
        out[str(index)] = entry
    return out


def load_state_dict(d: Mapping[str, Any], *modules: nnx.Pytree) -> None:
    """Puts a :func:`state_dict` back into freshly built ``modules``, in order.

    Each module must be of the same construction as the one saved (the batch size
    may differ): then a pipeline serves exactly the batches the saved one would
    have served next, in iteration and in ``scan``. Every leaf is checked against
    the module's value it replaces (shape, and a dtype it converts to without
    changing a number), and every pipeline's stream state against what a pipeline
    can hold. Nothing is written unless every module passes.

    Args:
        d: a dict as :func:`state_dict` returns.
        *modules: the modules to restore into, in the order they were saved.

    Raises:
        CheckpointError: (a ``ValueError``) naming the entry (``0/position``) and
            what came in, for a ``d`` that is not a dict of one state dict per
            module, a pipeline of another construction (source length or element
            spec, seed, shuffle, stages), a state of another structure (Variables
            missing or added, other shapes), a leaf whose dtype the module's cannot
            take (a float for an integer, a bool for a number, an integer out of
            range, text or Python objects, a PRNG key not stored as uint32 key
            data), or a pipeline stream state no pipeline is in: a negative
            position, an epoch other than ``position // len(source)``.
        TypeError: for a module that is not an nnx graph node.
    """
    check_some(modules, "load_state_dict")
    entries = _entries(d, len(modules))
    updates = []
    for index, (module, entry) in enumerate(zip(modules, entries, strict=True)):
        _check_module(module, index)
        _check_construction(module, _saved_constructions(entry, index), index)
        state = nnx.state(module, nnx.Not(DataVar))
        template = nnx.to_pure_dict(state)
        loaded = {k: v for k, v in entry.items() if k != CONSTRUCTION}
        pure = _restore_like(template, loaded, str(index))
        _check_streams(module, loaded, index)
        updates.append((module, state, pure))
    # Written only now, so that a refused entry leaves every module as it was.
    for module, state, pure in updates:
        nnx.replace_by_pure_dict(state, pure)
        nnx.update(module, state)


# -- helpers ----------------------------------------------------------------------


def check_some(modules: tuple, what: str) -> None:
    """Refuses a call without modules: its checkpoint would hold nothing."""
    if not modules:
        raise TypeError(
            f"{what} got no modules to checkpoint; pass the pipeline and the "
            "modules it feeds (pipe, model, optimizer), in the same order when "
            "saving and restoring."
        )


def _check_module(module: object, index: int) -> None:
    if not isinstance(module, nnx.Pytree):
        raise TypeError(
            f"module {index} is a {type(module).__name__}, not an nnx.Module (or "
            "other nnx graph node)."
        )


def _pipeline_nodes(module: nnx.Pytree) -> Iterator[tuple[tuple, Pipeline]]:
    for path, node in nnx.iter_graph(module):
        if isinstance(node, Pipeline):
            yield tuple(path), node


def _pipelines(module: nnx.Pytree) -> Iterator[tuple[str, Pipeline]]:
    for path, pipe in _pipeline_nodes(module):
        yield "/".join(map(str, path)) or ".", pipe


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy(v) for k, v in tree.items()}
    if is_typed_key(tree):
        return np.array(jax.random.key_data(tree))
    return np.array(tree)  # a copy: later writes to the module never reach it


def _as_arrays(construction: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in construction.items()}


def _entries(d: Any, count: int) -> list[Mapping[str, Any]]:
    """The entries ``"0" .. str(count - 1)`` of ``d``, each checked to be a dict."""
    if not isinstance(d, Mapping):
        raise CheckpointError(
            f"a checkpoint state is a dict {{'0': {{...}}, '1': ...}} with one entry "
            f"per module, as state_dict returns; got {describe(d)}."
        )
    expected = [str(i) for i in range(count)]
    if len(d) != count:
        raise CheckpointError(
            f"the checkpoint holds {len(d)} modules {sorted(d, key=repr)}, but "
            f"{count} were given to restore into; pass them in the order they were "
            "saved."
        )
    if set(d) != set(expected):
        raise CheckpointError(
            f"the checkpoint's entries are {sorted(d, key=repr)}; expected "
            f"{expected}, one per module in the order they were saved, as "
            "state_dict names them."
        )
    for key in expected:
        if not isinstance(d[key], Mapping):
            raise CheckpointError(
                f"checkpoint entry {key} is {describe(d[key])}; expected the "
                "module's state, a dict of arrays as state_dict returns."
            )
    return [d[key] for key in expected]


def _saved_constructions(entry: Mapping, index: int) -> dict[str, dict[str, Any]]:
    """The construction records of ``entry``: pipeline path -> field -> value."""
    saved = entry.get(CONSTRUCTION, {})
    where = f"{index}/{CONSTRUCTION}"
    if not isinstance(saved, Mapping):
        raise CheckpointError(
            f"checkpoint entry {where} is {describe(saved)}; expected a dict from "
            "each pipeline's path to the record of its construction."
        )
    out: dict[str, dict[str, Any]] = {}
    for path, record in saved.items():
        if not isinstance(record, Mapping):
            raise CheckpointError(
                f"checkpoint entry {where}/{path} is {describe(record)}; expected a "
                "dict from each construction field to its value."
            )
        out[str(path)] = {}
        for field, value in record.items():
            try:
                array = np.asarray(value)
            except (TypeError, ValueError):  # a ragged list, say
                array = np.asarray(None)
            if array.size != 1 or array.dtype.kind not in "biuU":
                raise CheckpointError(
                    f"checkpoint entry {where}/{path}/{field} is {describe(value)}; "
                    "expected one number, bool or text."
                )
            out[str(path)][str(field)] = array.item()
    return out


def _check_construction(module: nnx.Pytree, saved: Mapping, index: int) -> None:
    """Compares every pipeline of ``module`` with the construction it was saved in."""
    problems = []
    for path, pipe in _pipelines(module):
        record = saved.get(path)
        if record is None:
            problems.append(f"pipeline at {path!r} is not in the checkpoint")
            continue
        fields = construction(pipe)
        for field, value in fields.items():
            if field not in record:
                problems.append(
                    f"{field}: not in the checkpoint (saved by an older datarax, "
                    f"which could not record it), {value!r} here"
                )
            elif record[field] != value:
                problems.append(
                    f"{field}: {record[field]!r} in the checkpoint, {value!r} here"
                )
        # A field only the checkpoint has (a seed's PRNG implementation other
        # than the default) differs just as much as a changed one.
        problems.extend(
            f"{field}: {record[field]!r} in the checkpoint, the default here"
            for field in sorted(set(record) - set(fields))
        )
    if problems:
        raise CheckpointError(
            f"cannot restore module {index}: it was saved from another construction "
            f"({'; '.join(problems)}). Build the pipeline exactly as when it was "
            "saved (the batch size may differ)."
        )


def _restore_like(template: Any, loaded: Any, where: str) -> Any:
    """``loaded`` converted to the types of ``template``, checked leaf by leaf."""
    if not isinstance(template, Mapping):
        return restore_leaf(template, loaded, where)
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"checkpoint entry {where} is {describe(loaded)}; the module holds a "
            "dict of state there."
        )
    odd = [k for k in loaded if not isinstance(k, str)]
    if odd:
        raise CheckpointError(
            f"checkpoint entry {where} has the key {odd[0]!r} "
            f"({type(odd[0]).__name__}); state keys are strings, as state_dict "
            "writes them."
        )
    keys = {str(k): k for k in template}
    missing = sorted(set(keys) - set(loaded))
    extra = sorted(set(loaded) - set(keys))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint entry {where} does not match the module's state: "
            f"missing {missing}, unexpected {extra}; the module was built with "
            "other stages or layers than the one saved."
        )
    return {
        keys[k]: _restore_like(template[keys[k]], loaded[k], f"{where}/{k}")
        for k in keys
    }


def _check_streams(module: nnx.Pytree, loaded: Mapping, index: int) -> None:
    """Refuses a pipeline stream state that no pipeline can be in.

    Called after :func:`_restore_like` accepted ``loaded``: its structure is the
    module's, positions and epochs are int32 scalars. The key is checked on the
    loaded value: any integer fitting uint32 converts, but a pipeline's key is
    only ever stored as uint32 key data.
    """
    for path, pipe in _pipeline_nodes(module):
        node = loaded
        for part in path:
            node = node[str(part)]
        where = "/".join([str(index), *map(str, path)])
        position, epoch = (
            int(np.asarray(node["position"])),
            int(np.asarray(node["epoch"])),
        )
        if position < 0:
            raise CheckpointError(
                f"checkpoint entry {where}/position is {position}; a stream position "
                "counts the records served, so it is >= 0. The checkpoint was edited "
                "or damaged: restore an intact copy."
            )
        length = len(pipe.source)
        if epoch != position // length:
            raise CheckpointError(
                f"checkpoint entry {where}/epoch is {epoch}, but position {position} "
                f"over a source of {length} records is in epoch {position // length} "
                "(a pipeline keeps epoch == position // len(source)). The "
                "checkpoint was edited or damaged: restore an intact copy."
            )
        key = np.asarray(node["key"])
        if key.dtype != np.uint32:
            raise CheckpointError(
                f"checkpoint entry {where}/key holds {key.dtype} {preview(key)}; "
                "a pipeline's key is stored as its raw uint32 key data."
            )
