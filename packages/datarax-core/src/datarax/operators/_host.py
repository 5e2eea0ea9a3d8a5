"""``HostOperator``: a per-record Python function that runs on the host workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from datarax.core._checks import check_bool
from datarax.core._stages import stage_name, takes_positional

HostFn = Callable[[dict[str, Any], np.random.Generator | None], dict[str, Any]]


class HostOperator:
    """A host stage: ``fn(record, rng) -> record`` in plain Python, on worker threads.

    The counterpart of :class:`ElementOperator` for work JAX cannot trace:
    decoding a JPEG, tokenizing a string, reading an audio file. ``record`` is a
    dict whose values may be ``bytes``, ``str``, Python numbers or NumPy arrays
    of any shape; ``rng`` is a ``np.random.Generator`` when the operator is
    stochastic, else ``None``. Host stages run on a pool of workers (see
    :class:`~datarax.sources.HostMapSource`), before the pipeline's compiled
    stages; the last one must return fixed-shape arrays (or numbers) in every
    field.

    A stochastic operator's generator for one record is
    ``np.random.default_rng(SeedSequence(seed words, spawn_key=(stage, epoch,
    offset)))``: it depends only on the pipeline's seed, the stage's place among
    the host stages, the record's epoch and its offset in the epoch. Worker
    count, thread or process workers, batch size and mode never change it.

    With process workers ``fn`` must be picklable: a function defined at the top
    level of an importable module (not a lambda, not a closure).

    Args:
        fn: the per-record function.
        stochastic: whether ``fn`` draws from its ``rng``.
        name: the stage's name in errors and timing counters (default: the
            function's name).

    Examples:
        >>> op = HostOperator(lambda record, rng: {"n": len(record["text"])})
        >>> op({"text": "four"}, None)
        {'n': 4}
    """

    def __init__(
        self, fn: HostFn, *, stochastic: bool = False, name: str | None = None
    ):
        if not callable(fn):
            raise TypeError(f"HostOperator needs a callable fn, got {fn!r}.")
        if not takes_positional(fn, 2):
            raise TypeError(
                f"HostOperator calls fn(record, rng), but {stage_name(fn)} cannot "
                "take two arguments; write fn(record, rng) (rng is None unless "
                "stochastic=True), e.g. def decode(record, rng): ..."
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"HostOperator name must be a str, got {name!r}.")
        self.fn = fn
        self.stochastic = check_bool("stochastic", stochastic)
        self.name = stage_name(fn) if name is None else name

    def __call__(
        self, record: dict[str, Any], rng: np.random.Generator | None
    ) -> dict[str, Any]:
        """Runs ``fn`` on one record."""
        return self.fn(record, rng)

    def __repr__(self) -> str:
        return f"HostOperator({self.name}, stochastic={self.stochastic})"
