"""The error of a checkpoint that cannot be restored."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: damaged, foreign, or another state.

    Raised by :func:`~datarax.checkpoint.restore` for a file that is not a datarax
    checkpoint (random bytes, a pickle, a single ``.npy`` array, another ``.npz``,
    a folder) or that is damaged (truncated, or failing the zip checksums), and by
    :func:`~datarax.checkpoint.load_state_dict` (so also by ``restore``) for a
    state that does not fit the modules: another structure, a leaf of another
    shape or kind of dtype or out of its dtype's range, a pipeline of another
    construction, or a pipeline stream state no pipeline can be in (a negative
    position, an epoch other than ``position // len(source)``). The message names
    the file or the entry (``0/position``) and what came in. Nothing is written
    into the modules when it is raised.

    To fix it, restore an intact copy of the checkpoint, or build the modules
    exactly as when it was saved (a pipeline's batch size may differ). It
    subclasses ``ValueError``, so ``except ValueError`` still catches it.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.checkpoint import load_state_dict, state_dict
        >>> from datarax.sources import MemorySource
        >>> pipe = Pipeline(source=MemorySource({"x": np.arange(10)}), batch_size=4)
        >>> d = state_dict(pipe)
        >>> d["0"]["position"] = np.float64(4.0)  # a float: never rounded
        >>> try:
        ...     load_state_dict(d, pipe)
        ... except CheckpointError as err:
        ...     print(str(err).split(",")[0])
        checkpoint entry 0/position holds float64 4.0
    """

    # Tracebacks and reprs show the public path, not this private module.
    __module__ = "datarax.checkpoint"
