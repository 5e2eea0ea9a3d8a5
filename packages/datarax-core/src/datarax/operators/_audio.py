"""Audio operators: A-weighted loudness, F0 (YIN) and resampling of a mono field."""

from __future__ import annotations

import jax

from datarax.core._source import Batch
from datarax.operators import _signal as S
from datarax.operators._record import RecordOperator, check_size, field_of


def _check_signal(who: str, field: str, record: Batch) -> jax.Array:
    signal = field_of(record, field, who)
    if signal.ndim != 1:
        raise ValueError(
            f"{who} works on mono signals [samples], but field {field!r} holds "
            f"records of shape {tuple(signal.shape)}; pick one channel "
            "(audio[..., 0]) or average them first."
        )
    return signal


class Loudness(RecordOperator):
    """Adds the A-weighted loudness per frame of a signal, in dB.

    Deterministic. The new field holds ``[num_frames]`` values,
    ``num_frames = 1 + (samples - frame_size) // hop_size``.

    Args:
        sample_rate: samples per second of the signal.
        frame_size: samples per frame.
        hop_size: samples between frame starts.
        field: the signal field ``[samples]``.
        output: the name of the new field.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        frame_size: int = 1024,
        hop_size: int = 256,
        field: str = "audio",
        output: str = "loudness",
    ):
        super().__init__(stochastic=False)
        name = type(self).__name__
        self.sample_rate = check_size(name, "sample_rate", sample_rate)
        self.frame_size = check_size(name, "frame_size", frame_size)
        self.hop_size = check_size(name, "hop_size", hop_size)
        self.field, self.output = field, output

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Adds the record's loudness curve."""
        signal = _check_signal(type(self).__name__, self.field, record)
        curve = S.loudness(signal, self.sample_rate, self.frame_size, self.hop_size)
        return {**record, self.output: curve}


class F0(RecordOperator):
    """Adds the fundamental frequency (Hz) and its confidence per frame (YIN).

    Deterministic and weight-free (de Cheveigné and Kawahara's YIN). Adds
    ``output`` (Hz) and ``output + "_confidence"`` (0 to 1), ``[num_frames]``
    each.

    Args:
        sample_rate: samples per second of the signal.
        frame_size: samples per frame (must hold the longest period twice).
        hop_size: samples between frame starts.
        f0_min: the lowest frequency searched, in Hz.
        f0_max: the highest frequency searched, in Hz.
        threshold: YIN's threshold on the normalised difference.
        field: the signal field ``[samples]``.
        output: the name of the new F0 field.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        frame_size: int = 1024,
        hop_size: int = 256,
        f0_min: float = 50.0,
        f0_max: float = 1000.0,
        threshold: float = 0.1,
        field: str = "audio",
        output: str = "f0",
    ):
        super().__init__(stochastic=False)
        name = type(self).__name__
        self.sample_rate = check_size(name, "sample_rate", sample_rate)
        self.frame_size = check_size(name, "frame_size", frame_size)
        self.hop_size = check_size(name, "hop_size", hop_size)
        if not 0 < f0_min < f0_max < sample_rate / 2:
            raise ValueError(
                f"{name}: needs 0 < f0_min < f0_max < sample_rate / 2, got "
                f"f0_min={f0_min!r}, f0_max={f0_max!r}, sample_rate={sample_rate!r}."
            )
        self.f0_min, self.f0_max = float(f0_min), float(f0_max)
        self.threshold = float(threshold)
        self.field, self.output = field, output

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Adds the record's F0 and confidence curves."""
        signal = _check_signal(type(self).__name__, self.field, record)
        f0, confidence = S.f0_yin(
            signal, self.sample_rate, self.frame_size, self.hop_size,
            self.f0_min, self.f0_max, self.threshold,
        )  # fmt: skip
        return {**record, self.output: f0, f"{self.output}_confidence": confidence}


class Resample(RecordOperator):
    """Resamples a signal from ``sample_rate`` to ``target_rate`` (band-limited).

    Deterministic; the field's length becomes
    ``round(samples * target_rate / sample_rate)``.

    Args:
        sample_rate: samples per second of the signal.
        target_rate: samples per second wanted.
        field: the signal field ``[samples]``.
    """

    def __init__(self, sample_rate: int, target_rate: int, *, field: str = "audio"):
        super().__init__(stochastic=False)
        name = type(self).__name__
        self.sample_rate = check_size(name, "sample_rate", sample_rate)
        self.target_rate = check_size(name, "target_rate", target_rate)
        self.field = field

    def apply(self, record: Batch, key: jax.Array | None) -> Batch:
        """Resamples the record's signal."""
        signal = _check_signal(type(self).__name__, self.field, record)
        out = S.resample(signal, self.sample_rate, self.target_rate)
        return {**record, self.field: out}
