"""DDSP: learn a synthesiser's controls from F0 and loudness that datarax extracts.

Differentiable Digital Signal Processing (Engel et al., ICLR 2020) on procedural
audio. A ``MemorySource`` of clips feeds datarax's audio operators ``F0`` (YIN)
and ``Loudness`` (A-weighted); a small Flax NNX decoder maps those frame-wise
features to the controls of a harmonic-plus-filtered-noise synthesiser, trained
with a multi-scale spectral loss against the input audio. Each ``Pipeline.scan``
call compiles a run of whole training steps (feature extraction, decoder,
synthesis, STFTs, loss, Adam update) into one XLA program. The baseline is the
same synthesiser driven by constant controls (the decoder's, averaged).

    python examples/differentiable/ddsp.py          # small, under half a minute
    python examples/differentiable/ddsp.py --full   # the guide's numbers

It prints ``name: value`` lines and writes ``ddsp.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from datarax import Pipeline
from datarax.operators import F0, Loudness, functional as F
from datarax.sources import MemorySource

SAMPLE_RATE = 16_000
NUM_SAMPLES = 4_096  # 0.256 s per clip
FRAME_SIZE = 512  # holds the longest searched period (60 Hz) twice
HOP_SIZE = 128  # 125 feature frames per second
NUM_FRAMES = F.num_frames(NUM_SAMPLES, FRAME_SIZE, HOP_SIZE)


@dataclasses.dataclass(frozen=True)
class Config:
    train_clips: int
    eval_clips: int
    batch_size: int
    calls: int  # Pipeline.scan calls: one point of the loss curve each
    steps_per_call: int
    fft_sizes: tuple[int, ...]
    learning_rate: float = 3e-3


SMALL = Config(64, 16, 8, 6, 25, (1024, 256, 64))
FULL = Config(256, 32, 16, 20, 50, (2048, 1024, 512, 256, 128, 64))


# --- data: an "instrument" played with vibrato, glides and swells ---------------


def make_clips(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``[count, samples]`` and their true F0 at each feature frame's centre."""
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    k = np.arange(1, 11)
    # The instrument: a fixed spectral tilt, odd harmonics a little stronger.
    timbre = k**-1.2 * np.where(k % 2 == 1, 1.0, 0.6)
    clips = np.empty((count, NUM_SAMPLES), np.float32)
    centres = np.arange(NUM_FRAMES) * HOP_SIZE + FRAME_SIZE // 2
    f0_true = np.empty((count, NUM_FRAMES), np.float32)
    for i in range(count):
        base = np.exp(rng.uniform(np.log(110.0), np.log(380.0)))
        glide = rng.uniform(-0.15, 0.15) * t / t[-1]  # up to +-15 % over the clip
        vibrato = rng.uniform(0.0, 0.03) * np.sin(
            2 * np.pi * rng.uniform(4.0, 7.0) * t + rng.uniform(0, 2 * np.pi)
        )
        f0 = base * (1 + glide + vibrato)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        partials = timbre * (f0[:, None] * k < SAMPLE_RATE / 2)
        tone = (partials * np.sin(phase[:, None] * k)).sum(-1)
        attack = np.minimum(t / rng.uniform(0.01, 0.06), 1.0)
        swell = 1 + rng.uniform(0.0, 0.5) * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        envelope = attack * np.exp(-t * rng.uniform(0.0, 6.0)) * swell
        audio = envelope * (tone + 0.02 * rng.standard_normal(NUM_SAMPLES))
        clips[i] = 0.5 * audio / np.abs(audio).max() * rng.uniform(0.3, 1.0)
        f0_true[i] = f0[centres]
    return clips, f0_true


def make_pipeline(
    clips: np.ndarray, batch_size: int, seed: int, *, shuffle: bool = True
) -> Pipeline:
    # The features are pipeline stages: YIN and A-weighted loudness run inside
    # every compiled training step, next to the audio they describe.
    frame = {"frame_size": FRAME_SIZE, "hop_size": HOP_SIZE}
    return Pipeline(
        source=MemorySource({"audio": clips}),
        stages=[
            F0(SAMPLE_RATE, f0_min=60.0, f0_max=1000.0, **frame),
            Loudness(SAMPLE_RATE, **frame),
        ],
        batch_size=batch_size,
        shuffle=shuffle,
        num_epochs=None,
        rngs=nnx.Rngs(seed),
    )


# --- the decoder: (f0, loudness) frames -> synthesiser controls ----------------


def exp_sigmoid(x: jax.Array) -> jax.Array:
    """DDSP's positive squashing: 2 * sigmoid(x) ** ln(10), from 1e-7 to 2."""
    return 2.0 * jax.nn.sigmoid(x) ** math.log(10.0) + 1e-7


class Decoder(nnx.Module):
    """Per-frame MLP with +-2 frames of context (a width-5 convolution)."""

    def __init__(self, *, harmonics: int, bands: int, width: int, rngs: nnx.Rngs):
        self.harmonics, self.bands = harmonics, bands
        self.context = nnx.Conv(2, width, kernel_size=(5,), rngs=rngs)
        self.hidden = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, 1 + harmonics + bands, rngs=rngs)

    def __call__(self, f0: jax.Array, loudness: jax.Array) -> dict[str, jax.Array]:
        # Scale both features to about [-1, 1]: octaves around 220 Hz, and dB
        # clipped at -80 (silence) around -40.
        pitch = jnp.log2(f0 / 220.0)
        level = (jnp.clip(loudness, -80.0, 0.0) + 40.0) / 40.0
        x = jnp.stack([pitch, level], axis=-1)
        x = nnx.relu(self.hidden(nnx.relu(self.context(x))))
        raw = self.out(x)
        h = self.harmonics
        return {
            "amplitude": exp_sigmoid(raw[..., 0]),
            "distribution": jax.nn.softmax(raw[..., 1 : 1 + h], axis=-1),
            # Start the noise quiet: a loud noise floor is a poor local minimum.
            "noise": exp_sigmoid(raw[..., 1 + h :] - 4.0),
        }


# --- the synthesiser: harmonic oscillator bank + filtered noise ----------------


def interpolate(controls: jax.Array, positions: np.ndarray) -> jax.Array:
    """Frame-rate ``controls [batch, frames, ...]`` at sample ``positions``."""
    # Frame i is centred on sample i * HOP_SIZE + FRAME_SIZE / 2; the index
    # arithmetic is static NumPy, so this is two gathers and a blend.
    where = np.clip((positions - FRAME_SIZE / 2) / HOP_SIZE, 0, NUM_FRAMES - 1)
    low = np.floor(where).astype(np.int32)
    high = np.minimum(low + 1, NUM_FRAMES - 1)
    w = (where - low).astype(np.float32).reshape(-1, *[1] * (controls.ndim - 2))
    return controls[:, low] * (1 - w) + controls[:, high] * w


def harmonic(f0: jax.Array, amplitude: jax.Array, dist: jax.Array) -> jax.Array:
    """Sum of sinusoids at multiples of ``f0``; harmonics above Nyquist muted."""
    k = jnp.arange(1, dist.shape[-1] + 1, dtype=jnp.float32)
    audible = (f0[..., None] * k < SAMPLE_RATE / 2).astype(jnp.float32)
    dist = dist * audible
    dist = dist / jnp.maximum(dist.sum(-1, keepdims=True), 1e-7)
    positions = np.arange(NUM_SAMPLES)
    partials = interpolate(amplitude[..., None] * dist, positions)  # [B, S, H]
    phase = 2 * jnp.pi * jnp.cumsum(interpolate(f0, positions), axis=-1)
    phase = phase / SAMPLE_RATE
    return (partials * jnp.sin(phase[..., None] * k)).sum(-1)


def filtered_noise(magnitudes: jax.Array) -> jax.Array:
    """White noise shaped per block of ``HOP_SIZE`` samples by band magnitudes."""
    batch, blocks = magnitudes.shape[0], NUM_SAMPLES // HOP_SIZE
    centres = np.arange(blocks) * HOP_SIZE + HOP_SIZE / 2
    per_block = interpolate(magnitudes, centres)  # [B, blocks, bands]
    # Bands are spread linearly over the rfft bins of one block.
    bins = HOP_SIZE // 2 + 1
    band_of_bin = np.linspace(0, magnitudes.shape[-1] - 1, bins)
    low = np.floor(band_of_bin).astype(np.int32)
    high = np.minimum(low + 1, magnitudes.shape[-1] - 1)
    w = (band_of_bin - low).astype(np.float32)
    response = per_block[..., low] * (1 - w) + per_block[..., high] * w
    # A fixed noise draw (same in every step): the spectral loss ignores phase.
    # Drawn by NumPy at trace time, a constant of the program: threefry would
    # add two seconds of XLA:CPU compile for nothing.
    white = np.random.default_rng(0).uniform(-1, 1, (batch, blocks, HOP_SIZE))
    white = white.astype(np.float32)
    shaped = jnp.fft.irfft(jnp.fft.rfft(white) * response, n=HOP_SIZE)
    return shaped.reshape(batch, NUM_SAMPLES)


def synthesize(controls: dict[str, jax.Array], f0: jax.Array) -> jax.Array:
    tone = harmonic(f0, controls["amplitude"], controls["distribution"])
    return tone + filtered_noise(controls["noise"])


# --- the multi-scale spectral loss ----------------------------------------------


def magnitudes(audio: jax.Array, fft_size: int) -> jax.Array:
    window = np.hanning(fft_size).astype(np.float32)
    return jnp.abs(jnp.fft.rfft(F.frames(audio, fft_size, fft_size // 4) * window))


def spectral_loss(
    audio: jax.Array, target: jax.Array, fft_sizes: tuple[int, ...]
) -> jax.Array:
    """Sum over FFT sizes of L1(|STFT|) + L1(log |STFT|), as in DDSP."""
    total = jnp.zeros((), jnp.float32)
    for size in fft_sizes:
        a, b = magnitudes(audio, size), magnitudes(target, size)
        total += jnp.abs(a - b).mean()
        total += jnp.abs(jnp.log(a + 1e-5) - jnp.log(b + 1e-5)).mean()
    return total


def make_steps(fft_sizes: tuple[int, ...]):
    """The train step that ``Pipeline.scan`` runs, and a jitted evaluation."""

    def batch_loss(model: Decoder, batch: dict) -> jax.Array:
        audio = synthesize(model(batch["f0"], batch["loudness"]), batch["f0"])
        return spectral_loss(audio, batch["audio"], fft_sizes)

    def train_step(model: Decoder, optimizer: nnx.Optimizer, batch: dict):
        loss, grads = nnx.value_and_grad(batch_loss)(model, batch)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def evaluate(model: Decoder, batch: dict):
        """``(loss, constant-controls loss, resynthesised audio)`` on a batch."""
        controls = model(batch["f0"], batch["loudness"])
        # The baseline: the same controls averaged over frames and clips, so
        # they follow neither loudness nor pitch (the oscillators still do).
        constant = {
            name: jnp.broadcast_to(value.mean(axis=(0, 1)), value.shape)
            for name, value in controls.items()
        }
        audio = synthesize(controls, batch["f0"])
        flat = synthesize(constant, batch["f0"])
        target = batch["audio"]
        loss = spectral_loss(audio, target, fft_sizes)
        return loss, spectral_loss(flat, target, fft_sizes), audio

    return train_step, evaluate


# --- the run ---------------------------------------------------------------------


def train(model: Decoder, pipe: Pipeline, train_step, config: Config) -> list[float]:
    """Adam through ``config.calls`` scan calls; the mean loss of each call."""
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
    curve = []
    for _ in range(config.calls):
        # One compiled program per call: the same one every time (same step
        # function, length and graph structure), so only the first compiles.
        losses = pipe.scan(
            train_step, length=config.steps_per_call, modules=(model, optimizer)
        )
        curve.append(float(losses.mean()))
    return curve


def cents(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(1200 * np.log2(estimate / truth))


def spectrogram_db(audio: np.ndarray, fft_size: int = 512) -> np.ndarray:
    """``[bins, frames]`` log magnitudes, by NumPy: nothing more to compile."""
    window = np.hanning(fft_size)
    hop = fft_size // 4
    starts = np.arange(0, len(audio) - fft_size + 1, hop)
    spec = np.abs(np.fft.rfft(audio[starts[:, None] + np.arange(fft_size)] * window))
    return 20 * np.log10(spec.T + 1e-5)


def plot(
    path: Path,
    target,
    resynth,
    curve: list[float],
    steps: int,
    reference: dict[str, float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    spectra = [spectrogram_db(np.asarray(a, np.float64)) for a in (target, resynth)]
    top = max(s.max() for s in spectra)
    extent = (0, NUM_SAMPLES / SAMPLE_RATE, 0, SAMPLE_RATE / 2000)
    for ax, db, title in zip(
        axes[:2], spectra, ["target", "resynthesised"], strict=True
    ):
        ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            extent=extent,
            vmin=top - 80,
            vmax=top,
            cmap="magma",
        )
        ax.set(title=f"{title} (held out)", xlabel="time (s)", ylabel="kHz")
    axes[2].plot(np.arange(1, len(curve) + 1) * steps, curve, label="decoder (train)")
    for (name, value), style in zip(reference.items(), [":", "--"], strict=True):
        axes[2].axhline(value, color="gray", linestyle=style, label=f"{name} (eval)")
    axes[2].set(title="multi-scale spectral loss", xlabel="step", yscale="log")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the guide's longer run")
    parser.add_argument("--out", type=Path, default=Path("docs/guides/figures"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = FULL if args.full else SMALL

    rng = np.random.default_rng(args.seed)
    clips, f0_true = make_clips(config.train_clips + config.eval_clips, rng)
    train_clips, eval_clips = clips[: config.train_clips], clips[config.train_clips :]
    print(f"clips: {config.train_clips} train / {config.eval_clips} eval")

    # The held-out clips go through the same stages, as one batch.
    eval_batch = make_pipeline(
        eval_clips, config.eval_clips, args.seed, shuffle=False
    ).step()
    error = cents(np.asarray(eval_batch["f0"]), f0_true[config.train_clips :])
    print(f"f0_median_error_cents: {np.median(error):.2f}")
    print(f"f0_gross_error_rate: {(error > 50).mean():.4f}")

    train_step, evaluate = make_steps(config.fft_sizes)
    model = Decoder(harmonics=16, bands=16, width=64, rngs=nnx.Rngs(args.seed))
    initial = float(evaluate(model, eval_batch)[0])
    pipe = make_pipeline(train_clips, config.batch_size, args.seed)
    curve = train(model, pipe, train_step, config)
    final, baseline, resynth = evaluate(model, eval_batch)
    print(f"loss_initial: {initial:.4f}")
    print(f"loss_final: {float(final):.4f}")
    print(f"loss_baseline: {float(baseline):.4f}")
    print(f"loss_ratio: {float(final) / initial:.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ddsp.png"
    plot(
        path,
        eval_batch["audio"][0],
        resynth[0],
        curve,
        config.steps_per_call,
        reference={"untrained": initial, "constant controls": float(baseline)},
    )
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
