"""``MemorySource``: a dict of in-memory arrays as a source."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from datarax.sources._eager import EagerSourceBase


class MemorySource(EagerSourceBase):
    """A source over a dict of arrays (NumPy or JAX) that share a leading length.

    Record ``i`` is ``{name: array[i] for name, array in data.items()}``. The arrays
    go to the default device once (NumPy input is not copied on the host first)
    and are held as :class:`~datarax.DataVar` s: broadcast into compiled runs,
    never carried or checkpointed. Natural and shuffled order; a shuffled epoch is
    a permutation determined by the key and the epoch.

    Args:
        data: field name -> array; every array has the same length on axis 0 and
            at least one axis.

    Big-endian NumPy arrays are converted to native byte order. Without x64, JAX
    holds 64-bit types in 32 bits: values that fit are narrowed (an int64
    ``arange`` loses nothing); a value that would wrap (int64 / uint64 beyond
    the 32-bit range) or turn from finite to ``inf`` (float64 beyond float32)
    is refused. Float rounding is accepted, as everywhere in JAX.

    Raises:
        ValueError: for an empty mapping, non-array values, 0-d arrays, object or
            string dtypes, or fields of different lengths, naming the fields;
            for a value the 32-bit type cannot hold (x64 off), naming the field,
            the value, its record and the fix.

    Examples:
        >>> import numpy as np
        >>> source = MemorySource({"x": np.arange(10), "y": np.zeros((10, 3))})
        >>> len(source), source.element_spec["y"].shape
        (10, (3,))
        >>> source.get_batch_at(8, 4)["x"].tolist()  # runs into epoch 1
        [8, 9, 0, 1]
    """

    def __init__(self, data: Mapping[str, jax.typing.ArrayLike]):
        super().__init__(data, owner="MemorySource")
