"""Pipelines in an orbax ``CheckpointManager``, next to the model.

``datarax.checkpoint.args(pipe)`` and ``restore_args(pipe)`` are orbax
``CheckpointArgs`` of a small handler that writes the pipeline's state in
datarax's own checked file format, inside the step's folder: one item of an
``ocp.args.Composite``. orbax is imported on first use (flax depends on it), so
``import datarax`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
from flax import nnx

from datarax.checkpoint._files import restore, write_state
from datarax.checkpoint._state import check_some, state_dict

#: The file the handler writes in its item's folder.
FILENAME = "datarax.npz"


def args(*modules: nnx.Pytree) -> Any:
    """Save args of orbax for ``modules`` (pipelines, and modules they feed).

    Their state is taken now, when the args are made: training may go on while
    an async ``CheckpointManager`` writes it. Only the primary process writes
    (every process holds the same pipeline state).

    Examples:
        >>> import orbax.checkpoint as ocp  # doctest: +SKIP
        >>> manager.save(step, args=ocp.args.Composite(  # doctest: +SKIP
        ...     model=ocp.args.StandardSave(nnx.state(model)),
        ...     data=datarax.checkpoint.args(pipe)))
    """
    check_some(modules, "args")
    save_args, _ = _types()
    return save_args(state=state_dict(*modules))


def restore_args(*modules: nnx.Pytree) -> Any:
    """Restore args of orbax that load the saved state into ``modules``, in place.

    Checked as :func:`~datarax.checkpoint.restore` checks: the same number and
    construction of modules (any batch size).
    """
    check_some(modules, "restore_args")
    _, restore_args_cls = _types()
    return restore_args_cls(modules=tuple(modules))


@functools.cache
def _types() -> tuple[type, type]:
    """The handler and its args classes, made (and registered) on first use."""
    import orbax.checkpoint as ocp  # here: only checkpointing with orbax needs it

    class DataraxCheckpointHandler(ocp.CheckpointHandler):
        """Writes and reads a pipeline's state in an orbax checkpoint item."""

        def save(self, directory: Any, args: Any) -> None:
            if jax.process_index() == 0:
                write_state(_path(directory), args.state)

        def restore(self, directory: Any, args: Any) -> tuple:
            restore(_path(directory), *args.modules)
            return args.modules

    @ocp.args.register_with_handler(DataraxCheckpointHandler, for_save=True)
    @dataclasses.dataclass
    class DataraxSave(ocp.args.CheckpointArgs):
        state: dict

    @ocp.args.register_with_handler(DataraxCheckpointHandler, for_restore=True)
    @dataclasses.dataclass
    class DataraxRestore(ocp.args.CheckpointArgs):
        modules: tuple

    return DataraxSave, DataraxRestore


def _path(directory: Any) -> Any:
    """The handler's file in ``directory`` (an ``epath.Path``), as a local path."""
    from pathlib import Path

    return Path(str(directory)) / FILENAME
