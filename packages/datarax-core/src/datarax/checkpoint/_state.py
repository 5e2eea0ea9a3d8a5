"""Checkpoints of pipelines and modules: plain dicts of NumPy arrays, and files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.checkpoint._fingerprint import construction
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
    have served next, in iteration and in ``scan``. Nothing is written unless every
    module matches.

    Raises:
        ValueError: naming the mismatch, for a pipeline of another construction
            (source length or element spec, seed, shuffle, stages), a state of
            another structure (Variables missing or added, other shapes), or a
            different number of modules.
    """
    if len(d) != len(modules) and set(d) != {str(i) for i in range(len(modules))}:
        raise ValueError(
            f"the checkpoint holds {len(d)} modules {sorted(d)}, but "
            f"{len(modules)} were given to restore into; pass them in the order "
            "they were saved."
        )
    updates = []
    for index, module in enumerate(modules):
        _check_module(module, index)
        entry = d.get(str(index))
        if entry is None:
            raise ValueError(f"the checkpoint has no entry {str(index)!r}.")
        _check_construction(module, entry.get(CONSTRUCTION, {}), index)
        state = nnx.state(module, nnx.Not(DataVar))
        template = nnx.to_pure_dict(state)
        loaded = {k: v for k, v in entry.items() if k != CONSTRUCTION}
        updates.append((module, state, _restore_like(template, loaded, str(index))))
    for module, state, pure in updates:
        nnx.replace_by_pure_dict(state, pure)
        nnx.update(module, state)


def save(path: str | os.PathLike, *modules: nnx.Pytree) -> None:
    """Writes :func:`state_dict` of ``modules`` to ``path`` atomically.

    The file (NumPy ``.npz``, no pickled objects) is written next to ``path`` and
    renamed over it, so a crash mid-save leaves the previous checkpoint readable.
    """
    path = Path(path)
    flat = dict(_flatten(state_dict(*modules)))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore(path: str | os.PathLike, *modules: nnx.Pytree) -> None:
    """Reads a file written by :func:`save` into ``modules``, in order.

    Checks as :func:`load_state_dict` does.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        flat = {key: data[key] for key in data.files}
    load_state_dict(_unflatten(flat), *modules)


# -- helpers ----------------------------------------------------------------------


def _check_module(module: object, index: int) -> None:
    if not isinstance(module, nnx.Pytree):
        raise TypeError(
            f"module {index} is a {type(module).__name__}, not an nnx.Module (or "
            "other nnx graph node)."
        )


def _pipelines(module: nnx.Pytree) -> Iterator[tuple[str, Pipeline]]:
    for path, node in nnx.iter_graph(module):
        if isinstance(node, Pipeline):
            yield "/".join(map(str, path)) or ".", node


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, jax.Array) and jax.dtypes.issubdtype(
        tree.dtype, jax.dtypes.prng_key
    ):
        return np.array(jax.random.key_data(tree))
    return np.array(tree)  # a copy: later writes to the module never reach it


def _as_arrays(construction: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in construction.items()}


def _check_construction(module: nnx.Pytree, saved: Mapping, index: int) -> None:
    """Compares every pipeline of ``module`` with the construction it was saved in."""
    problems = []
    for path, pipe in _pipelines(module):
        record = saved.get(path)
        if record is None:
            problems.append(f"pipeline at {path!r} is not in the checkpoint")
            continue
        for field, value in construction(pipe).items():
            if field not in record:
                problems.append(
                    f"{field}: not in the checkpoint (saved by an older datarax, "
                    f"which could not record it), {value!r} here"
                )
                continue
            old = np.asarray(record[field]).item()
            if old != value:
                problems.append(f"{field}: {old!r} in the checkpoint, {value!r} here")
    if problems:
        raise ValueError(
            f"cannot restore module {index}: it was saved from another construction "
            f"({'; '.join(problems)}). Build the pipeline exactly as when it was "
            "saved (the batch size may differ)."
        )


def _restore_like(template: Any, loaded: Any, where: str) -> Any:
    """``loaded`` converted to the types of ``template``, checked leaf by leaf."""
    if isinstance(template, Mapping):
        if not isinstance(loaded, Mapping):
            raise ValueError(f"checkpoint entry {where} is not a dict of state.")
        keys = {str(k): k for k in template}
        missing = sorted(set(keys) - set(loaded))
        extra = sorted(set(loaded) - set(keys))
        if missing or extra:
            raise ValueError(
                f"checkpoint entry {where} does not match the module's state: "
                f"missing {missing}, unexpected {extra}; the module was built with "
                "other stages or layers than the one saved."
            )
        return {
            keys[k]: _restore_like(template[keys[k]], loaded[k], f"{where}/{k}")
            for k in keys
        }
    value = np.asarray(loaded)
    if isinstance(template, jax.Array) and jax.dtypes.issubdtype(
        template.dtype, jax.dtypes.prng_key
    ):
        expected = jax.random.key_data(template)
        _check_leaf(expected, value, where)
        # Copies, here and below: a jax array made from a NumPy buffer may share
        # its memory, and the caller may reuse the dict after loading.
        return jax.random.wrap_key_data(
            jnp.array(value, copy=True), impl=jax.random.key_impl(template)
        )
    _check_leaf(np.asarray(template), value, where)
    if isinstance(template, jax.Array):
        return jnp.array(value, dtype=template.dtype, copy=True)
    return np.array(value, dtype=np.asarray(template).dtype)  # a private copy


def _check_leaf(template: Any, value: np.ndarray, where: str) -> None:
    if template.shape != value.shape:
        raise ValueError(
            f"checkpoint entry {where} has shape {value.shape}, the module expects "
            f"{template.shape}."
        )


def _flatten(tree: Mapping, prefix: tuple = ()) -> Iterator[tuple[str, np.ndarray]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            # JSON paths: node names may hold any character, "/" included.
            yield json.dumps(path), np.asarray(value)


def _unflatten(flat: Mapping[str, np.ndarray]) -> StateDict:
    out: StateDict = {}
    for key, value in flat.items():
        *parents, leaf = json.loads(key)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
