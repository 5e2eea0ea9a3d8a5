"""Host batch buffers that JAX's CPU client takes without a copy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The alignment at which XLA's CPU client aliases a NumPy buffer instead of
#: copying it (``device_put``, or an argument of a jitted call).
ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary.

    NumPy's allocator aligns large arrays to 16 bytes, and JAX's CPU client
    copies such an array when it becomes a ``jax.Array``; at 64 bytes it aliases
    it. Measured on the 2-core machine for a 64x224x224x3 uint8 batch (9.6 MB):
    ``device_put`` 2.9 ms against 0.08 ms. The array must not be written after
    it is handed to JAX, which holds a reference to it: host batches never are.
    Accelerators copy either way.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(tuple(shape))
