"""``EagerSourceBase``: sources whose records are materialised as device arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from datarax.core import Batch, DataVar, ElementSpec, convert_for_jax, jax_dtype
from datarax.sources._order import OrderedSource, OrderPlan


def _check_mapping(data: Any, owner: str) -> None:
    """Refuses anything but a non-empty dict of str names to unmasked values."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{owner}: expected a mapping of field name -> array, got "
            f"{type(data).__name__}."
        )
    if not data:
        raise ValueError(f"{owner}: no fields; give at least one field name -> array.")
    bad_names = [name for name in data if not isinstance(name, str)]
    if bad_names:
        raise ValueError(f"{owner}: field names must be str, got {bad_names!r}.")
    masked = [
        name for name, value in data.items() if isinstance(value, np.ma.MaskedArray)
    ]
    if masked:
        raise ValueError(
            f"{owner}: fields {masked} are masked arrays, whose mask a source would "
            "drop; fill the masked values first (array.filled(value))."
        )


def validate_fields(
    data: Mapping[str, Any], owner: str
) -> dict[str, np.ndarray | jax.Array]:
    """Checks that ``data`` is a non-empty dict of same-length arrays.

    Returns the arrays (NumPy or JAX, never copied). Numeric dtypes include the
    ml_dtypes types JAX holds (bfloat16, float8_*, int4, ...). Raises
    ``ValueError`` naming the offending fields, prefixed with ``owner``: for
    strings, objects, datetimes, structured or void dtypes, and typed PRNG key
    arrays (store their ``jax.random.key_data`` instead).
    """
    _check_mapping(data, owner)
    not_arrays = {
        name: type(value).__name__
        for name, value in data.items()
        if not isinstance(value, np.ndarray | jax.Array)
    }
    if not_arrays:
        raise ValueError(
            f"{owner}: fields {not_arrays} are not arrays; convert each with "
            "np.asarray(...) (ragged lists must be padded first)."
        )
    scalars = [name for name, value in data.items() if value.ndim == 0]
    if scalars:
        raise ValueError(
            f"{owner}: fields {scalars} are 0-d; every field needs a leading record "
            "axis."
        )
    keys = {
        name: str(value.dtype)
        for name, value in data.items()
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
    }
    if keys:
        raise ValueError(
            f"{owner}: fields {keys} hold typed PRNG keys, which a source cannot "
            "serve as records; store jax.random.key_data(keys) (uint32) instead, "
            "and rebuild them with jax.random.wrap_key_data(...) in a stage."
        )
    bad_dtypes = {
        name: str(value.dtype)
        for name, value in data.items()
        if not _jax_can_hold(value.dtype)
    }
    if bad_dtypes:
        raise ValueError(
            f"{owner}: fields {bad_dtypes} have dtypes JAX cannot hold; use numeric "
            "or bool arrays (encode strings as token ids first)."
        )
    lengths = {name: int(value.shape[0]) for name, value in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{owner}: fields differ in length {lengths}; give every field the same "
            "number of records."
        )
    if next(iter(lengths.values())) == 0:
        raise ValueError(f"{owner}: the fields hold no records {lengths}.")
    return dict(data)


def _jax_can_hold(dtype: np.dtype) -> bool:
    """Whether JAX holds values of ``dtype`` as numbers or bools.

    The ml_dtypes types (bfloat16, float8_*, int4, ...) have NumPy kind ``"V"``
    like structured and raw void dtypes; JAX's own type hierarchy tells them
    apart, counting them as floating or integer types.
    """
    if dtype.kind in "OUSMm":
        return False
    return jax.dtypes.issubdtype(dtype, np.bool_) or jax.dtypes.issubdtype(
        dtype, np.number
    )


class EagerSourceBase(OrderedSource):
    """Base for sources that hold all their records as device arrays.

    Holds the fields as :class:`~datarax.DataVar` s and implements ``len``,
    :attr:`element_spec` and traceable :meth:`get_batch_at` in natural and
    shuffled order. Shuffled epoch ``e`` is ``jax.random.permutation(fold_in(key,
    e), len)``; pipelines compute the permutations of the epochs a compiled run
    touches once per run, before its loop, so each batch costs one gather.

    Subclasses (MemorySource, the HF / TFDS eager sources) convert their input to
    a dict of arrays and call ``super().__init__(fields, owner=...)``. Pass
    64-bit values at their own width: the base checks that they fit the dtype
    JAX holds them in (:func:`convert_for_jax`); a NumPy cast made before would
    wrap them unseen.

    Args:
        fields: field name -> array (NumPy or JAX), same leading length.
        owner: the name used in error messages.
    """

    def __init__(self, fields: Mapping[str, Any], *, owner: str = "source"):
        fields = {
            name: _device_ready(value, owner, name)
            for name, value in validate_fields(fields, owner).items()
        }
        self.names = tuple(fields)
        self.arrays = nnx.List([DataVar(jnp.asarray(a)) for a in fields.values()])
        self.length = int(next(iter(fields.values())).shape[0])

    @property
    def element_spec(self) -> ElementSpec:
        """Shape and dtype of one record, per field."""
        return {
            name: jax.ShapeDtypeStruct(var.shape[1:], var.dtype)
            for name, var in zip(self.names, self.arrays, strict=True)
        }

    def read(
        self,
        plan: OrderPlan | None,
        start: jax.Array,
        batch_size: int,
        key: jax.Array | None,
    ) -> Batch:
        """The batch at ``start``: a slice in natural order, else one gather."""
        if plan is None and batch_size <= self.length:
            offset = start % self.length
            windows = [_window(var[...], offset, batch_size) for var in self.arrays]
            return dict(zip(self.names, windows, strict=True))
        return super().read(plan, start, batch_size, key)

    def gather(self, index: jax.Array) -> Batch:
        """The records at ``index``, one ``jnp.take`` per field."""
        return {
            name: jnp.take(var[...], index, axis=0, mode="clip")
            for name, var in zip(self.names, self.arrays, strict=True)
        }


def _device_ready(
    value: np.ndarray | jax.Array, owner: str, field: str
) -> np.ndarray | jax.Array:
    """A field as JAX will hold it, checked: one min/max per narrowed field.

    A NumPy field is brought to native byte order (``jnp.asarray`` rejects
    big-endian arrays) and its 64-bit values are checked to fit 32 bits when x64
    is off; a JAX array already holds a JAX dtype.
    """
    if not isinstance(value, np.ndarray):
        return value
    return convert_for_jax(value, jax_dtype(value.dtype), owner=owner, field=field)


def _window(array: jax.Array, offset: jax.Array, size: int) -> jax.Array:
    """Rows ``offset .. offset+size-1`` of ``array``, wrapping past the end.

    Slices rather than gathers: on XLA:CPU a gather of the same rows costs twice
    as much, and a ``lax.cond`` on the wrap costs as much again. ``dynamic_slice``
    clamps its start, so ``base`` stops at the last full window; at the epoch's
    end the wrapped rows come from the first ``size`` rows appended to it.
    """
    base = jnp.minimum(offset, array.shape[0] - size)
    head = jax.lax.dynamic_slice_in_dim(array, base, size)
    joined = jnp.concatenate([head, array[:size]])
    return jax.lax.dynamic_slice_in_dim(joined, offset - base, size)
