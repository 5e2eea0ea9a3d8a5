"""``Pipeline.scan`` with the pipeline among its modules: stages trained in the loop.

The usual scan loads each step's batch before calling ``step_fn``, so the batch
is a constant to it and gradients cannot reach the stages' parameters. With the
pipeline among ``modules``, ``step_fn`` fetches its batches itself by
``pipe.step()``, inside ``nnx.grad`` where it wants gradients through the
stages (a learned augmentation policy, a learned image signal processor). The
loop is ``nnx.scan`` under ``nnx.jit``: no batch is loaded for it, and each
``pipe.step()`` plans its own batch, as inside any jitted function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx

from datarax.core._cache import LRUCache
from datarax.core._scan import NO_BATCH, call_step

StepFn = Callable[..., Any]

# Compiled loops by (id(step_fn), length, modules, carry, unroll); the entry
# holds step_fn, so a recycled id never runs a stale body. nnx.jit retraces by
# itself when a module's structure changes.
_PROGRAMS: LRUCache[tuple, tuple[StepFn, Callable[..., Any]]] = LRUCache(maxsize=32)


def joint_scan(
    step_fn: StepFn,
    *,
    length: int,
    modules: Sequence[nnx.Pytree],
    init_carry: Any,
    unroll: int,
) -> Any:
    """Runs ``length`` calls of ``step_fn(*modules)`` as one compiled loop.

    Args:
        step_fn: ``step_fn(*modules) -> out``, or with ``init_carry``
            ``step_fn(carry, *modules) -> (carry, out)``; it calls ``.step()`` on
            the pipelines among ``modules``.
        length: number of steps.
        modules: the modules, the pipeline among them.
        init_carry: initial carry, or ``None``.
        unroll: ``lax.scan`` unroll factor.

    Returns:
        ``(carry, stacked outputs)``; the carry is ``None`` without ``init_carry``.
    """
    key = (id(step_fn), length, len(modules), init_carry is not None, unroll)
    found = _PROGRAMS.get(key)
    if found is None or found[0] is not step_fn:
        found = (step_fn, _build(step_fn, length, init_carry is not None, unroll))
        _PROGRAMS.put(key, found)
    return found[1](tuple(modules), init_carry)


def _build(
    step_fn: StepFn, length: int, has_carry: bool, unroll: int
) -> Callable[..., Any]:
    @nnx.jit
    def run(modules: tuple, init_carry: Any) -> tuple[Any, Any]:
        @nnx.scan(
            in_axes=(nnx.Carry,), out_axes=(nnx.Carry, 0), length=length, unroll=unroll
        )
        def loop(carry: tuple) -> tuple[tuple, Any]:
            user_carry, mods = carry
            user_carry, out = call_step(
                step_fn, user_carry, list(mods), has_carry, NO_BATCH
            )
            return (user_carry, mods), out

        (user_carry, _), outs = loop((init_carry, modules))
        return user_carry, outs

    return run
