"""A pipeline and the model it feeds in one orbax CheckpointManager, across a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

TRAIN = textwrap.dedent(
    """
    import json, os, signal, sys
    import jax, numpy as np, optax
    import orbax.checkpoint as ocp
    from flax import nnx
    import datarax.checkpoint
    from datarax import Pipeline
    from datarax.operators import ElementOperator
    from datarax.sources import MemorySource

    folder, mode = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    data = {"x": x, "y": x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)}

    def noisy(record, key):
        return {**record, "x": record["x"] + 0.1 * jax.random.normal(key, (4,))}

    pipe = Pipeline(source=MemorySource(data), batch_size=8, shuffle=True,
                    stages=[ElementOperator(noisy, stochastic=True)],
                    num_epochs=None, rngs=nnx.Rngs(1))
    model = nnx.Linear(4, 1, rngs=nnx.Rngs(2))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    def train_step(model, optimizer, batch):
        def loss_fn(model):
            return ((model(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    manager = ocp.CheckpointManager(
        folder, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True)
    )
    rounds = range(4)
    if mode == "resume":
        restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            model=ocp.args.StandardRestore(nnx.state((model, optimizer))),
            data=datarax.checkpoint.restore_args(pipe)))
        nnx.update((model, optimizer), restored["model"])
        rounds = range(2, 4)
    losses = []
    for round in rounds:
        out = pipe.scan(train_step, length=5, modules=(model, optimizer))
        losses += np.asarray(out).tolist()
        if mode == "crash" and round == 1:
            manager.save(10, args=ocp.args.Composite(
                model=ocp.args.StandardSave(nnx.state((model, optimizer))),
                data=datarax.checkpoint.args(pipe)))
            pipe.scan(train_step, length=3, modules=(model, optimizer))  # moves on
            manager.wait_until_finished()
            print(json.dumps(losses), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps({"losses": losses, "position": int(pipe.position[...])}))
    """
)


def run(folder, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", TRAIN, str(folder), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_model_and_pipeline_saved_in_one_step_resume_bit_exactly_after_a_kill(
    tmp_path,
):
    straight = run(tmp_path / "straight", "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads(straight.stdout.strip().splitlines()[-1])

    crashed = run(tmp_path / "run", "crash")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    before = json.loads(crashed.stdout.strip().splitlines()[-1])
    assert before == expected["losses"][:10]
    assert (tmp_path / "run" / "10" / "data" / "datarax.npz").is_file()

    resumed = run(tmp_path / "run", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads(resumed.stdout.strip().splitlines()[-1])
    # The save was taken before the extra steps the crashed run made: training
    # goes on from the saved step, model and data alike, bit for bit.
    assert after["losses"] == expected["losses"][10:]
    assert after["position"] == expected["position"]
