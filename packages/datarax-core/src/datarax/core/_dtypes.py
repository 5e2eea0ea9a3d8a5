"""The dtypes JAX holds a source's values in, and the checked cast into them.

JAX without x64 holds 64-bit values in 32 bits, and its own conversion wraps
integers and turns large finite floats into ``inf`` without a word. Every source
that hands host arrays to JAX goes through :func:`convert_for_jax`, so no
narrowing ever changes a value silently.
"""

from __future__ import annotations

import math

import jax
import numpy as np


def jax_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype JAX holds values of ``dtype`` in.

    Native byte order (XLA has no big-endian types), and 64-bit types narrowed
    to 32 bits unless x64 is on.
    """
    native = np.dtype(dtype).newbyteorder("=")
    return np.dtype(jax.dtypes.canonicalize_dtype(native))


def convert_for_jax(
    values: np.ndarray,
    dtype: np.dtype,
    *,
    owner: str,
    field: str,
    records: np.ndarray | None = None,
) -> np.ndarray:
    """``values`` cast to ``dtype``, refusing a cast that would change a value.

    JAX without x64 holds int64 / uint64 / float64 / complex128 in 32 bits, and
    its own conversion wraps integers and turns finite floats into ``inf``
    without a word; a host source may also hand floats for an integer field. So:
    integers must fit ``dtype``'s range, values cast to an integer must be
    finite whole numbers, values cast to bool must be 0 or 1, a complex value
    cast to a real type must have no imaginary part, and finite floats must
    stay finite. Float rounding (and underflow to 0) is JAX's normal precision
    loss and is accepted. Values already of ``dtype`` come back uncopied.

    Args:
        values: the field's records, record axis first.
        dtype: the dtype the field is held in (see :func:`jax_dtype`).
        owner: the source, for the error message.
        field: the field, for the error message.
        records: the source's record index of each row of ``values`` (default:
            the row number).

    Returns:
        ``values`` as ``dtype``.

    Raises:
        ValueError: naming the owner, field, an offending value, its record and
            the fix, for a value ``dtype`` cannot hold.
    """
    values, dtype = np.asarray(values), np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if not values.size or not _may_lose(values.dtype, dtype):
        return values.astype(dtype)  # byte order, or a cast that loses nothing
    # A complex value's real part is cast (NumPy warns on the cast itself); the
    # imaginary part is checked to be zero below.
    real_only = values.dtype.kind == "c" and dtype.kind != "c"
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = (values.real if real_only else values).astype(dtype)
        lost, effect = _lost(values, narrow, dtype)
    if lost.any():
        raise ValueError(_message(values, lost, effect, dtype, owner, field, records))
    return narrow


def _may_lose(wide: np.dtype, dtype: np.dtype) -> bool:
    """Whether casting ``wide`` to ``dtype`` can change a value (not just round)."""
    if dtype.kind == "b":
        return wide.kind != "b"
    if dtype.kind in "iu":
        if wide.kind in "iu":
            low, high = np.iinfo(wide), np.iinfo(dtype)
            return low.min < high.min or low.max > high.max
        return wide.kind in "fc"
    if dtype.kind == "f":
        return wide.kind == "c" or (wide.kind == "f" and wide.itemsize > dtype.itemsize)
    if dtype.kind == "c":
        return wide.kind in "fc" and wide.itemsize > dtype.itemsize // (
            2 if wide.kind == "f" else 1
        )
    return False


def _lost(
    values: np.ndarray, narrow: np.ndarray, dtype: np.dtype
) -> tuple[np.ndarray, str]:
    """Where the cast of ``values`` to ``narrow`` changed a value, and how."""
    real = values.real if values.dtype.kind == "c" else values
    if values.dtype.kind == "c" and dtype.kind != "c":
        imaginary = values.imag != 0
        if imaginary.any():
            return imaginary, "lose its imaginary part"
    if dtype.kind == "b":
        return (real != 0) & (real != 1), "become True or False"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.dtype.kind in "iu":
            return (values < info.min) | (values > info.max), "wrap around"
        missing = ~np.isfinite(real)
        if missing.any():
            return missing, "become an arbitrary integer (NaN or inf: a missing value?)"
        fractional = real != np.round(real)
        if fractional.any():
            return fractional, "be truncated to an integer"
        return (real < info.min) | (real > info.max), "wrap around"
    return _overflowed(values, narrow), "become inf"


def _overflowed(wide: np.ndarray, narrow: np.ndarray) -> np.ndarray:
    """Where a finite value (or complex part) of ``wide`` became inf in ``narrow``."""
    if wide.dtype.kind == "c" and narrow.dtype.kind == "c":
        return _overflowed(wide.real, narrow.real) | _overflowed(wide.imag, narrow.imag)
    if wide.dtype.kind == "c":
        wide = wide.real
    return np.isinf(narrow) & ~np.isinf(wide)


def _message(
    values: np.ndarray,
    lost: np.ndarray,
    effect: str,
    dtype: np.dtype,
    owner: str,
    field: str,
    records: np.ndarray | None,
) -> str:
    """The message for ``values`` that ``dtype`` cannot hold (the error path only)."""
    flat = int(np.argmax(lost.reshape(-1)))
    row = flat // max(1, math.prod(values.shape[1:]))
    record = row if records is None else int(np.asarray(records).reshape(-1)[row])
    value = values.reshape(-1)[flat].item()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        cast = (
            f"cast the field yourself (.astype(np.{dtype.name})) after checking "
            f"that its values are whole numbers in [{info.min}, {info.max}]"
        )
    elif effect.startswith("lose its imaginary"):
        cast = "pass the real part yourself (values.real) if that is what you mean"
    elif dtype.kind == "f":
        cast = (
            f"scale or clip the field into the {dtype.name} range "
            f"(|x| <= {np.finfo(dtype).max:.4g})"
        )
    else:
        cast = f"convert the field to {dtype.name} yourself"
    if jax_dtype(values.dtype) == dtype:  # the narrowing is JAX's, without x64
        why = f"JAX holds {values.dtype.name} as {dtype.name} unless 64-bit mode is on"
        fix = (
            "turn 64-bit mode on at the start of the program "
            '(jax.config.update("jax_enable_x64", True)), or ' + cast
        )
    else:
        why = f"the source's element_spec declares the field as {dtype.name}"
        fix = cast
    return (
        f"{owner}: field {field!r} holds {value!r} (record {record}), which "
        f"{dtype.name} cannot hold: {why}, so it would silently {effect}. Fix: "
        f"{fix}."
    )
