"""Checkpoints: small, exact resume in every mode, loud on a mismatch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, strategies as st

from datarax import Pipeline
from datarax.checkpoint import load_state_dict, restore, save, state_dict
from datarax.operators import ElementOperator
from datarax.sources import MemorySource

N = 23


def jitter(record, key):
    return {"label": record["label"], "u": jax.random.uniform(key)}


class Noise(nnx.Module):
    """A stage with its own RNG stream: its state must be checkpointed too."""

    def __init__(self):
        self.rngs = nnx.Rngs(noise=5)

    def __call__(self, batch):
        return {
            **batch,
            "n": jax.random.uniform(self.rngs.noise(), batch["label"].shape),
        }


def build(batch_size=4, *, shuffle=True, seed=0, length=N, stages=None):
    stages = [ElementOperator(jitter, stochastic=True)] if stages is None else stages
    return Pipeline(
        source=MemorySource({"label": np.arange(length, dtype=np.int32)}),
        stages=stages,
        batch_size=batch_size,
        shuffle=shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


def records(batches, field="label"):
    return np.concatenate([np.ravel(np.asarray(b[field])) for b in batches])


def test_state_dict_is_small_plain_numpy_and_excludes_the_dataset():
    big = Pipeline(
        source=MemorySource({"x": np.zeros((100_000, 64), np.float32)}),
        batch_size=8,
    )
    d = state_dict(big)
    assert set(d) == {"0"}
    leaves = jax.tree.leaves(d)
    assert all(isinstance(x, np.ndarray) for x in leaves)
    assert sum(x.nbytes for x in leaves) < 4096  # the source is 25 MB
    assert set(d["0"]) == {"position", "epoch", "key", "__construction__"}
    assert d["0"]["key"].dtype == np.uint32


def test_state_dict_keys_modules_in_argument_order():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    d = state_dict(build(), model)
    assert set(d) == {"0", "1"}
    assert d["1"]["kernel"].shape == (2, 3)


@given(
    stop=st.integers(0, 12),
    batch_size=st.integers(1, 9),
    new_batch_size=st.integers(1, 9),
    shuffle=st.booleans(),
)
def test_restore_continues_the_stream_exactly(
    stop, batch_size, new_batch_size, shuffle
):
    """Stop anywhere, restore with any batch size: iteration and scan go on."""
    original = build(batch_size, shuffle=shuffle)
    it = iter(original)
    for _ in range(stop):
        next(it)
    d = state_dict(original)
    ahead = [next(it) for _ in range(-(-30 // batch_size))]
    labels, noise = records(ahead)[:30], records(ahead, "u")[:30]
    steps = -(-30 // new_batch_size)

    by_iter = build(new_batch_size, shuffle=shuffle)
    load_state_dict(d, by_iter)
    it = iter(by_iter)
    got = [next(it) for _ in range(steps)]
    np.testing.assert_array_equal(records(got)[:30], labels)
    np.testing.assert_array_equal(records(got, "u")[:30], noise)

    by_scan = build(new_batch_size, shuffle=shuffle)
    load_state_dict(d, by_scan)
    out = by_scan.scan(lambda b: b, length=steps)
    np.testing.assert_array_equal(np.ravel(out["label"])[:30], labels)
    np.testing.assert_array_equal(np.ravel(out["u"])[:30], noise)


@pytest.mark.parametrize("mode", ["iter", "scan"])
def test_restore_at_an_epoch_boundary_with_stateful_stages(mode, tmp_path):
    def make(batch_size):
        return build(
            batch_size, stages=[ElementOperator(jitter, stochastic=True), Noise()]
        )

    original = make(N)  # one batch = one epoch: stop exactly at the boundary
    original.step()
    save(tmp_path / "ck.npz", original)
    expected = original.scan(lambda b: b, length=3)

    restored = make(N)
    restore(tmp_path / "ck.npz", restored)
    assert int(restored.epoch[...]) == 1 and int(restored.position[...]) == N
    if mode == "iter":
        it = iter(restored)
        got = [next(it) for _ in range(3)]
        got = {k: np.stack([g[k] for g in got]) for k in got[0]}
    else:
        got = restored.scan(lambda b: b, length=3)
    for field in ("label", "u", "n"):
        np.testing.assert_array_equal(got[field], expected[field])


def test_iteration_and_scan_resume_the_same_way():
    original = build(5)
    original.scan(lambda b: b, length=3)
    d = state_dict(original)
    expected = original.scan(lambda b: b, length=4)

    by_iter = build(5)
    load_state_dict(d, by_iter)
    it = iter(by_iter)
    got = [next(it) for _ in range(4)]
    np.testing.assert_array_equal(records(got), np.ravel(expected["label"]))
    np.testing.assert_array_equal(records(got, "u"), np.ravel(expected["u"]))


def test_model_and_optimizer_round_trip_with_typed_keys(tmp_path):
    def make():
        model = nnx.Sequential(
            nnx.Linear(1, 4, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(7))
        )
        return model, nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)

    pipe = build(4)
    model, optimizer = make()

    def step(model, optimizer, batch):
        x = batch["u"][:, None]

        def loss_fn(model):
            return (model(x) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    pipe.scan(step, length=5, modules=(model, optimizer))
    save(tmp_path / "ck.npz", pipe, model, optimizer)
    expected = pipe.scan(step, length=5, modules=(model, optimizer))

    pipe2 = build(4)
    model2, optimizer2 = make()
    restore(tmp_path / "ck.npz", pipe2, model2, optimizer2)
    got = pipe2.scan(step, length=5, modules=(model2, optimizer2))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (lambda: build(length=N + 1), "source length: 23 in the checkpoint, 24 here"),
        (lambda: build(seed=1), "seed: "),
        (lambda: build(shuffle=False), "shuffle: True in the checkpoint, False here"),
        (lambda: build(stages=[]), "structure: 'Pipeline; 0=ElementOperator' in"),
        (
            lambda: Pipeline(
                source=MemorySource({"label": np.zeros(N, np.float32)}),
                stages=[ElementOperator(jitter, stochastic=True)],
                batch_size=4,
                shuffle=True,
                rngs=nnx.Rngs(0),
            ),
            "element spec: ",
        ),
    ],
    ids=["length", "seed", "shuffle", "stages", "element-spec"],
)
def test_restore_into_another_construction_names_the_mismatch(other, message):
    d = state_dict(build())
    target = other()
    before = int(target.position[...])
    with pytest.raises(ValueError, match=re.escape(message)):
        load_state_dict(d, target)
    assert int(target.position[...]) == before  # nothing was written


def test_restore_checks_the_number_and_structure_of_modules():
    d = state_dict(build(), nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="holds 2 modules"):
        load_state_dict(d, build())
    with pytest.raises(
        ValueError,
        match=re.escape("entry 1/bias has shape (3,), the module expects (5,)"),
    ):
        load_state_dict(d, build(), nnx.Linear(2, 5, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="missing"):
        load_state_dict(d, build(), nnx.Linear(2, 3, use_bias=False, rngs=nnx.Rngs(0)))


def test_restore_does_not_alias_the_checkpoint_dict():
    d = state_dict(build())
    target = build()
    load_state_dict(d, target)
    next(iter(target))
    assert int(d["0"]["position"]) == 0


def test_a_crash_mid_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    pipe = build()
    save(path, pipe)
    pipe.step()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(os, "replace", crash)  # the process dies before the rename
    with pytest.raises(KeyboardInterrupt):
        save(path, pipe)
    monkeypatch.undo()
    restored = build()
    restore(path, restored)
    assert int(restored.position[...]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


SAVER = textwrap.dedent(
    """
    import sys, json, numpy as np
    sys.path.insert(0, sys.argv[3])
    from checkpoint_worker import build, records
    from datarax.checkpoint import save, restore
    pipe = build(int(sys.argv[2]))
    if sys.argv[1] == "save":
        it = iter(pipe)
        for _ in range(5):
            next(it)
        save(sys.argv[4], pipe)
        nxt = [next(it) for _ in range(4)]
    else:
        restore(sys.argv[4], pipe)
        out = pipe.scan(lambda b: b, length=4)
        nxt = [{k: v[i] for k, v in out.items()} for i in range(4)]
    print(json.dumps({"label": records(nxt).tolist(), "u": records(nxt, "u").tolist()}))
    """
)


@pytest.mark.slow
def test_save_and_restore_across_two_processes(tmp_path):
    worker = tmp_path / "checkpoint_worker.py"
    worker.write_text(
        "import jax, numpy as np\nfrom flax import nnx\n"
        "from datarax import Pipeline\nfrom datarax.operators import ElementOperator\n"
        "from datarax.sources import MemorySource\n"
        + textwrap.dedent(
            """
            def jitter(record, key):
                return {"label": record["label"], "u": jax.random.uniform(key)}

            def build(batch_size):
                return Pipeline(
                    source=MemorySource({"label": np.arange(23, dtype=np.int32)}),
                    stages=[ElementOperator(jitter, stochastic=True)],
                    batch_size=batch_size, shuffle=True, num_epochs=None,
                    rngs=nnx.Rngs(0),
                )

            def records(batches, field="label"):
                return np.concatenate([np.ravel(np.asarray(b[field])) for b in batches])
            """
        )
    )
    ck = str(tmp_path / "ck.npz")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-c", SAVER, *args],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run("save", "6", str(tmp_path), ck)
    second = run("restore", "6", str(tmp_path), ck)
    assert first == second
