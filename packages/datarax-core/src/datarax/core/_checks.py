"""Checks of a pipeline's construction options, with messages that say the fix."""

from __future__ import annotations

from typing import Any

import jax

from datarax.core._iterable import IterableSource
from datarax.core._source import DataSource


def check_positive_int(name: str, value: Any) -> None:
    """Refuses anything but a Python int >= 1 for the option ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a Python int >= 1, got {value!r}.")


def check_options(source: Any, batch_size: Any, shuffle: bool, num_epochs: Any) -> None:
    """Refuses a construction that cannot serve a stream, saying what to change."""
    if not isinstance(source, DataSource | IterableSource):
        raise TypeError(
            f"Pipeline source must be a datarax DataSource (random access) or "
            f"IterableSource (in order), got {type(source).__name__}; wrap arrays "
            "in datarax.sources.MemorySource({...})."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a Python int, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    processes = jax.process_count()
    if batch_size % processes:
        raise ValueError(
            f"batch_size={batch_size} is the global batch size and must divide by "
            f"the number of JAX processes ({processes})."
        )
    if num_epochs is not None and (
        isinstance(num_epochs, bool) or not isinstance(num_epochs, int)
    ):
        raise TypeError(f"num_epochs must be an int or None, got {num_epochs!r}.")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(
            f"num_epochs must be at least 1 (or None for endless), got {num_epochs}."
        )
    if shuffle and not source.supports_shuffle:
        raise ValueError(
            f"shuffle=True needs a source that can shuffle; {type(source).__name__} "
            "cannot. Use shuffle=False."
        )
    if len(source) < 1:
        raise ValueError(f"the source {type(source).__name__} holds no records.")
