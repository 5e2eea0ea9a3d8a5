"""One leaf of a loaded state, checked against the module value it replaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax.checkpoint._errors import CheckpointError

#: What a dtype kind that no module state holds is, in words.
NOT_NUMBERS = {
    "O": "Python objects",
    "U": "text",
    "S": "bytes",
    "V": "raw bytes",
    "M": "dates",
    "m": "time spans",
}


def describe(value: Any) -> str:
    """A short account of ``value`` for a message: its type and a bounded repr."""
    if isinstance(value, np.ndarray | jax.Array):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_typed_key(value: Any) -> bool:
    """Whether ``value`` is a new-style (typed) PRNG key array."""
    return isinstance(value, jax.Array) and jax.dtypes.issubdtype(
        value.dtype, jax.dtypes.prng_key
    )


def restore_leaf(template: Any, loaded: Any, where: str) -> Any:
    """``loaded`` converted to the type of ``template``, the module's value.

    Refused, naming ``where``: another shape, a kind of dtype the module's cannot
    take without changing the numbers (see :func:`check_dtype`), and for a typed
    PRNG key anything but its uint32 key data.
    """
    value = as_array(loaded, where)
    if is_typed_key(template):
        expected = jax.random.key_data(template)
        check_key_data(value, tuple(expected.shape), where)
        # Copies, here and below: a jax array made from a NumPy buffer may share
        # its memory, and the caller may reuse the dict after loading.
        return jax.random.wrap_key_data(
            jnp.array(value, copy=True), impl=jax.random.key_impl(template)
        )
    # Shape and dtype without np.asarray: that would copy every jax parameter
    # to the host just to read them.
    if not (hasattr(template, "shape") and hasattr(template, "dtype")):
        template = np.asarray(template)
    shape, dtype = tuple(template.shape), np.dtype(template.dtype)
    if value.shape != shape:
        raise CheckpointError(
            f"checkpoint entry {where} has shape {value.shape}, the module expects "
            f"{shape}."
        )
    value = check_dtype(value, dtype, where)
    if isinstance(template, jax.Array):
        return jnp.array(value, dtype=dtype, copy=True)
    return np.array(value, dtype=dtype)  # a private copy


def as_array(loaded: Any, where: str) -> np.ndarray:
    """``loaded`` as a NumPy array; a dict, a typed key or a ragged list refused."""
    if isinstance(loaded, Mapping):
        raise CheckpointError(
            f"checkpoint entry {where} is a dict, but the module holds an array "
            "there; the module was built with other stages or layers than the one "
            "saved."
        )
    if is_typed_key(loaded):
        raise CheckpointError(
            f"checkpoint entry {where} is a typed PRNG key; a checkpoint stores keys "
            "as their uint32 key data (jax.random.key_data(key)), as state_dict does."
        )
    try:
        return np.asarray(loaded)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint entry {where} is {describe(loaded)}, not an array; "
            "checkpoint leaves are NumPy arrays, as state_dict returns."
        ) from err


def check_key_data(value: np.ndarray, shape: tuple[int, ...], where: str) -> None:
    """Refuses anything but uint32 key data of ``shape``, naming ``where``."""
    if value.dtype != np.uint32 or value.shape != shape:
        raise CheckpointError(
            f"checkpoint entry {where} holds {value.dtype} of shape {value.shape}, "
            f"but a PRNG key is stored as its uint32 key data of shape {shape} "
            "(jax.random.key_data(key))."
        )


def _kind(dtype: np.dtype) -> str | None:
    # jnp.issubdtype knows the ml_dtypes types (bfloat16, int4), which NumPy
    # files as raw void data.
    for kind, scalar in _KINDS:
        if jnp.issubdtype(dtype, scalar):
            return kind
    return None


_KINDS = (
    ("bool", jnp.bool_),
    ("integer", jnp.integer),
    ("floating", jnp.floating),
    ("complexfloating", jnp.complexfloating),
)


#: Which kinds of loaded dtype each kind of module dtype takes, and that in words.
#: A bool is not a number here, and a float is never rounded into an integer.
_TAKES = {
    "bool": (("bool",), "bools only"),
    "integer": (("integer",), "integers only"),
    "floating": (("floating", "integer"), "floats or integers only"),
    "complexfloating": (("complexfloating", "floating", "integer"), "numbers only"),
}


def check_dtype(value: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``value``, checked to convert to ``dtype`` without changing its numbers.

    Integers must fit the module's integer dtype; floats must not overflow into
    infinities; integers into a float dtype must be held exactly. Raw void data of
    the same item size is read as an ml_dtypes ``dtype`` (bfloat16, int4): that
    is how a ``.npz`` file stores them.
    """
    want, got = _kind(dtype), _kind(value.dtype)
    if got is None and value.dtype.kind == "V" and not value.dtype.names:
        if want is not None and dtype.kind == "V" and value.itemsize == dtype.itemsize:
            value, got = value.view(dtype), want
    if want is None:  # a module value that is not a number: only its own dtype
        if value.dtype == dtype and dtype.kind != "O":
            return value
        got = None
    takes, in_words = _TAKES.get(want, ((), f"{dtype} only"))
    if got not in takes:
        what = NOT_NUMBERS.get(value.dtype.kind) if got is None else None
        if got == "floating" and want == "integer":
            in_words += " (a float is never rounded)"
        raise CheckpointError(
            f"checkpoint entry {where} holds {value.dtype} "
            f"{f'({what}) ' if what else ''}{preview(value)}, but the module holds "
            f"{dtype} there, which takes {in_words}; restore a checkpoint saved "
            "from this module."
        )
    if value.size and got == "integer":
        _check_integers(value, dtype, want, where)
    elif value.size and want != "integer":
        _check_finite(value, dtype, where)
    return value


def _check_integers(value: np.ndarray, dtype: np.dtype, want: str, where: str) -> None:
    if want == "integer":
        info = jnp.iinfo(dtype)
        low, high = int(value.min()), int(value.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise CheckpointError(
                f"checkpoint entry {where} holds {value.dtype} value {bad}, which "
                f"does not fit the module's {dtype} ({info.min}..{info.max})."
            )
        return
    # Into a float dtype: the round trip must give the same integers back.
    with np.errstate(over="ignore", invalid="ignore"):
        cast = value.astype(dtype)
        back = (cast.real if want == "complexfloating" else cast).astype(value.dtype)
    wrong = np.flatnonzero(back != value)
    if wrong.size:
        raise CheckpointError(
            f"checkpoint entry {where} holds {value.dtype} value "
            f"{value.ravel()[wrong[0]]}, which the module's {dtype} cannot hold "
            "exactly."
        )


def _check_finite(value: np.ndarray, dtype: np.dtype, where: str) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        cast = value.astype(dtype)
    wrong = np.flatnonzero(np.isfinite(value) & ~np.isfinite(cast))
    if wrong.size:
        raise CheckpointError(
            f"checkpoint entry {where} holds {value.dtype} value "
            f"{value.ravel()[wrong[0]]}, which overflows the module's {dtype}."
        )


def preview(value: np.ndarray) -> str:
    """The value of a one-element array, else its shape."""
    if value.size == 1 and value.dtype.kind != "V":
        return repr(value.reshape(()).item())
    return f"of shape {value.shape}"
