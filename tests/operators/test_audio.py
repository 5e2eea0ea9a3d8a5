"""Audio operators and functions: loudness, F0, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from datarax import Pipeline
from datarax.operators import F0, Loudness, Resample, functional as F
from datarax.sources import MemorySource

SR = 16_000


def tone(freq: float, amplitude: float = 1.0, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("freq", [110.0, 220.0, 587.3])
def test_yin_finds_the_frequency_of_a_tone_on_every_frame(freq):
    f0, confidence = F.f0_yin(tone(freq) + 0.3 * tone(2 * freq), SR)
    np.testing.assert_allclose(np.asarray(f0), freq, rtol=0.01)
    assert (np.asarray(confidence) > 0.9).all()


def test_loudness_reads_mean_square_in_db_with_a_weighting():
    full = np.asarray(F.loudness(tone(1000.0), SR))
    half = np.asarray(F.loudness(tone(1000.0, 0.5), SR))
    low = np.asarray(F.loudness(tone(100.0), SR))
    np.testing.assert_allclose(full, -3.0, atol=0.2)
    np.testing.assert_allclose(full - half, 20 * np.log10(2), atol=0.05)
    # A-weighting at 100 Hz is -19.1 dB.
    np.testing.assert_allclose(full - low, 19.1, atol=1.0)
    assert np.asarray(F.loudness(np.zeros(4096, np.float32), SR)).max() == -120.0


def test_resampling_a_band_limited_periodic_signal_is_exact():
    t16 = np.arange(SR // 10) / SR
    t8 = np.arange(SR // 20) / (SR // 2)
    wave = lambda t: np.sin(2 * np.pi * 300 * t) + 0.5 * np.cos(2 * np.pi * 1250 * t)  # noqa: E731
    down = F.resample(wave(t16).astype(np.float32), SR, SR // 2)
    np.testing.assert_allclose(np.asarray(down), wave(t8), atol=1e-4)
    up = F.resample(wave(t8).astype(np.float32), SR // 2, SR)
    np.testing.assert_allclose(np.asarray(up), wave(t16), atol=1e-4)


def test_audio_operators_add_their_curves_in_a_pipeline():
    audio = np.stack([tone(f) for f in (110.0, 220.0, 330.0, 440.0)])
    pipe = Pipeline(
        source=MemorySource({"audio": audio}),
        stages=[Loudness(SR), F0(SR), Resample(SR, SR // 2)],
        batch_size=4,
    )
    batch = pipe.step()
    frames = 1 + (len(audio[0]) - 1024) // 256
    assert batch["loudness"].shape == batch["f0"].shape == (4, frames)
    assert batch["f0_confidence"].shape == (4, frames)
    assert batch["audio"].shape == (4, len(audio[0]) // 2)
    np.testing.assert_allclose(
        np.median(np.asarray(batch["f0"]), axis=1), [110, 220, 330, 440], rtol=0.01
    )


def test_bad_audio_input_is_named():
    stereo = np.zeros((4, 4096, 2), np.float32)
    pipe = Pipeline(
        source=MemorySource({"audio": stereo}), stages=[F0(SR)], batch_size=4
    )
    with pytest.raises(ValueError) as info:
        pipe.step()
    assert str(info.value) == (
        "F0 works on mono signals [samples], but field 'audio' holds records of "
        "shape (4096, 2); pick one channel (audio[..., 0]) or average them first."
    )
    with pytest.raises(ValueError) as info:
        F0(SR, f0_min=500.0, f0_max=100.0)
    assert info.exconly() == (
        "ValueError: F0: needs 0 < f0_min < f0_max < sample_rate / 2, got "
        "f0_min=500.0, f0_max=100.0, sample_rate=16000."
    )
    with pytest.raises(ValueError) as info:
        F.frames(np.zeros(100, np.float32), 1024, 256)
    assert info.exconly() == (
        "ValueError: a signal of 100 samples is shorter than one frame of 1024; use "
        "a smaller frame_size or longer records."
    )
    with pytest.raises(ValueError) as info:
        F.f0_yin(np.zeros(4096, np.float32), SR, frame_size=256, f0_min=50.0)
    assert info.exconly() == (
        "ValueError: f0_min=50.0 Hz needs lags up to 320 samples, more than a frame "
        "of 256 holds; raise f0_min or frame_size."
    )
