"""Pure functions on one mono signal ``[samples]``: framing, loudness, F0, resampling.

Traceable and differentiable in the signal; sizes and rates are static. None
needs model weights: loudness is an A-weighted power spectrum (IEC 61672), F0 the
YIN estimator (de Cheveigné and Kawahara 2002), resampling band-limited by FFT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def frames(signal: jax.Array, frame_size: int, hop_size: int) -> jax.Array:
    """Overlapping frames ``[..., num_frames, frame_size]``, ``hop_size`` apart.

    Frames the last axis, so a batch ``[..., samples]`` frames each signal.
    ``num_frames = 1 + (samples - frame_size) // hop_size``
    (:func:`num_frames`); a tail shorter than a hop is left out.

    Raises:
        ValueError: for a signal shorter than one frame.
    """
    samples = signal.shape[-1]
    if samples < frame_size:
        raise ValueError(
            f"a signal of {samples} samples is shorter than one frame of "
            f"{frame_size}; use a smaller frame_size or longer records."
        )
    count = num_frames(samples, frame_size, hop_size)
    index = np.arange(count)[:, None] * hop_size + np.arange(frame_size)[None, :]
    return signal[..., index]


def num_frames(samples: int, frame_size: int, hop_size: int) -> int:
    """How many frames :func:`frames` (and ``F0``, ``Loudness``) make of a signal.

    Examples:
        >>> num_frames(16_000, 1024, 256)
        59
    """
    return 1 + (samples - frame_size) // hop_size


def a_weighting_db(frequencies: np.ndarray) -> np.ndarray:
    """The A-weighting curve (IEC 61672-1) in dB at ``frequencies`` (Hz)."""
    f2 = np.square(np.asarray(frequencies, np.float64))
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
    )
    with np.errstate(divide="ignore"):
        return 20 * np.log10(ra) + 2.0


def loudness(
    signal: jax.Array, sample_rate: int, frame_size: int = 1024, hop_size: int = 256
) -> jax.Array:
    """A-weighted loudness per frame, in dB: ``[num_frames]``.

    ``10 * log10`` of each Hann-windowed frame's A-weighted mean square, scaled
    so that an unweighted spectrum gives the frame's mean square: a full-scale
    1 kHz sine (A-weight 0 dB) reads -3 dB, its mean square being 1/2. Silence
    is floored at -120 dB.
    """
    window = np.hanning(frame_size).astype(np.float32)
    spectrum = jnp.fft.rfft(frames(signal, frame_size, hop_size) * window, axis=-1)
    # One-sided Parseval: sum_k |X_k|^2 * 2 / (n * sum(w^2)) is the mean square.
    scale = 2.0 / (frame_size * float(np.square(window).sum()))
    power = jnp.square(jnp.abs(spectrum)) * scale
    freqs = np.fft.rfftfreq(frame_size, 1.0 / sample_rate)
    weights = np.power(10.0, a_weighting_db(freqs) / 10.0).astype(np.float32)
    weighted = (power * weights).sum(axis=-1)
    return 10 * jnp.log10(jnp.maximum(weighted, 1e-12))


def f0_yin(
    signal: jax.Array,
    sample_rate: int,
    frame_size: int = 1024,
    hop_size: int = 256,
    f0_min: float = 50.0,
    f0_max: float = 1000.0,
    threshold: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """The YIN fundamental frequency per frame: ``(f0 [num_frames], confidence)``.

    For each frame, the cumulative-mean-normalised difference function over lags
    ``sample_rate / f0_max .. sample_rate / f0_min``; the first lag below
    ``threshold`` (else the lowest), refined by parabolic interpolation.
    Confidence is ``1 -`` the function's value there (near 1 for a clean tone).
    """
    tau_min = max(1, int(sample_rate // f0_max))
    tau_max = int(np.ceil(sample_rate / f0_min))
    if tau_max + 1 >= frame_size:
        raise ValueError(
            f"f0_min={f0_min} Hz needs lags up to {tau_max} samples, more than a "
            f"frame of {frame_size} holds; raise f0_min or frame_size."
        )
    x = frames(signal, frame_size, hop_size).astype(jnp.float32)
    width = frame_size - tau_max  # the window compared at every lag
    head = x[:, :width]
    # d(tau) = sum_{j < width} (x_j - x_{j+tau})^2 = energy of the head + energy
    # of the lagged window - 2 * their correlation (by FFT: no lag x sample array).
    n = 1 << int(np.ceil(np.log2(frame_size + width)))
    spectrum = jnp.conj(jnp.fft.rfft(head, n)) * jnp.fft.rfft(x, n)
    correlation = jnp.fft.irfft(spectrum, n)[:, : tau_max + 1]
    energy = jnp.concatenate(
        [jnp.zeros_like(x[:, :1]), jnp.cumsum(jnp.square(x), axis=-1)], axis=-1
    )
    lagged = energy[:, width : width + tau_max + 1] - energy[:, : tau_max + 1]
    head_energy = jnp.square(head).sum(-1, keepdims=True)
    diff = jnp.maximum(head_energy + lagged - 2 * correlation, 0.0)
    lags = jnp.arange(1, tau_max + 1, dtype=jnp.float32)
    cumulative = jnp.cumsum(diff[:, 1:], axis=-1)
    norm = diff[:, 1:] * lags / jnp.maximum(cumulative, 1e-12)
    norm = jnp.concatenate([jnp.ones_like(norm[:, :1]), norm], axis=-1)
    search = norm[:, tau_min:]
    below = search < threshold
    # YIN takes the first dip below the threshold, then walks to its minimum.
    first = jnp.argmax(below, axis=-1)
    valley = jax.vmap(_walk_down)(search, first)
    tau = jnp.where(below.any(-1), valley, jnp.argmin(search, axis=-1))
    offset = jax.vmap(_parabola)(search, tau)
    best = jnp.take_along_axis(search, tau[:, None], -1)[:, 0]
    f0 = sample_rate / (tau + tau_min + offset)
    return f0, jnp.clip(1 - best, 0.0, 1.0)


def _walk_down(curve: jax.Array, start: jax.Array) -> jax.Array:
    """The lag of the local minimum reached walking right from ``start``."""
    rising = jnp.concatenate([curve[1:] > curve[:-1], jnp.ones(1, bool)])
    after = jnp.arange(curve.shape[0]) >= start
    return jnp.argmax(rising & after)


def _parabola(curve: jax.Array, at: jax.Array) -> jax.Array:
    """Sub-sample offset of the minimum of the parabola through three points."""
    last = curve.shape[0] - 1
    left = curve[jnp.maximum(at - 1, 0)]
    mid = curve[at]
    right = curve[jnp.minimum(at + 1, last)]
    denominator = left - 2 * mid + right
    offset = 0.5 * (left - right) / jnp.where(denominator == 0, 1.0, denominator)
    inside = (at > 0) & (at < last) & (denominator > 0)
    return jnp.where(inside, jnp.clip(offset, -0.5, 0.5), 0.0)


def resample(signal: jax.Array, sample_rate: int, target_rate: int) -> jax.Array:
    """``signal`` at ``target_rate``: band-limited resampling by FFT.

    ``round(samples * target_rate / sample_rate)`` samples; the spectrum is cut
    (or zero-padded) at the lower Nyquist frequency. Exact for band-limited
    signals periodic in the record.
    """
    samples = signal.shape[-1]
    count = int(round(samples * target_rate / sample_rate))
    spectrum = jnp.fft.rfft(signal.astype(jnp.float32), axis=-1)
    spectrum = spectrum[..., : min(spectrum.shape[-1], count // 2 + 1)]
    return jnp.fft.irfft(spectrum, n=count, axis=-1) * (count / samples)
