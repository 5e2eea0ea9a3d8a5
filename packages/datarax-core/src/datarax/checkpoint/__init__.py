"""Checkpoints and exact resume of pipelines and the modules they feed.

A pipeline's resumable state is its position, epoch and seed key, plus the state
of stateful stages; never its dataset. Restoring it into a freshly built pipeline of
the same construction continues the record stream exactly, with any batch size.
Inside an orbax ``CheckpointManager``, :func:`args` and :func:`restore_args` save
and restore pipelines as one item of an ``ocp.args.Composite``, next to the model.
"""

from datarax.checkpoint._errors import CheckpointError
from datarax.checkpoint._files import restore, save
from datarax.checkpoint._orbax import args, restore_args
from datarax.checkpoint._state import load_state_dict, state_dict

__all__ = [
    "CheckpointError",
    "args",
    "load_state_dict",
    "restore",
    "restore_args",
    "save",
    "state_dict",
]
