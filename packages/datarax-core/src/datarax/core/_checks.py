"""Checks of a pipeline's construction options, with messages that say the fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from datarax.core._iterable import IterableSource
from datarax.core._source import MAX_POSITION, DataSource
from datarax.core._stages import check_callables


def check_positive_int(name: str, value: Any) -> None:
    """Refuses anything but a Python int >= 1 for the option ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a Python int >= 1, got {value!r}.")


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool, refusing anything but ``True`` / ``False``.

    A string ``"False"`` or an int would be truthy or falsy by accident.
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}.")
    return bool(value)


def check_prefetch(prefetch: Any) -> int:
    """``prefetch`` as an int of at least 0, or an error saying what to pass."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(
            f"prefetch must be a Python int >= 0 (batches read ahead in iteration; "
            f"0 for none), got {prefetch!r}."
        )
    return prefetch


def check_options(
    source: Any,
    batch_size: Any,
    shuffle: Any,
    num_epochs: Any,
    drop_last: Any,
) -> None:
    """Refuses a construction that cannot serve a stream, saying what to change."""
    if not isinstance(source, DataSource | IterableSource):
        raise TypeError(
            f"Pipeline source must be a datarax DataSource (random access) or "
            f"IterableSource (in order), got {type(source).__name__}; wrap arrays "
            "in datarax.sources.MemorySource({...})."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a Python int, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if batch_size > MAX_POSITION:
        raise ValueError(
            f"batch_size={batch_size} is beyond the int32 stream positions datarax "
            f"counts records with (at most {MAX_POSITION}); use a smaller batch."
        )
    check_bool("shuffle", shuffle)
    check_bool("drop_last", drop_last)
    processes = jax.process_count()
    if batch_size % processes:
        raise ValueError(
            f"batch_size={batch_size} is the global batch size and must divide by "
            f"the number of JAX processes ({processes})."
        )
    if num_epochs is not None and (
        isinstance(num_epochs, bool) or not isinstance(num_epochs, int)
    ):
        raise TypeError(f"num_epochs must be an int or None, got {num_epochs!r}.")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(
            f"num_epochs must be at least 1 (or None for endless), got {num_epochs}."
        )
    if shuffle and not source.supports_shuffle:
        raise ValueError(
            f"shuffle=True needs a source that can shuffle; {type(source).__name__} "
            "cannot. Use shuffle=False."
        )
    check_spec(source)
    length = source.__len__()
    if isinstance(length, bool) or not isinstance(length, int | np.integer):
        raise TypeError(
            f"len() of the source {type(source).__name__} is {length!r}; __len__ "
            "(or self.length) must be a Python int, the number of records."
        )
    if length < 1:
        raise ValueError(
            f"the source {type(source).__name__} holds no records (len {length})."
        )
    if drop_last and num_epochs is not None and num_epochs * length < batch_size:
        raise ValueError(
            f"iteration would serve no batch: num_epochs={num_epochs} of "
            f"{length} records hold fewer than batch_size={batch_size}, and "
            "drop_last=True drops the short one. Pass drop_last=False, more "
            "num_epochs (None for endless), or a smaller batch_size."
        )


def check_stages(stages: Any) -> list:
    """``stages`` as a list of callables ``batch -> batch``, or a named error.

    A single stage or a dict given for the sequence is refused rather than
    iterated (a module is not iterable; a dict would give its keys).
    """
    if callable(stages) or isinstance(stages, Mapping | str | bytes):
        raise TypeError(
            f"stages takes a list of stages, got {type(stages).__name__}; write "
            "stages=[stage] for one (a DAG of named nodes goes to "
            "Pipeline.from_dag)."
        )
    if not isinstance(stages, Sequence):
        raise TypeError(f"stages takes a list of stages, got {type(stages).__name__}.")
    stages = list(stages)
    check_callables(stages, "stage")
    return stages


def check_rngs(rngs: Any) -> nnx.Rngs:
    """Refuses anything but ``nnx.Rngs`` for a pipeline's ``rngs``."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"rngs must be an nnx.Rngs, got {type(rngs).__name__}; write "
            "rngs=nnx.Rngs(0) (a seed or a key goes inside: nnx.Rngs(seed))."
        )
    if not hasattr(rngs, "default"):  # the pipeline draws its seed from it
        raise ValueError(
            "rngs has no default stream (only named ones); give it one: "
            "nnx.Rngs(0) or nnx.Rngs(default=0, params=1)."
        )
    return rngs


def check_modules(modules: Any) -> tuple:
    """``Pipeline.scan``'s ``modules`` as a tuple of nnx graph nodes."""
    if isinstance(modules, nnx.Pytree):
        raise TypeError(
            f"modules takes a tuple of modules, got one {type(modules).__name__}; "
            "write modules=(model,) (or (model, optimizer), in the order step_fn "
            "takes them)."
        )
    if not isinstance(modules, Sequence) or isinstance(modules, str | bytes):
        raise TypeError(
            f"modules takes a tuple of nnx modules, got {type(modules).__name__}."
        )
    for index, module in enumerate(modules):
        if not isinstance(module, nnx.Pytree):
            raise TypeError(
                f"modules[{index}] is a {type(module).__name__}, not an "
                "nnx.Module (or other nnx graph node such as nnx.Optimizer); "
                "pass arrays through init_carry instead."
            )
    return tuple(modules)


def check_spec(source: Any) -> None:
    """Refuses an ``element_spec`` that is not field name -> shape and dtype."""
    spec = source.element_spec
    bad = (
        [repr(spec)]
        if not isinstance(spec, Mapping)
        else [
            f"{name!r}: {value!r}"
            for name, value in spec.items()
            if not (
                isinstance(name, str)
                and hasattr(value, "shape")
                and hasattr(value, "dtype")
            )
        ]
    )
    if bad:
        raise TypeError(
            f"the element_spec of {type(source).__name__} must map each str field "
            "name to jax.ShapeDtypeStruct(record shape, dtype); got "
            f"{', '.join(bad)[:200]}."
        )
