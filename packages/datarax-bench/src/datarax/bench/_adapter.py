"""The adapter protocol: how one loader does one scenario's work, and the registry."""

from __future__ import annotations

import abc
import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from datarax.bench._consumers import SUM, Consumer
from datarax.bench._scenarios import Scenario

Batch = dict[str, jax.Array]

#: Display name -> adapter class, in registration order.
ADAPTERS: dict[str, type[Adapter]] = {}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: registers ``cls`` under ``cls.name``.

    The same class imported again (a module loaded twice, as doctest collection
    does) replaces its entry; another class under a taken name is refused.
    """
    known = ADAPTERS.get(cls.name)
    if known is not None and _origin(known) != _origin(cls):
        raise ValueError(
            f"adapter {cls.name!r} is registered twice: by "
            f"{known.__module__}.{known.__qualname__} and "
            f"{cls.__module__}.{cls.__qualname__}; give one another name."
        )
    ADAPTERS[cls.name] = cls
    return cls


def _origin(cls: type) -> tuple[str | None, str]:
    """The file and qualified name defining ``cls`` (its module name can vary)."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", cls.__module__), cls.__qualname__


class Adapter(abc.ABC):
    """One loader set up for one scenario.

    The runner calls :meth:`setup` once, then :meth:`run` repeatedly; runs go on
    along the stream (repeat ``k`` serves the batches after repeat ``k-1``).
    Every adapter delivers each batch as a dict of ``jax.Array`` on the default
    device; :meth:`run` returns only when the last batch is ready
    (``block_until_ready``), so the timer sees the whole of the work.

    Class attributes:
        name: the display name (registry key).
        kind: ``"floor"``, ``"datarax"``, ``"hand"`` (hand-written loop) or
            ``"peer"``.
        modules: top-level modules the adapter imports (peers); when one is
            missing the adapter is skipped with :attr:`install`.
        install: the command that installs what it needs.
        shards_batches: whether it serves a sharded scenario (``DP-1``).
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "peer"
    modules: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = 'pip install "datarax-bench[peers]"'
    #: Whether the adapter serves global batches sharded over several devices
    #: (``Scenario.devices`` above 1, see ``batch_sharding``).
    shards_batches: ClassVar[bool] = False
    #: Whether the adapter reads encoded records (``CV-JPEG``, ``TEXT-1``).
    reads_files: ClassVar[bool] = False

    @classmethod
    def missing(cls) -> str | None:
        """Why the adapter cannot run here (a module is not installed), else None."""
        absent = [m for m in cls.modules if importlib.util.find_spec(m) is None]
        if absent:
            return f"{', '.join(absent)} not installed: {cls.install}"
        return None

    def unsupported(self, scenario: Scenario) -> str | None:
        """Why this loader cannot express ``scenario`` (never run lighter work)."""
        if scenario.encoded and not self.reads_files:
            return (
                "reads arrays held in memory; "
                f"{scenario.id} reads encoded records (not written for this "
                "loader yet)"
            )
        if scenario.devices > 1 and not self.shards_batches:
            return (
                f"serves batches on one device; {scenario.id} shards them over "
                f"{scenario.devices}"
            )
        return None

    def settings(self) -> dict[str, Any]:
        """The settings used (workers, prefetch, ...), recorded in the report."""
        return {}

    @abc.abstractmethod
    def setup(
        self,
        scenario: Scenario,
        variant: str,
        data: list[dict[str, np.ndarray]],
        workdir: Path,
    ) -> None:
        """Builds the loader over ``data`` (``scenario.data(variant)``).

        ``workdir`` is an empty folder the adapter may write to; for an
        ``on_disk`` scenario it already holds the ``.npy`` files.
        """

    @abc.abstractmethod
    def run(self, num_batches: int) -> int:
        """Serves the next ``num_batches`` batches; returns the records served."""

    @abc.abstractmethod
    def batches(self, num_batches: int) -> list[dict[str, np.ndarray]]:
        """The next ``num_batches`` batches, fetched to the host (for tests)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases workers, threads and files."""


class IteratorAdapter(Adapter):
    """An adapter whose loader is a Python iterator of device batches.

    Subclasses implement :meth:`make_iterator` (called once, after ``setup``): an
    endless iterator of ``dict[str, jax.Array]`` already on the default device
    (or, for a sharded scenario, global arrays of :func:`batch_sharding`). One
    that serves a scenario with another consumer than the sum (``DP-1``) sets
    :attr:`consumer` in its ``setup``.
    """

    _iterator: Iterator[Batch] | None = None
    #: What each batch feeds (``consumer_of(scenario)``); the sum by default.
    consumer: Consumer = SUM
    _state: Any = None
    _step: Callable[[Any, Batch], Any] | None = None

    @abc.abstractmethod
    def make_iterator(self) -> Iterator[Batch]:
        """An endless iterator of device batches (epochs repeat)."""

    def _next(self) -> Batch:
        if self._iterator is None:
            self._iterator = self.make_iterator()
        return next(self._iterator)

    def run(self, num_batches: int) -> int:
        """Pulls ``num_batches`` batches and consumes each; returns records.

        Each batch goes through the consumer's step (one cached jitted call, the
        step the Floor and ``Pipeline.scan`` take inside their loops), so an
        iterator is timed on the same work; the run ends when its result is ready.
        """
        if self._step is None:
            self._step = _jitted(self.consumer.step)
            self._state = self.consumer.init()
        records = 0
        pending: list[Any] = []  # states of the steps in flight
        limit = self.consumer.in_flight
        for _ in range(num_batches):
            batch = self._next()
            records += int(next(iter(batch.values())).shape[0])
            if limit is not None and len(pending) >= limit:
                jax.block_until_ready(pending.pop(0))
            self._state = self._step(self._state, batch)
            if limit is not None:
                pending.append(self._state)
        jax.block_until_ready(self._state)
        return records

    def batches(self, num_batches: int) -> list[dict[str, np.ndarray]]:
        """The next ``num_batches`` batches as NumPy arrays."""
        return [
            {k: np.asarray(v) for k, v in self._next().items()}
            for _ in range(num_batches)
        ]


@functools.cache
def _jitted(step: Callable[[Any, Batch], Any]) -> Callable[[Any, Batch], Any]:
    """One ``jax.jit`` per consumer step, shared by every adapter in the process.

    A new ``jax.jit`` wrapper per adapter would trace and compile the same step
    again for every adapter a test or a run sets up.
    """
    return jax.jit(step)


def to_device(batch: dict[str, Any]) -> Batch:
    """A host batch (NumPy, torch, tf) as ``jax.Array`` s on the default device."""
    return {k: jax.device_put(np.asarray(v)) for k, v in batch.items()}


def endless(make_epoch: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
    """Chains ``make_epoch(0)``, ``make_epoch(1)``, ... forever."""
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1
