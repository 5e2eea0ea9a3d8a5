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
    """``values`` cast to ``dtype``, refusing a narrowing that would change a value.

    JAX without x64 holds int64 / uint64 / float64 / complex128 in 32 bits, and
    its own conversion wraps integers and turns finite floats into ``inf``
    without a word. Integers must fit ``dtype``'s range and finite floats must
    stay finite; float rounding (and underflow to 0) is JAX's normal precision
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
            the fix, for a value the narrower type cannot hold.
    """
    values, dtype = np.asarray(values), np.dtype(dtype)
    if values.dtype == dtype:
        return values
    wide = values.dtype
    if wide.kind != dtype.kind or wide.itemsize <= dtype.itemsize or not values.size:
        return values.astype(dtype)  # byte order, or a cast that loses no range
    if wide.kind in "iu":
        info = np.iinfo(dtype)
        lost = values.min() < info.min or values.max() > info.max
        narrow = None if lost else values.astype(dtype)
    else:
        # A floating cast rounds; only finite -> inf loses the value itself.
        with np.errstate(over="ignore"):
            narrow = values.astype(dtype)
        lost = bool(np.isinf(narrow).any()) and bool(_overflowed(values, narrow).any())
    if lost:
        raise ValueError(_lost_value(values, dtype, owner, field, records))
    return narrow


def _overflowed(wide: np.ndarray, narrow: np.ndarray) -> np.ndarray:
    """Where a finite value (or complex part) of ``wide`` became inf in ``narrow``."""
    if wide.dtype.kind == "c":
        return _overflowed(wide.real, narrow.real) | _overflowed(wide.imag, narrow.imag)
    return np.isinf(narrow) & ~np.isinf(wide)


def _lost_value(
    values: np.ndarray,
    dtype: np.dtype,
    owner: str,
    field: str,
    records: np.ndarray | None,
) -> str:
    """The message for ``values`` that ``dtype`` cannot hold (the error path only)."""
    if values.dtype.kind in "iu":
        info = np.iinfo(dtype)
        lost = (values < info.min) | (values > info.max)
        effect = "wrap around"
        cast = (
            f"cast the field yourself (.astype(np.{dtype.name})) after checking "
            f"that its values lie in [{info.min}, {info.max}]"
        )
    else:
        with np.errstate(over="ignore"):
            lost = _overflowed(values, values.astype(dtype))
        effect = "become inf"
        cast = (
            f"scale or clip the field into the {dtype.name} range "
            f"(|x| <= {np.finfo(dtype).max:.4g})"
        )
    flat = int(np.argmax(lost.reshape(-1)))
    row = flat // max(1, math.prod(values.shape[1:]))
    record = row if records is None else int(np.asarray(records).reshape(-1)[row])
    value = values.reshape(-1)[flat].item()
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
