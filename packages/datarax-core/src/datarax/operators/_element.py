"""``ElementOperator``: a per-record function applied to a whole batch."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from datarax.core._checks import check_bool
from datarax.core._records import RecordKeyed, current_context
from datarax.core._source import Batch
from datarax.core._stages import stage_name, takes_positional

RecordFn = Callable[[dict[str, jax.Array], jax.Array | None], dict[str, jax.Array]]


class ElementOperator(nnx.Module, RecordKeyed):
    """A stage that applies ``fn(record, key) -> record`` to every record of a batch.

    ``fn`` sees one record (a dict of arrays without the batch axis) and is
    vectorised over the batch with ``jax.vmap``: no Python loop runs per record.
    ``key`` is ``None`` unless the operator is stochastic; then every record gets
    its own typed PRNG key, derived from the pipeline's seed, this operator's place
    in the pipeline, the record's epoch and its position in the stream. The same
    record therefore gets the same randomness whatever the batch size and whether
    it is served by iteration, ``step()`` or ``scan``; each epoch differs.

    A stochastic operator must run inside a :class:`~datarax.Pipeline` (as a stage,
    a DAG node or an attribute of a subclass), which supplies those keys.

    Args:
        fn: the per-record function, traceable by JAX.
        stochastic: whether ``fn`` uses its ``key``.

    Examples:
        >>> import numpy as np
        >>> from datarax import Pipeline
        >>> from datarax.sources import MemorySource
        >>> double = ElementOperator(lambda r, key: {"x": r["x"] * 2})
        >>> pipe = Pipeline(source=MemorySource({"x": np.arange(6)}),
        ...                 stages=[double], batch_size=4)
        >>> [b["x"].tolist() for b in pipe]
        [[0, 2, 4, 6], [8, 10]]
    """

    def __init__(self, fn: RecordFn, *, stochastic: bool = False):
        if not callable(fn):
            raise TypeError(f"ElementOperator needs a callable fn, got {fn!r}.")
        if not takes_positional(fn, 2):
            raise TypeError(
                f"ElementOperator calls fn(record, key), but {stage_name(fn)} cannot "
                "take two arguments; write fn(record, key) (key is None unless "
                "stochastic=True), e.g. lambda record, key: {...}."
            )
        self.fn = fn
        self.stochastic = check_bool("stochastic", stochastic)
        self.needs_record_keys = self.stochastic

    def __call__(self, batch: Batch) -> Batch:
        """Applies ``fn`` to every record of ``batch``."""
        if not self.stochastic:
            try:
                return jax.vmap(lambda record: self.fn(record, None))(batch)
            except Exception as err:
                err.add_note(
                    f"datarax: ElementOperator(stochastic=False) calls "
                    f"{stage_name(self.fn)}(record, None); if it draws random "
                    "numbers from its key, build it with stochastic=True."
                )
                raise
        context = current_context()
        if context is None:
            raise ValueError(
                "a stochastic ElementOperator gets its per-record keys from the "
                "Pipeline that runs it; call it as a pipeline stage, not directly."
            )
        keys = context.keys_for(self)
        return jax.vmap(self.fn)(batch, keys)
