"""``HostMapSource``: host records through host stages, on workers, into arrays."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax.core import Batch, ElementSpec, jax_dtype, operator_key_data
from datarax.operators import HostOperator
from datarax.sources._host import HostSourceBase
from datarax.sources._hostpool import HostStats, HostWorkers, default_workers
from datarax.sources._hostrecords import HostRecordSource
from datarax.sources._hostwork import FieldSpec, Task, run_task


class HostMapSource(HostSourceBase):
    """A pipeline source that runs host stages on a record source's records.

    Reads records from a :class:`HostRecordSource` (image files, strings,
    encoded examples), runs ``stages`` (:class:`~datarax.operators.HostOperator`
    s, or plain ``fn(record, rng)`` callables taken as deterministic ones) on
    each record on a pool of workers, and serves the fixed-shape arrays they end
    in to the pipeline's compiled stages, in every mode:

    * iteration: the workers prepare the next ``prefetch`` batches while you
      use this one; a worker's error is raised by ``next()`` as
      :class:`HostStageError`;
    * ``Pipeline.scan`` / ``step()``: the compiled program fetches each read
      (``steps_per_read`` batches, about 8 MiB) through a host callback, and the
      workers prepare the next ``prefetch`` reads while the device runs this
      one. An error reaches you inside JAX's runtime error, with the
      :class:`HostStageError` text (stage, position, original traceback).

    Output order is the stream order whatever the worker count and timing, and
    a stochastic stage's generator depends only on the seed, the stage, the
    record's epoch and position (see :class:`~datarax.operators.HostOperator`):
    the stream is the same for any ``workers``, thread or process workers,
    batch size and mode, and a checkpoint (positions only) resumes it exactly;
    work prepared ahead is dropped, never served out of turn.

    The first record is run through the stages once, here, to learn the output
    fields' shapes and dtypes; every record must match them (a
    :class:`HostStageError` names the stage, field and position otherwise).

    Args:
        records: the host records.
        stages: host stages, applied in order to each record.
        workers: worker count (default: the usable cores, at most 8).
        processes: run the stages in worker processes (``spawn``) instead of
            threads, for work that holds the GIL; the record source and the
            stages must then be picklable.
        prefetch: reads prepared ahead of the one being served; records in
            flight stay below ``(prefetch + 1)`` reads.

    Raises:
        TypeError: for a records object without ``__len__`` / ``read_records``,
            or a stage that is not callable.
        ValueError: for an empty source, a bad ``workers`` / ``prefetch``, or
            stages whose output is not numeric arrays.
    """

    serves_host_batches = True

    def __init__(
        self,
        records: HostRecordSource,
        stages: Sequence[HostOperator | Any],
        *,
        workers: int | None = None,
        processes: bool = False,
        prefetch: int = 2,
    ):
        if not (hasattr(records, "read_records") and hasattr(records, "__len__")):
            raise TypeError(
                f"HostMapSource reads a HostRecordSource (ImageFolderSource, ...), "
                f"got {type(records).__name__}; for fixed-shape arrays use a "
                "DataSource and compiled stages instead."
            )
        self.length = len(records)
        if self.length < 1:
            raise ValueError(f"HostMapSource: {type(records).__name__} is empty.")
        stages = tuple(_host_stage(s, i) for i, s in enumerate(stages))
        workers = default_workers() if workers is None else workers
        for name, value, low in (("workers", workers, 1), ("prefetch", prefetch, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"HostMapSource {name} must be an int of at least {low}, got "
                    f"{value!r}."
                )
        if processes:
            _check_picklable(records, stages)
        self.records = records
        self.stages = stages
        self.workers = HostWorkers(
            records,
            stages,
            _probe(records, stages, self.length),
            workers=workers,
            processes=bool(processes),
            prefetch=prefetch,
        )
        self.workers.close_with(self)

    @property
    def element_spec(self) -> ElementSpec:
        """The host stages' output fields, as JAX holds them."""
        return {
            name: jax.ShapeDtypeStruct(s.shape, s.dtype)
            for name, s in self.workers.spec.items()
        }

    def fingerprint(self) -> str:
        """The record source's fingerprint (or type and length) and the stages."""
        inner = self.records.fingerprint() or (
            f"{type(self.records).__qualname__}(len={self.length})"
        )
        return f"HostMapSource({inner}, stages={[s.name for s in self.stages]})"

    # -- compiled reads (scan, step, iteration chunks) -----------------------------

    def host_plan(self, start: int, num_records: int, key_data: Any) -> None:
        """Nothing: the workers find each position's record on the host."""
        del start, num_records, key_data

    def plan(
        self, start: Any, num_records: int, key: Any, host_plan: Any = None
    ) -> None:
        """Nothing: the workers find each position's record on the host."""
        del start, num_records, key, host_plan

    def read(self, plan: Any, start: jax.Array, batch_size: int, key: Any) -> Batch:
        """The records at ``start...``, from the workers through one host callback."""
        del plan
        workers = self.workers

        def fetch(start: np.ndarray, shuffle: Any, seed: Any) -> dict[str, np.ndarray]:
            return workers.window(int(start), batch_size, shuffle, seed)

        return self._read_on_host(fetch, (batch_size,), jnp.asarray(start), key)

    def read_at(self, plan: Any, positions: jax.Array, key: Any) -> Batch:
        """The records at arbitrary stream ``positions``, through one callback."""
        del plan
        workers = self.workers

        def fetch(positions: np.ndarray, shuffle: Any, seed: Any) -> dict:
            return workers.at(positions.reshape(-1), shuffle, seed)

        return self._read_on_host(fetch, positions.shape, positions, key)

    def _read_on_host(
        self, fetch: Any, lead: tuple[int, ...], where: jax.Array, key: Any
    ) -> Batch:
        """``fetch(where, shuffle words, seed words)`` through one host callback.

        The shuffle key's and the operator key's words travel as operands (the
        ones present), so the workers see the run's keys, traced or not.
        """
        spec = self.workers.spec
        shuffle, seed = _key_words(key), operator_key_data()
        self._check_seed(seed)

        def callback(where: np.ndarray, *words: np.ndarray) -> tuple[np.ndarray, ...]:
            out = fetch(where, *_unpacked(words, shuffle, seed))
            return tuple(out[name] for name in spec)

        shapes = tuple(
            jax.ShapeDtypeStruct((*lead, *s.shape), s.dtype) for s in spec.values()
        )
        operands = [w for w in (shuffle, seed) if w is not None]
        values = jax.pure_callback(
            callback, shapes, where, *operands, vmap_method="sequential"
        )
        return dict(zip(spec, values, strict=True))

    def _check_seed(self, seed: Any) -> None:
        if seed is None and any(s.stochastic for s in self.stages):
            raise ValueError(
                "HostMapSource has stochastic host stages, whose generators derive "
                "from the seed of the Pipeline that reads the source; read it "
                "through a Pipeline (iteration, step() or scan), not get_batch_at."
            )

    # -- iteration -----------------------------------------------------------------

    def host_batches(
        self,
        start: int,
        batch_size: int,
        key_data: np.ndarray | None,
        op_key_data: np.ndarray | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Full NumPy batches of the stream from ``start``, endlessly, in order.

        ``key_data`` is the shuffle key's data (``None`` in natural order) and
        ``op_key_data`` the pipeline's operator key data, from which stochastic
        host stages draw. The workers prepare the next ``prefetch`` batches
        ahead; closing the generator cancels them.
        """
        self.workers.close_with(self)  # a copy (nnx.clone) that reads owns it too
        seed = None if op_key_data is None else np.asarray(op_key_data, np.uint32)
        shuffle = None if key_data is None else np.asarray(key_data, np.uint32)
        position = start
        try:
            while True:
                yield self.workers.window(position, batch_size, shuffle, seed)
                position += batch_size
        finally:
            self.workers.cancel_prefetch()  # the loop ended: drop the work ahead

    # -- visibility ----------------------------------------------------------------

    def stats(self) -> HostStats:
        """Counters: records served, time per stage, time spent waiting, etc."""
        return self.workers.stats()

    def close(self) -> None:
        """Stops the workers now (they restart on the next read)."""
        self.workers.close()


def _check_picklable(records: Any, stages: tuple[HostOperator, ...]) -> None:
    """Refuses, with the culprit named, what cannot reach a worker process."""
    for what, value in [
        (f"the record source {type(records).__name__}", records),
        *((f"host stage {stage.name!r}", stage) for stage in stages),
    ]:
        try:
            pickle.dumps(value)
        except Exception as err:
            raise TypeError(
                f"HostMapSource(processes=True): {what} cannot be pickled to the "
                f"worker processes ({type(err).__name__}: {err}). Define stage "
                "functions at the top level of an importable module (not lambdas "
                "or closures), keep only picklable state in the record source, "
                "or use thread workers (processes=False)."
            ) from err


def _host_stage(stage: Any, number: int) -> HostOperator:
    if isinstance(stage, HostOperator):
        return stage
    if callable(stage):
        return HostOperator(stage)
    raise TypeError(
        f"HostMapSource stage {number} is a {type(stage).__name__}, not callable; "
        "give HostOperator(fn) or a function fn(record, rng) -> record."
    )


def _probe(
    records: HostRecordSource, stages: tuple[HostOperator, ...], length: int
) -> dict[str, FieldSpec]:
    """The output fields of the stages on record 0 (stochastic ones seeded by 0)."""
    task = Task(
        np.zeros(1, np.int64), np.zeros(1, np.int64), length, np.zeros(2, np.uint32)
    )
    fields = run_task(records, stages, None, task).fields
    return {
        name: FieldSpec(tuple(value.shape[1:]), jax_dtype(value.dtype))
        for name, value in fields.items()
    }


def _key_words(key: Any) -> jax.Array | None:
    """A shuffle key's data as uint32 words (``None`` in natural order)."""
    if key is None:
        return None
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.asarray(key).astype(jnp.uint32).reshape(-1)


def _unpacked(
    words: tuple[np.ndarray, ...], shuffle: Any, seed: Any
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The callback's key operands back in (shuffle, seed) places."""
    rest = list(words)
    shuffle_words = None if shuffle is None else np.asarray(rest.pop(0), np.uint32)
    seed_words = (
        None if seed is None else np.asarray(rest.pop(0), np.uint32).reshape(-1)
    )
    return shuffle_words, seed_words
