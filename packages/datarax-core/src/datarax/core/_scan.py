"""The compiled program of ``Pipeline.scan``: many training steps, loading included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax.core._cache import LRUCache
from datarax.core._checks import check_modules, check_positive_int
from datarax.core._compiled import (
    ChangeRecorder,
    Compiled,
    nbytes,
    probe_batch,
    steps_per_read,
)
from datarax.core._feed import (
    Stream,
    Window,
    check_room,
    open_window,
    read_batch,
    read_chunk,
    stage_records,
)
from datarax.core._graph import Graph, GraphSpec
from datarax.core._stages import takes_positional

StepFn = Callable[..., Any]


def default_unroll(
    batch_bytes: int, num_modules: int = 0, *, host_read_each_step: bool = False
) -> int:
    """The ``lax.scan`` unroll that ``Pipeline.scan`` uses when none is given.

    On XLA:CPU (2 cores) the best unroll of a data-bound loop (no modules:
    evaluation, benchmarks, preprocessing) followed the size of the batch the
    stages produce. Per 1,000 steps, unroll 1 / 2 / 4 / 8: tokens 32x128 int32
    (16 KiB) 0.49 / 0.78 / 0.79 / 0.73 ms; tabular 256x100 float32 (100 KiB)
    10.3 / 14.5 / 12.9 / 12.8 ms (1 was best on jax 0.10 and 0.12 alike, at 100
    steps too); images 64x32x32x3 float32 (768 KiB) 446 / 52 / 45 / 38 ms. So:
    under 256 KiB 1, else 8. A training step (modules given) gained 15% at unroll
    8 on the digits demo but compiled 3x longer (3.8 s against 1.2 s): 1. GPU and
    TPU run each step as a few large kernels, where unrolling mostly lengthens
    compiles: 1. A source read through one host callback per step (batches too
    large to read several at once, as decoded images): 1. The callbacks of an
    unrolled body do not depend on each other, and XLA:CPU ran them out of stream
    order, which defeated host workers' read-ahead (CV-JPEG's scan: 1,190 images/s
    at unroll 8, none of its reads prepared ahead). Pass ``unroll=`` to ``scan``
    to choose yourself.

    Args:
        batch_bytes: bytes of one batch as the stages produce it.
        num_modules: how many modules the step receives.
        host_read_each_step: whether every step reads its batch through its own
            host callback.

    Returns:
        The unroll factor.
    """
    if jax.default_backend() != "cpu" or num_modules or host_read_each_step:
        return 1
    if batch_bytes < 256 * 2**10:
        return 1
    return 8


def step_form(num_modules: int, has_carry: bool, batch: bool = True) -> str:
    """How ``scan`` calls ``step_fn``, for messages: ``step_fn(carry, m0, batch)``."""
    args = [
        *(["carry"] if has_carry else []),
        *(f"modules[{i}]" for i in range(num_modules)),
        *(["batch"] if batch else []),
    ]
    returns = "(carry, out)" if has_carry else "out"
    return f"step_fn({', '.join(args)}) -> {returns}"


# step_fn s whose signature passed, by (id, modules, carry): reading a signature
# costs 9 us, a sixth of a cached scan call. The entry holds the function, so
# its id cannot be recycled while it is here.
_CHECKED: LRUCache[tuple, StepFn] = LRUCache(maxsize=64)


def check_step_fn(
    step_fn: StepFn, num_modules: int, has_carry: bool, batch: bool = True
) -> None:
    """Refuses a ``step_fn`` whose signature cannot take the arguments scan passes.

    ``batch`` is false when the pipeline is among the modules: scan then passes
    no batch, and ``step_fn`` fetches its own.
    """
    checked = (id(step_fn), num_modules, has_carry, batch)
    if _CHECKED.get(checked) is step_fn:
        return
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {step_fn!r}.")
    count = num_modules + int(batch) + int(has_carry)
    if not takes_positional(step_fn, count):
        hint = (
            "pass one module per parameter before the batch in modules=(...)"
            if batch
            else "the pipeline is among modules=(...), so scan passes no batch: "
            "step_fn takes one parameter per module and fetches its batches "
            "with pipe.step()"
        )
        raise TypeError(
            f"Pipeline.scan calls {step_form(num_modules, has_carry, batch)} "
            f"({count} positional argument{'s' * (count != 1)}), which step_fn "
            f"cannot take; {hint}, and init_carry= only if step_fn takes a "
            "carry first."
        )
    _CHECKED.put(checked, step_fn)


def check_scan_args(
    stream: Stream,
    step_fn: StepFn,
    length: int,
    modules: Any,
    init_carry: Any,
    unroll: int | None,
) -> tuple[tuple, bool]:
    """``Pipeline.scan``'s arguments checked.

    Returns:
        ``modules`` as a tuple, and whether the pipeline is among them (then
        scan passes no batch: ``step_fn`` fetches its own).
    """
    check_positive_int("length", length)
    if unroll is not None:
        check_positive_int("unroll", unroll)
    modules = check_modules(modules)
    joint = any(module is stream for module in modules)
    check_step_fn(step_fn, len(modules), init_carry is not None, not joint)
    check_carry(init_carry)
    check_room(stream, length * stream.batch_size)
    return modules, joint


def check_carry(init_carry: Any) -> None:
    """Refuses an ``init_carry`` with leaves that are not arrays or numbers."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(init_carry):
        if not _is_array(leaf):
            where = jax.tree_util.keystr(path) or "init_carry"
            raise TypeError(
                f"init_carry{jax.tree_util.keystr(path)} is a "
                f"{type(leaf).__name__}, but a carry holds arrays (a pytree of "
                f"arrays or numbers); got {leaf!r:.60} at {where}."
            )


def _check_step_result(
    carry: Any, new_carry: Any, out: Any, form: str, has_carry: bool
) -> None:
    """Refuses a carry that changed type and outputs that are not arrays."""
    if has_carry:
        old = jax.tree.structure(carry)
        if jax.tree.structure(new_carry) != old:
            raise TypeError(
                f"step_fn returned a carry of structure "
                f"{jax.tree.structure(new_carry)}, but it received {old}: scan "
                f"calls {form}, and the carry keeps its structure, shapes and "
                "dtypes from step to step."
            )
        for path, (a, b) in _paired(carry, new_carry):
            if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
                raise TypeError(
                    f"step_fn returned carry{path} as {jnp.result_type(b)}"
                    f"{list(jnp.shape(b))}, but it received "
                    f"{jnp.result_type(a)}{list(jnp.shape(a))}; the carry keeps "
                    "its shapes and dtypes (cast it, e.g. x.astype(...))."
                )
    for path, leaf in jax.tree_util.tree_leaves_with_path(out):
        if not _is_array(leaf):
            raise TypeError(
                f"step_fn returned a {type(leaf).__name__} in its output"
                f"{jax.tree_util.keystr(path)}; scan stacks outputs, which must "
                f"be arrays (or None). It calls {form}."
            )


def _is_array(leaf: Any) -> bool:
    """An array or a number (what ``lax.scan`` carries and stacks)."""
    if isinstance(leaf, np.ndarray):
        return leaf.dtype.kind not in "OUSV"
    return isinstance(leaf, jax.Array | np.number | np.bool_ | int | float | complex)


def _paired(a: Any, b: Any) -> list[tuple[str, tuple[Any, Any]]]:
    left = jax.tree_util.tree_leaves_with_path(a)
    right = jax.tree.leaves(b)
    return [
        (jax.tree_util.keystr(p), (x, y)) for (p, x), y in zip(left, right, strict=True)
    ]


def scan_builder(
    step_fn: StepFn,
    *,
    length: int,
    num_modules: int,
    has_carry: bool,
    unroll: int | None,
) -> Callable[[GraphSpec, Graph], Compiled]:
    """The builder ``cached_program`` calls when a scan is not compiled yet."""

    def build(spec: GraphSpec, graph: Graph) -> Compiled:
        chosen = unroll
        if chosen is None:
            stream: Stream = graph.nodes()[0]
            chosen = default_unroll(
                nbytes(probe_batch(graph)[1]),
                num_modules,
                host_read_each_step=stream.source.reads_on_host
                and _steps_per_call(stream, length) == 1,
            )
        return build_scan(
            spec, step_fn, length=length, has_carry=has_carry, unroll=chosen
        )

    return build


def _steps_per_call(stream: Stream, length: int) -> int:
    """Steps of a ``length``-step scan whose records one source read serves."""
    return max(1, min(length, steps_per_read(stream)))


class _Body:
    """The traced pieces of one scan: a step, and a run of steps per source read."""

    def __init__(self, spec: GraphSpec, step_fn: StepFn, has_carry: bool, unroll: int):
        self.spec, self.step_fn, self.has_carry = spec, step_fn, has_carry
        self.unroll = unroll
        self.recorder = ChangeRecorder()
        self.data_values: list = []
        self.window: Window | None = None

    def step(self, carry: tuple, batch_start: jax.Array, raw: Any) -> tuple:
        """One training step on the batch at ``batch_start`` (read, or ``raw``)."""
        values, user_carry = carry
        nodes = self.spec.merge(values, self.data_values)
        stream: Stream = nodes[0]
        assert self.window is not None
        if raw is None:
            batch = read_batch(stream, self.window, batch_start)
        else:
            batch = stage_records(stream, raw, batch_start, self.window.keys)
        user_carry, out = self.call(user_carry, nodes[1:], batch)
        new = self.spec.carried(nodes)
        self.recorder.note(new, values)
        return (new, user_carry), out

    def call(self, carry: Any, modules: list, batch: Any) -> tuple[Any, Any]:
        """``step_fn`` on one batch; errors say how scan called it."""
        return call_step(self.step_fn, carry, modules, self.has_carry, batch)

    def read_steps(
        self, stream: Stream, carry: tuple, first_step: Any, count: int
    ) -> tuple:
        """``count`` steps whose records come from one source read."""
        window = self.window
        assert window is not None
        size = stream.batch_size
        chunk_start = window.start + first_step * size
        raw = read_chunk(stream, window, chunk_start, count)

        def inner(carry: tuple, xs: tuple) -> tuple:
            raw_k, k = xs
            return self.step(carry, chunk_start + k * size, raw_k)

        steps = jnp.arange(count, dtype=jnp.int32)
        unroll = min(self.unroll, count)
        return jax.lax.scan(inner, carry, (raw, steps), unroll=unroll)


#: ``call_step``'s ``batch`` when scan passes none (the pipeline is among the
#: modules and ``step_fn`` fetches its own batches).
NO_BATCH: Any = object()


def call_step(
    step_fn: StepFn, carry: Any, modules: list, has_carry: bool, batch: Any
) -> tuple[Any, Any]:
    """``step_fn`` on one step's arguments, as ``(carry, out)``; errors say how."""
    form = step_form(len(modules), has_carry, batch is not NO_BATCH)
    args = [*modules] if batch is NO_BATCH else [*modules, batch]
    try:
        if not has_carry:
            out = step_fn(*args)
            _check_step_result(None, None, out, form, False)
            return None, out
        result = step_fn(carry, *args)
    except Exception as err:
        called = ", ".join(type(m).__name__ for m in modules) or "no modules"
        err.add_note(
            f"datarax: Pipeline.scan called {form}, with modules in the order "
            f"given ({called})."
        )
        raise
    # A bare array of two rows would unpack as (carry, out) without a word.
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise TypeError(
            f"with init_carry, step_fn must return a tuple (carry, out): scan "
            f"calls {form}; it returned {_describe(result)}."
        )
    _check_step_result(carry, result[0], result[1], form, True)
    return result[0], result[1]


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)}"
    return f"a {type(value).__name__}"


def build_scan(
    spec: GraphSpec, step_fn: StepFn, *, length: int, has_carry: bool, unroll: int
) -> Compiled:
    """``jax.jit`` of ``length`` steps of ``step_fn`` over the pipeline's batches.

    Per-run work (keys, the source's permutation plan) is done once, before the
    loop, so the body is as plain as a hand-written one. Sources with a costly
    read (a host callback) read many steps' records at once: an outer loop over
    reads, an inner one over their steps.
    """
    compiled = Compiled()

    @jax.jit
    def run(carry_values, data_values, host_plan, init_carry):
        body = _Body(spec, step_fn, has_carry, unroll)
        body.data_values = data_values
        stream: Stream = spec.merge(carry_values, data_values)[0]
        body.window = open_window(stream, length * stream.batch_size, host_plan)
        per_read = _steps_per_call(stream, length)
        carry = (carry_values, init_carry)
        if per_read == 1:
            start, size = body.window.start, stream.batch_size
            carry, outs = jax.lax.scan(
                lambda c, i: body.step(c, start + i * size, None),
                carry,
                jnp.arange(length, dtype=jnp.int32),
                unroll=min(unroll, length),
            )
        else:
            carry, outs = _read_loops(body, stream, carry, length, per_read)
        values, user_carry = carry
        return body.recorder.finish(compiled, values), user_carry, outs

    compiled.fn = run
    return compiled


def _read_loops(
    body: _Body, stream: Stream, carry: tuple, length: int, per_read: int
) -> tuple:
    """``length`` steps as full reads of ``per_read`` steps and a rest."""
    full, rest = divmod(length, per_read)
    parts = []
    if full:
        carry, outs = jax.lax.scan(
            lambda c, j: body.read_steps(stream, c, j * per_read, per_read),
            carry,
            jnp.arange(full, dtype=jnp.int32),
        )
        parts.append(jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), outs))
    if rest:
        carry, outs = body.read_steps(stream, carry, full * per_read, rest)
        parts.append(outs)
    return carry, jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
