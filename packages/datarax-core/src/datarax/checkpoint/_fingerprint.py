"""The construction fingerprint: what a pipeline's checkpoint can be restored into."""

from __future__ import annotations

import zlib

import numpy as np
from flax import nnx

from datarax.core import Pipeline
from datarax.core._keys import DEFAULT_IMPL
from datarax.core._stages import stage_name


def construction(pipe: Pipeline) -> dict[str, int | str | bool]:
    """What decides a pipeline's record stream, batch size aside.

    Source length and element spec, the source's own fingerprint (a mix's
    weights and children), seed, shuffle, and the structure of the stages or DAG
    (types and names); not the batch size, which may change on restore.
    """
    spec = {
        name: (tuple(s.shape), str(s.dtype))
        for name, s in pipe.source.element_spec.items()
    }
    key_data = np.asarray(pipe.key.get_raw_value()).tobytes()
    out: dict[str, int | str | bool] = {
        "source length": len(pipe.source),
        "element spec": repr(sorted(spec.items())),
        "seed": zlib.crc32(key_data),
        "shuffle": pipe.shuffle,
        "structure": _structure(pipe),
    }
    # Only a seed of another PRNG implementation than JAX's default, and sources
    # whose stream depends on more than length and spec (a mix's weights and
    # children), add a field, so older checkpoints of other pipelines restore.
    if pipe.key_impl != DEFAULT_IMPL:
        out["key impl"] = pipe.key_impl
    source = pipe.source.fingerprint()
    if source is not None:
        out["source"] = source
    return out


def _structure(pipe: Pipeline) -> str:
    """Types and names of the stages, DAG or sub-modules of ``pipe``."""
    parts = [type(pipe).__qualname__]
    if pipe.dag is not None:
        assert pipe.nodes is not None
        for name in pipe.dag.order:
            parts.append(f"{name}={stage_name(pipe.nodes[name])}")
        parts.append(f"edges={pipe.dag.edges!r}, sink={pipe.dag.sink!r}")
    else:
        parts.extend(f"{i}={stage_name(s)}" for i, s in enumerate(pipe.stages))
    for path, node in nnx.iter_graph(pipe):
        if (
            path
            and path[0] not in ("source", "stages", "nodes")
            and isinstance(node, nnx.Module)
        ):
            parts.append(f"{'/'.join(map(str, path))}={type(node).__qualname__}")
    return "; ".join(parts)
