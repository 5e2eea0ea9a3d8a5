"""Checkpoints and exact resume of pipelines and the modules they feed.

A pipeline's resumable state is its position, epoch and seed key, plus the state
of stateful stages; never its dataset. Restoring it into a freshly built pipeline of
the same construction continues the record stream exactly, with any batch size.
"""

from datarax.checkpoint._errors import CheckpointError
from datarax.checkpoint._files import restore, save
from datarax.checkpoint._state import load_state_dict, state_dict

__all__ = ["CheckpointError", "load_state_dict", "restore", "save", "state_dict"]
