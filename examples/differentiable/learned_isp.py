"""A learned camera ISP: the image pipeline is tuned for the classifier, not for looks.

A simulated camera turns scikit-learn's bundled digits, tinted with a random
colour, into low-light RAW frames: an RGGB Bayer mosaic with the sensor's
uncorrected channel responses and fresh shot + read noise every epoch. An
image-signal-processing (ISP) pipeline, built with ``Pipeline.from_dag`` from
five ``nnx.Module`` stages with ``nnx.Param`` s (demosaic, white balance,
denoise, gamma, tone curve), develops them into RGB images for a small MLP
classifier.

Two runs read the same RAW stream from the same classifier initialisation:

* fixed ISP: the ISP keeps its initial, conventional settings (bilinear
  demosaic, no white balance, light blur, gamma 1/2.2, a gentle S-curve) and
  only the classifier trains;
* learned ISP: the ISP's parameters train jointly with the classifier, so the
  ISP is tuned for the task, not for looks (the idea of "Dirty Pixels",
  Diamond et al. 2021, and of hardware-in-the-loop ISP tuning, Tseng et al.
  2019).

The pipeline itself is one of the modules of ``pipe.scan``: the train step
develops its batch with ``pipe.step()`` inside ``nnx.value_and_grad``, so the
loss's gradient reaches every stage's parameters. Each training chunk (data
loading, ISP, classifier and both optimisers) is one compiled XLA program, the
same one for both runs and every chunk (the ISP's learning rate, 0 for the fixed
run, is optimiser state). The run prints ``name: value`` lines and writes a
figure (scene / RAW / fixed ISP / learned ISP, accuracy curves).

    python examples/differentiable/learned_isp.py            # about 20 s
    python examples/differentiable/learned_isp.py --full     # a few minutes
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

from datarax import Pipeline
from datarax.operators import RecordOperator
from datarax.sources import MemorySource

SIZE = 16  # digits are upsampled from 8x8 to SIZE x SIZE
# Silicon is most sensitive in green: an uncorrected RAW frame is green-cast.
SENSOR_RESPONSE = (0.5, 1.0, 0.35)  # R, G, B
EXPOSURE = 0.3  # low light: the brightest green pixel collects 30% of full well
SHOT_NOISE = 0.01  # variance per unit of signal (photon noise)
READ_NOISE = 0.03  # standard deviation of the read-out noise
TEST_SEED = 1234  # the test frames get the same noise in every run and evaluation
# Each transform is made once: nnx.jit keys its cache on the optimizers' static
# parts, so a fresh optax.adam() per run would compile the same program twice.
# The ISP's learning rate is state (inject_hyperparams): 0 for the fixed ISP.
MODEL_TX = optax.adam(3e-3)
ISP_TX = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
EDGES = {
    "sensor": [],
    "demosaic": ["sensor"],
    "white_balance": ["demosaic"],
    "denoise": ["white_balance"],
    "gamma": ["denoise"],
    "tone": ["gamma"],
}


def bayer_mask(size: int) -> np.ndarray:
    """One-hot colour of each photosite of an RGGB mosaic, ``[size, size, 3]``."""
    mask = np.zeros((size, size, 3), np.float32)
    mask[0::2, 0::2, 0] = 1.0  # R
    mask[0::2, 1::2, 1] = 1.0  # G
    mask[1::2, 0::2, 1] = 1.0  # G
    mask[1::2, 1::2, 2] = 1.0  # B
    return mask


def make_scenes(seed: int) -> tuple[dict, dict]:
    """Linear RGB scenes: each digit drawn in a random colour on a dim background."""
    digits = load_digits()  # 1,797 images of 8x8 pixels, shipped with scikit-learn
    strokes = jax.image.resize(
        digits.images / 16.0, (len(digits.images), SIZE, SIZE), "linear"
    )
    rng = np.random.default_rng(seed)
    # Random tints so that colour carries no label information, and white balance
    # is one global correction the ISP can learn, not a per-class cue.
    ink = rng.uniform(0.3, 1.0, (len(strokes), 1, 1, 3))
    ink /= ink.max(axis=-1, keepdims=True)
    scenes = 0.05 + 0.9 * np.asarray(strokes)[..., None] * ink
    labels = digits.target.astype(np.int32)
    order = rng.permutation(len(labels))
    train, test = order[:1500], order[1500:]
    scenes = scenes.astype(np.float32)
    return (
        {"scene": scenes[train], "label": labels[train]},
        {"scene": scenes[test], "label": labels[test]},
    )


class Sensor(RecordOperator):
    """The camera: mosaic, channel response, exposure, shot + read noise (no Params).

    Stochastic: the noise is drawn from the record's own key, so every epoch
    sees a fresh noise draw of every scene.
    """

    def __init__(self):
        super().__init__(stochastic=True)
        self.mask = nnx.Variable(jnp.asarray(bayer_mask(SIZE)))
        self.response = nnx.Variable(jnp.asarray(SENSOR_RESPONSE) * EXPOSURE)

    def apply(self, record: dict, key: jax.Array | None) -> dict:
        signal = (record["scene"] * self.response[...] * self.mask[...]).sum(-1)
        std = jnp.sqrt(SHOT_NOISE * signal + READ_NOISE**2)
        raw = signal + std * jax.random.normal(key, signal.shape)
        # The clean scene rides along for the figure; the classifier reads "image".
        return {**record, "raw": jnp.clip(raw, 0.0, 1.0)}


def depthwise_conv(images: jax.Array, kernels: jax.Array) -> jax.Array:
    """``images [n, h, w, c]`` each channel convolved with its ``kernels [3, 3, c]``."""
    channels = images.shape[-1]
    return jax.lax.conv_general_dilated(
        images,
        kernels.reshape(3, 3, 1, channels),
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )


class Demosaic(nnx.Module):
    """Interpolates the mosaic to RGB with one learnable 3x3 kernel per channel.

    Initialised to bilinear demosaicing: the sparse R, G and B planes are
    convolved with the classic bilinear kernels.
    """

    def __init__(self):
        green = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
        red_blue = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
        self.kernels = nnx.Param(jnp.stack([red_blue, green, red_blue], axis=-1))
        self.mask = nnx.Variable(jnp.asarray(bayer_mask(SIZE)))

    def __call__(self, batch: dict) -> dict:
        planes = batch["raw"][..., None] * self.mask[...]
        return {**batch, "image": depthwise_conv(planes, self.kernels[...])}


class WhiteBalance(nnx.Module):
    """Per-channel gains; initialised to 1 (the RAW's colour cast is left in)."""

    def __init__(self):
        self.gains = nnx.Param(jnp.ones(3, jnp.float32))

    def __call__(self, batch: dict) -> dict:
        return {**batch, "image": batch["image"] * self.gains[...]}


class Denoise(nnx.Module):
    """A learnable 3x3 blur, shared by the channels; weights are a softmax (sum 1).

    Initialised to a light blur: 60% of the weight on the centre pixel.
    """

    def __init__(self):
        logits = np.zeros((3, 3), np.float32)
        logits[1, 1] = np.log(0.6 / 0.4 * 8)  # centre 0.6, each neighbour 0.05
        self.logits = nnx.Param(jnp.asarray(logits))

    def kernel(self) -> jax.Array:
        return jax.nn.softmax(self.logits[...].ravel()).reshape(3, 3)

    def __call__(self, batch: dict) -> dict:
        kernels = jnp.repeat(self.kernel()[..., None], 3, axis=-1)
        return {**batch, "image": depthwise_conv(batch["image"], kernels)}


class Gamma(nnx.Module):
    """``x ** exponent`` on the clipped image; initialised to the display's 1/2.2."""

    def __init__(self):
        self.exponent = nnx.Param(jnp.asarray(1 / 2.2, jnp.float32))

    def __call__(self, batch: dict) -> dict:
        # Clipped away from 0: the derivative of x ** (1/2.2) is infinite there.
        image = jnp.clip(batch["image"], 1e-3, 1.0) ** self.exponent[...]
        return {**batch, "image": image}


class Tone(nnx.Module):
    """A sigmoid S-curve through (0, 0) and (1, 1): learnable contrast and midpoint.

    Monotone for any positive contrast (kept positive by a softplus); starts
    as a gentle S-curve, contrast 4 around mid-grey.
    """

    def __init__(self):
        self.contrast = nnx.Param(jnp.asarray(np.log(np.expm1(4.0)), jnp.float32))
        self.midpoint = nnx.Param(jnp.asarray(0.5, jnp.float32))

    def curve(self, x: jax.Array) -> jax.Array:
        contrast = jax.nn.softplus(self.contrast[...])
        ends = jnp.array([0.0, 1.0])
        low, high = jax.nn.sigmoid(contrast * (ends - self.midpoint[...]))
        s = jax.nn.sigmoid(contrast * (x - self.midpoint[...]))
        return (s - low) / (high - low)

    def __call__(self, batch: dict) -> dict:
        return {**batch, "image": self.curve(batch["image"])}


def make_isp() -> dict[str, nnx.Module]:
    """The DAG's nodes, freshly initialised (the conventional ISP)."""
    return {
        "sensor": Sensor(),
        "demosaic": Demosaic(),
        "white_balance": WhiteBalance(),
        "denoise": Denoise(),
        "gamma": Gamma(),
        "tone": Tone(),
    }


def make_pipeline(data: dict, nodes: dict, batch_size: int, seed: int) -> Pipeline:
    # An endless shuffled stream: scan runs on across epochs, and the sensor's
    # noise is drawn anew in each epoch (its key folds in the epoch).
    return Pipeline.from_dag(
        source=MemorySource(data),
        nodes=nodes,
        edges=EDGES,
        sink="tone",
        batch_size=batch_size,
        shuffle=True,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


class Classifier(nnx.Module):
    """A small MLP on the developed RGB image."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(SIZE * SIZE * 3, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.reshape(images.shape[0], -1)
        return self.out(nnx.relu(self.hidden(x)))


def cross_entropy(model: Classifier, batch: dict) -> jax.Array:
    logits = model(batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]
    ).mean()


def joint_step(
    model: Classifier, opt: nnx.Optimizer, pipe: Pipeline, pipe_opt: nnx.Optimizer
) -> jax.Array:
    """Classifier and ISP learn together: the batch is developed inside the loss."""

    def loss_fn(model: Classifier, pipe: Pipeline) -> jax.Array:
        return cross_entropy(model, pipe.step())

    loss, (g_model, g_pipe) = nnx.value_and_grad(loss_fn, argnums=(0, 1))(model, pipe)
    opt.update(model, g_model)
    pipe_opt.update(pipe, g_pipe)
    return loss


def develop_test(nodes: dict, test: dict) -> dict:
    """The test set through ``nodes``, with the same noise draw every time.

    A fresh pipeline of the same construction and seed starts at position 0, so
    each evaluation (and each run) sees the same noisy test frames; it compiles
    nothing new, and it shares the training pipeline's stages (their Params).
    The stages pass every field on, so the batch holds the ``raw`` frames too.
    """
    pipe = Pipeline.from_dag(
        source=MemorySource(test),
        nodes=nodes,
        edges=EDGES,
        sink="tone",
        batch_size=len(test["label"]),
        rngs=nnx.Rngs(TEST_SEED),
    )
    return next(iter(pipe))


@nnx.jit
def accuracy(model: Classifier, batch: dict) -> jax.Array:
    return (model(batch["image"]).argmax(-1) == batch["label"]).mean()


def train(data: dict, test: dict, *, isp_lr: float, args: argparse.Namespace):
    """Trains the classifier, and the ISP unless ``isp_lr`` is 0.

    Both runs execute the same compiled program: the ISP's learning rate is an
    input (``optax.inject_hyperparams``), and at 0 Adam leaves the ISP exactly
    at its initialisation. Returns the ISP nodes and the test accuracy after
    each chunk.
    """
    nodes = make_isp()
    pipe = make_pipeline(data, nodes, args.batch_size, args.seed)
    model = Classifier(rngs=nnx.Rngs(args.seed))
    opt = nnx.Optimizer(model, MODEL_TX, wrt=nnx.Param)
    # Only the stages hold nnx.Params: the source's arrays are data, not weights.
    pipe_opt = nnx.Optimizer(pipe, ISP_TX, wrt=nnx.Param)
    pipe_opt.opt_state.hyperparams["learning_rate"].set_value(
        jnp.asarray(isp_lr, jnp.float32)
    )
    length = args.steps // args.chunks
    curve = []
    for _ in range(args.chunks):  # one compiled program, reused for every chunk
        # The pipeline is among the modules: scan passes no batch, and
        # joint_step develops its own with pipe.step() inside the gradient.
        pipe.scan(joint_step, length=length, modules=(model, opt, pipe, pipe_opt))
        curve.append(float(accuracy(model, develop_test(nodes, test))))
    return nodes, curve


def save_figure(path: Path, test: dict, fixed: dict, learned: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = 4
    fig = plt.figure(figsize=(8.4, 3.4), dpi=90)
    grid = fig.add_gridspec(
        shown, 6, width_ratios=[1, 1, 1, 1, 0.5, 4.5], wspace=0.08, hspace=0.08
    )
    # The mosaic colour-coded by photosite: what the sensor recorded.
    raw = test["raw"][:shown, ..., None] * bayer_mask(SIZE)
    columns = [
        ("scene", test["scene"]),
        ("RAW (x3)", 3 * raw),
        ("fixed ISP", fixed["images"]),
        ("learned ISP", learned["images"]),
    ]
    for col, (title, images) in enumerate(columns):
        for row in range(shown):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(np.clip(np.asarray(images[row]), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    ax = fig.add_subplot(grid[:, 5])
    for name, run in (("fixed ISP", fixed), ("learned ISP", learned)):
        ax.plot(run["steps"], run["curve"], marker="o", ms=3, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.01, right=0.98, top=0.92, bottom=0.13)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(run: dict) -> dict:
    """The learned ISP's parameters, as ``name: value`` pairs."""
    nodes = run["nodes"]
    initial = make_isp()
    gains = nodes["white_balance"].gains[...]
    kernel = nodes["demosaic"].kernels[...] - initial["demosaic"].kernels[...]
    return {
        "wb_gain_r": float(gains[0]),
        "wb_gain_g": float(gains[1]),
        "wb_gain_b": float(gains[2]),
        "gamma": float(nodes["gamma"].exponent[...]),
        "tone_contrast": float(jax.nn.softplus(nodes["tone"].contrast[...])),
        "tone_midpoint": float(nodes["tone"].midpoint[...]),
        "denoise_centre": float(nodes["denoise"].kernel()[1, 1]),
        "demosaic_change": float(jnp.abs(kernel).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="a longer run")
    parser.add_argument("--out", type=Path, default=Path("docs/guides/figures"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.steps, args.chunks = (4000, 20) if args.full else (200, 2)
    args.batch_size, args.isp_lr = 32, 1e-2

    train_data, test = make_scenes(args.seed)
    start = time.perf_counter()
    runs = {}
    for name, isp_lr in (("fixed", 0.0), ("learned", args.isp_lr)):
        nodes, curve = train(train_data, test, isp_lr=isp_lr, args=args)
        steps = [(i + 1) * args.steps // args.chunks for i in range(args.chunks)]
        developed = develop_test(nodes, test)  # the same scenes and RAW in both
        images = np.asarray(developed["image"])
        runs[name] = {"nodes": nodes, "curve": curve, "steps": steps, "images": images}
    save_figure(args.out / "learned_isp.png", developed, runs["fixed"], runs["learned"])
    print(f"steps: {args.steps}")
    print(f"fixed_isp_accuracy: {runs['fixed']['curve'][-1]:.4f}")
    print(f"learned_isp_accuracy: {runs['learned']['curve'][-1]:.4f}")
    for name, run in runs.items():  # after each chunk, for the guide's table
        print(f"{name}_isp_curve: " + " ".join(f"{a:.3f}" for a in run["curve"]))
    for name, value in report(runs["learned"]).items():
        print(f"{name}: {value:.4f}")
    print(f"seconds: {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
