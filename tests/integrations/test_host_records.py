"""Host records from the integrations: HF Image / string columns, raw ArrayRecord."""

from __future__ import annotations

import io
import wave

import hostfns
import numpy as np
import pytest
from PIL import Image

from datarax import Pipeline
from datarax.operators import HostOperator
from datarax.sources import HostMapSource

N = 12


def jpeg(seed: int) -> bytes:
    """A 32x40 JPEG of noise whose green channel is ``seed * 20``."""
    pixels = (np.random.default_rng(seed).random((32, 40, 3)) * 255).astype(np.uint8)
    pixels[..., 1] = seed * 20
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def decode_image_column(record, rng):
    """An HF ``Image(decode=False)`` value ({"bytes", "path"}) -> pixels."""
    return hostfns.decode(
        {"image": record["image"]["bytes"], "label": record["label"]}, None
    )


def byte_ids(record, rng, length=8):
    ids = np.frombuffer(record["text"].encode()[:length], np.uint8).astype(np.int32)
    return {"ids": np.pad(ids, (0, length - len(ids))), "length": len(ids)}


@pytest.mark.hf
def test_hf_image_and_string_columns_through_host_stages():
    datasets = pytest.importorskip("datasets")
    hf = pytest.importorskip("datarax.integrations.hf")
    table = {
        "image": [{"bytes": jpeg(i), "path": None} for i in range(N)],
        "text": ["word " * (i % 4) + "end" for i in range(N)],
        "label": list(range(N)),
    }
    features = datasets.Features(
        image=datasets.Image(),
        text=datasets.Value("string"),
        label=datasets.Value("int64"),
    )
    ds = datasets.Dataset.from_dict(table, features=features)
    # HFSource refuses the columns and names the way that reads them.
    with pytest.raises(ValueError, match="hf.HFRecords"):
        hf.HFSource(ds)
    rows = hf.HFRecords(ds, columns=["image", "label"], decode=False)
    assert set(rows.record(3)["image"]) == {"bytes", "path"}
    pipe = Pipeline(
        source=HostMapSource(rows, [decode_image_column], workers=2),
        batch_size=4,
        shuffle=True,
    )
    batches = list(pipe)
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(labels.tolist()) == list(range(N))
    images = np.concatenate([b["image"] for b in batches])
    assert images.shape == (N, 32, 40, 3)
    # Each image is its own record's: the green channel says which.
    np.testing.assert_allclose(images[..., 1].mean((1, 2)), labels * 20, atol=10)
    # Decoded by datasets (PIL images), the same pixels.
    decoded = hf.HFRecords(ds, columns=["image"])
    assert np.array_equal(
        np.asarray(decoded.record(5)["image"].convert("RGB")),
        hostfns.decode({"image": jpeg(5), "label": 0}, None)["image"],
    )
    text = Pipeline(
        source=HostMapSource(hf.HFRecords(ds, columns=["text"]), [byte_ids]),
        batch_size=N,
    )
    batch = next(iter(text))
    assert batch["length"].tolist() == [min(8, len(t)) for t in table["text"]]
    assert bytes(np.asarray(batch["ids"][1], np.uint8)).rstrip(b"\0") == b"word end"


SAMPLES = 512


def wav(seed: int) -> bytes:
    """A mono 16-bit WAV of ``300 + 40 * seed`` samples, a saw of period seed + 2."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(saw(seed).astype("<i2").tobytes())
    return out.getvalue()


def saw(seed: int) -> np.ndarray:
    return (np.arange(300 + 40 * seed) % (seed + 2) * 100).astype(np.int16)


def decode_wav(record, rng):
    """An HF ``Audio(decode=False)`` value -> SAMPLES int16 samples, zero-padded."""
    with wave.open(io.BytesIO(record["audio"]["bytes"])) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
    out = np.zeros(SAMPLES, np.int16)
    out[: min(SAMPLES, len(samples))] = samples[:SAMPLES]
    return {"audio": out, "frames": len(samples), "label": record["label"]}


@pytest.mark.hf
def test_hf_audio_column_through_host_stages():
    datasets = pytest.importorskip("datasets")
    hf = pytest.importorskip("datarax.integrations.hf")
    # datasets encodes audio only with torchcodec; a column of WAV bytes cast to
    # Audio is what a dataset of audio files holds, and needs no encoder.
    ds = datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": wav(i), "path": None} for i in range(N)],
            "label": list(range(N)),
        },
        features=datasets.Features(
            audio={"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            label=datasets.Value("int64"),
        ),
    ).cast_column("audio", datasets.Audio(sampling_rate=8000))
    with pytest.raises(ValueError, match="hf.HFRecords"):
        hf.HFSource(ds)
    records = hf.HFRecords(ds, decode=False)
    assert records.record(2)["audio"]["bytes"] == wav(2)
    pipe = Pipeline(
        source=HostMapSource(records, [HostOperator(decode_wav)], workers=2),
        batch_size=5,
        shuffle=True,
        num_epochs=1,
    )
    batches = list(pipe)
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(labels.tolist()) == list(range(N))
    audio = np.concatenate([b["audio"] for b in batches])
    frames = np.concatenate([b["frames"] for b in batches])
    for row, label, count in zip(audio, labels, frames, strict=True):
        expected = np.zeros(SAMPLES, np.int16)
        expected[: min(SAMPLES, count)] = saw(int(label))[:SAMPLES]
        assert count == 300 + 40 * label
        np.testing.assert_array_equal(row, expected)


@pytest.mark.arrayrecord
def test_raw_arrayrecord_records_decoded_in_host_stages(tmp_path):
    pytest.importorskip("array_record")
    from array_record.python.array_record_module import ArrayRecordWriter

    from datarax.integrations.arrayrecord import ArrayRecordRecords

    for shard in range(2):
        writer = ArrayRecordWriter(
            str(tmp_path / f"part-{shard}.array_record"), "group_size:1"
        )
        for i in range(shard * 6, shard * 6 + 6):
            writer.write(jpeg(i))
        writer.close()
    records = ArrayRecordRecords(str(tmp_path / "part-*.array_record"))
    assert len(records) == N
    assert records.record(7) == {"record": jpeg(7)}

    def decode(record, rng):
        return hostfns.decode({"image": record["record"], "label": 0}, None)

    pipe = Pipeline(
        source=HostMapSource(records, [HostOperator(decode)], workers=3),
        batch_size=5,
        num_epochs=1,
        drop_last=True,
    )
    images = np.concatenate([b["image"] for b in pipe])
    assert images.shape == (10, 32, 40, 3)
    np.testing.assert_allclose(images[..., 1].mean((1, 2)), np.arange(10) * 20, atol=10)
