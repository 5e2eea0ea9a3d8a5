"""TFDSSource / TFDSStreamingSource over tiny builders prepared in a temp data_dir."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from flax import nnx
from hypothesis import given, settings, strategies as st

tfds = pytest.importorskip("tensorflow_datasets")

from datarax import IterableSource, Pipeline  # noqa: E402
from datarax.checkpoint import load_state_dict, state_dict  # noqa: E402
from datarax.integrations.tfds import TFDSSource, TFDSStreamingSource  # noqa: E402
from datarax.sources import MemorySource  # noqa: E402

pytestmark = pytest.mark.tfds

SOURCES = [TFDSSource, TFDSStreamingSource]
TRAIN, TEST = 40, 12
INT64 = jax.dtypes.canonicalize_dtype(np.int64)  # int32 unless x64 is on


def example(i: int) -> dict:
    return {
        "id": i,
        "x": np.array([i, i + 0.5, -i], np.float32),
        "label": i % 4,
        "image": np.full((4, 4, 3), i % 256, np.uint8),
    }


# skip_registration: the global TFDS registry stays clean; by name, tfds.builder
# then opens the prepared files read-only, as for a dataset prepared elsewhere.
class DataraxTiny(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """40 train / 12 test records of array features only."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS looks for download checksums beside the builder's module; for a test
    # module imported by pytest (importlib mode) that lookup needs the optional
    # importlib_resources package. Nothing is downloaded: no checksums.
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Scalar(dtype=np.int64),
                    "x": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=4),
                    # A uint8 Tensor, not an Image: encoding PNGs needs TensorFlow.
                    "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(range(TRAIN)),
            "test": self._generate_examples(range(1000, 1000 + TEST)),
        }

    def _generate_examples(self, ids):
        for i in ids:
            yield i, example(i)


class DataraxMixed(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Records with a text and a variable-length feature beside an array one."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # as DataraxTiny

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "x": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                    "text": tfds.features.Text(),
                    "ragged": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            yield (
                i,
                {
                    "x": np.full(2, i, np.float32),
                    "text": f"record {i}",
                    "ragged": np.arange(i, dtype=np.int32),
                },
            )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    for cls in (DataraxTiny, DataraxMixed):
        cls(data_dir=str(path), file_format="array_record").download_and_prepare()
    return str(path)


@pytest.fixture(scope="session")
def reference(data_dir):
    """The train split in data source order (TFDS shuffles by key when preparing)."""
    source = tfds.builder("datarax_tiny", data_dir=data_dir).as_data_source("train")
    records = source.__getitems__(list(range(len(source))))
    return {k: np.stack([r[k] for r in records]) for k in example(0)}


@pytest.fixture(scope="session")
def sources(data_dir):
    return {
        cls: cls("datarax_tiny", split="train", data_dir=data_dir) for cls in SOURCES
    }


@pytest.fixture(scope="session")
def tfrecord_builder(data_dir, tmp_path_factory):
    """A builder whose info says tfrecord (files copied from array_record).

    The format errors are decided from the builder's info alone, so this needs no
    TensorFlow to write real tfrecord files (it is never read).
    """
    version = tmp_path_factory.mktemp("tfrecord") / "1.0.0"
    shutil.copytree(f"{data_dir}/datarax_tiny/1.0.0", version)
    info_path = version / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    return tfds.builder_from_directory(str(version))


def ids(batches):
    return np.concatenate([np.ravel(np.asarray(b["id"])) for b in batches])


@pytest.mark.parametrize("cls", SOURCES)
def test_length_and_element_spec(sources, cls):
    source = sources[cls]
    assert len(source) == TRAIN
    assert source.element_spec == {
        "id": jax.ShapeDtypeStruct((), INT64),
        "x": jax.ShapeDtypeStruct((3,), jnp.float32),
        "label": jax.ShapeDtypeStruct((), INT64),  # ClassLabel: int64 in TFDS
        "image": jax.ShapeDtypeStruct((4, 4, 3), jnp.uint8),
    }


@pytest.mark.parametrize("cls", SOURCES)
def test_natural_order_is_the_data_source_order(sources, reference, cls):
    batch = sources[cls].get_batch_at(0, TRAIN)
    for name, expected in reference.items():
        np.testing.assert_array_equal(np.asarray(batch[name]), expected)
    assert sorted(reference["id"].tolist()) == list(range(TRAIN))
    assert reference["id"].tolist() != list(range(TRAIN))  # TFDS shuffled the files
    # A window past the end runs on into the next epoch.
    assert np.asarray(sources[cls].get_batch_at(38, 4)["id"]).tolist() == [
        *reference["id"][38:].tolist(),
        *reference["id"][:2].tolist(),
    ]


@pytest.mark.parametrize("cls", SOURCES)
def test_other_and_sliced_splits(data_dir, cls):
    test = cls("datarax_tiny", split="test", data_dir=data_dir)
    assert len(test) == TEST
    assert sorted(np.asarray(test.get_batch_at(0, TEST)["id"]).tolist()) == list(
        range(1000, 1000 + TEST)
    )
    assert len(cls("datarax_tiny", split="train[:25%]+test", data_dir=data_dir)) == (
        TRAIN // 4 + TEST
    )


@pytest.mark.parametrize("cls", SOURCES)
def test_builder_instance_and_features_selection(data_dir, reference, cls):
    builder = tfds.builder("datarax_tiny", data_dir=data_dir)
    source = cls(builder, split="train", features=["label", "id"])
    assert list(source.element_spec) == ["label", "id"]
    np.testing.assert_array_equal(
        np.asarray(source.get_batch_at(3, 5)["label"]), reference["label"][3:8]
    )


@pytest.mark.parametrize("cls", SOURCES)
def test_shuffled_epochs_are_permutations_and_differ(sources, cls):
    pipe = Pipeline(source=sources[cls], batch_size=8, shuffle=True, num_epochs=None)
    stream = np.ravel(pipe.scan(lambda b: b["id"], length=15))  # 3 epochs
    epochs = stream.reshape(3, TRAIN)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(TRAIN))
    assert len({tuple(e) for e in epochs.tolist()}) == 3


def test_both_sources_serve_the_memory_source_stream(sources, reference):
    def stream(source):
        pipe = Pipeline(
            source=source,
            batch_size=7,
            shuffle=True,
            num_epochs=None,
            rngs=nnx.Rngs(5),
        )
        return np.ravel(pipe.scan(lambda b: b["id"], length=9))

    expected = stream(MemorySource(dict(reference)))
    for cls in SOURCES:
        np.testing.assert_array_equal(stream(sources[cls]), expected)


@pytest.mark.parametrize("cls", SOURCES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_iteration_and_scan_give_the_same_stream(sources, cls, shuffle):
    def build():
        return Pipeline(
            source=sources[cls],
            batch_size=6,
            shuffle=shuffle,
            num_epochs=2,
            rngs=nnx.Rngs(1),
        )

    by_iter = list(build())
    assert [len(b["id"]) for b in by_iter] == [6] * 13 + [2]  # 80 records
    scanned = build().scan(lambda b: (b["id"], b["x"]), length=13)
    np.testing.assert_array_equal(ids(by_iter[:13]), np.ravel(scanned[0]))
    np.testing.assert_array_equal(
        np.concatenate([b["x"] for b in by_iter[:13]]), scanned[1].reshape(-1, 3)
    )
    # Each record's fields travel together: x[0] is the record's id.
    np.testing.assert_array_equal(scanned[1][..., 0], scanned[0].astype(np.float32))


@pytest.mark.parametrize("cls", SOURCES)
def test_resume_mid_epoch_serves_the_same_next_batches(data_dir, cls):
    def build(batch_size=8):
        source = cls("datarax_tiny", split="train", data_dir=data_dir)
        return Pipeline(
            source=source,
            batch_size=batch_size,
            shuffle=True,
            num_epochs=None,
            rngs=nnx.Rngs(3),
        )

    pipe = build()
    it = iter(pipe)
    for _ in range(3):  # 24 of 40 records: mid-epoch
        next(it)
    saved = state_dict(pipe)
    expected = ids([next(it) for _ in range(4)])  # crosses into epoch 1

    fresh = build()
    load_state_dict(saved, fresh)
    fresh_it = iter(fresh)
    np.testing.assert_array_equal(ids([next(fresh_it) for _ in range(4)]), expected)

    scanned = build()
    load_state_dict(saved, scanned)
    np.testing.assert_array_equal(
        np.ravel(scanned.scan(lambda b: b["id"], length=4)), expected
    )

    smaller = build(batch_size=4)  # the record stream goes on, batch size aside
    load_state_dict(saved, smaller)
    np.testing.assert_array_equal(
        np.ravel(smaller.scan(lambda b: b["id"], length=8)), expected
    )


def test_checkpoint_and_state_hold_no_records(sources):
    streaming = sources[TFDSStreamingSource]
    assert jax.tree.leaves(nnx.state(streaming)) == []
    for source in sources.values():
        pipe = Pipeline(source=source, batch_size=4)
        leaves = jax.tree.leaves(state_dict(pipe))
        assert sum(np.asarray(x).nbytes for x in leaves) < 4096


@pytest.mark.parametrize("legacy", [False, True])
def test_streaming_is_traceable_under_jit_vmap_and_nnx_scan(sources, legacy):
    source = sources[TFDSStreamingSource]
    key = jax.random.PRNGKey(2) if legacy else jax.random.key(2)
    eager = np.asarray(sources[TFDSSource].get_batch_at(37, 5, key)["id"])
    jitted = jax.jit(lambda s, k: source.get_batch_at(s, 5, k)["id"])
    np.testing.assert_array_equal(jitted(jnp.int32(37), key), eager)
    starts = jnp.array([37, 42, 47], jnp.int32)
    vmapped = jax.vmap(lambda s: source.get_batch_at(s, 5, key)["id"])(starts)
    np.testing.assert_array_equal(vmapped[0], eager)

    @nnx.scan(in_axes=(None, 0), out_axes=0)
    def scanned(src, start):
        return src.get_batch_at(start, 5, key)["id"]

    np.testing.assert_array_equal(scanned(source, starts), vmapped)


@settings(max_examples=examples(8))  # each example compiles two reads
@given(
    start=st.integers(0, 200),
    batch_size=st.integers(1, 50),
    shuffle=st.booleans(),
)
def test_any_streaming_window_equals_the_eager_source(
    sources, start, batch_size, shuffle
):
    key = jax.random.key(7) if shuffle else None

    def read(source):
        fn = jax.jit(lambda s, k: source.get_batch_at(s, batch_size, k))
        return fn(jnp.int32(start), key)

    streamed, eager = read(sources[TFDSStreamingSource]), read(sources[TFDSSource])
    for name in eager:
        np.testing.assert_array_equal(np.asarray(streamed[name]), eager[name])


# ---- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("cls", SOURCES)
def test_unprepared_builder_says_to_prepare_it(tmp_path, cls):
    builder = DataraxTiny(data_dir=str(tmp_path))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{cls.__name__}: 'datarax_tiny' is not prepared in {builder.data_dir}; "
            "call builder.download_and_prepare() first"
        ),
    ):
        cls(builder, split="train")


@pytest.mark.parametrize("cls", SOURCES)
def test_unknown_split_lists_the_splits(data_dir, cls):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{cls.__name__}: 'datarax_tiny' has no split 'validation'; its splits "
            "are ['train', 'test']"
        ),
    ):
        cls("datarax_tiny", split="validation", data_dir=data_dir)


@pytest.mark.parametrize("cls", SOURCES)
def test_text_and_variable_shape_features_are_named_with_the_fix(data_dir, cls):
    with pytest.raises(ValueError) as info:
        cls("datarax_mixed", split="train", data_dir=data_dir)
    message = info.exconly().removeprefix("ValueError: ")
    assert message.startswith(
        f"{cls.__name__}: features of 'datarax_mixed' that cannot be arrays: "
    )
    assert "'text' (Text(shape=(), dtype=string)) holds strings" in message
    assert (
        "'ragged' (Tensor(shape=(None,), dtype=int32)) has a variable shape (None,)"
        in message
    )
    assert "leave them out with features=['x']" in message
    # ... and the fix works.
    source = cls("datarax_mixed", split="train", data_dir=data_dir, features=["x"])
    assert sorted(np.asarray(source.get_batch_at(0, 5)["x"])[:, 0].tolist()) == [
        0,
        1,
        2,
        3,
        4,
    ]


@pytest.mark.parametrize("cls", SOURCES)
def test_selecting_a_bad_feature_names_only_it(data_dir, cls):
    with pytest.raises(ValueError, match=r"cannot be arrays: 'text' \(Text") as info:
        cls("datarax_mixed", split="train", data_dir=data_dir, features=["text", "x"])
    assert "ragged" not in info.exconly().split(". Records")[0]


@pytest.mark.parametrize("cls", SOURCES)
def test_feature_selection_errors(data_dir, cls):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "features ['nope'] are not features of 'datarax_tiny', whose features are"
        ),
    ):
        cls("datarax_tiny", split="train", data_dir=data_dir, features=["x", "nope"])
    with pytest.raises(TypeError, match="features must be a list of feature names"):
        cls("datarax_tiny", split="train", data_dir=data_dir, features="x")


@pytest.mark.parametrize("cls", SOURCES)
def test_unknown_name_wrong_type_and_data_dir_with_a_builder(data_dir, cls):
    with pytest.raises(
        ValueError,
        match=re.escape(f"{cls.__name__}: no TFDS dataset 'datarax_nothing' is"),
    ):
        cls("datarax_nothing", split="train", data_dir=data_dir)
    with pytest.raises(TypeError, match="got int"):
        cls(3, split="train")
    builder = tfds.builder("datarax_tiny", data_dir=data_dir)
    with pytest.raises(ValueError, match="was given with a builder instance"):
        cls(builder, split="train", data_dir=data_dir)


def test_tfrecord_without_tensorflow_says_what_to_do(tfrecord_builder, monkeypatch):
    # As if TensorFlow were not installed: `import tensorflow` raises ImportError.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(
        RuntimeError,
        match=re.escape("which only TensorFlow can read, and TensorFlow is not"),
    ) as info:
        TFDSSource(tfrecord_builder, split="train")
    assert "pip install tensorflow-cpu" in info.exconly()
    assert "file_format='array_record')" in info.exconly()
    with pytest.raises(
        RuntimeError, match=re.escape("in the tfrecord format, which only TensorFlow")
    ) as info:
        TFDSStreamingSource(tfrecord_builder, split="train")
    assert "file_format='array_record').download_and_prepare()" in info.exconly()


@pytest.fixture(scope="session")
def tfrecord_dir(tmp_path_factory):
    """DataraxTiny prepared in TFDS's default tfrecord format (needs TensorFlow)."""
    pytest.importorskip("tensorflow")
    path = str(tmp_path_factory.mktemp("tfrecord_real"))
    DataraxTiny(data_dir=path, file_format="tfrecord").download_and_prepare()
    return path


def test_eager_reads_a_real_tfrecord_builder_through_tensorflow(
    tfrecord_dir, reference
):
    source = TFDSSource("datarax_tiny", split="train", data_dir=tfrecord_dir)
    # TFDS orders records by key whatever the format: the same order.
    batch = source.get_batch_at(0, TRAIN)
    for name, expected in reference.items():
        np.testing.assert_array_equal(np.asarray(batch[name]), expected)


def test_streaming_iterates_a_tfrecord_builder(tfrecord_dir, reference):
    def build(shuffle=False, batch_size=6):
        source = TFDSStreamingSource(
            "datarax_tiny", split="train", data_dir=tfrecord_dir
        )
        assert isinstance(source, IterableSource)
        return Pipeline(
            source=source,
            batch_size=batch_size,
            shuffle=shuffle,
            num_epochs=2,
            rngs=nnx.Rngs(4),
        )

    natural = list(build())
    assert [len(b["id"]) for b in natural] == [6] * 13 + [2]
    np.testing.assert_array_equal(ids(natural), np.tile(reference["id"], 2))
    np.testing.assert_array_equal(
        np.concatenate([b["image"] for b in natural])[:TRAIN], reference["image"]
    )

    shuffled = ids(build(shuffle=True))
    epochs = shuffled.reshape(2, TRAIN)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(TRAIN))
    assert epochs[0].tolist() != epochs[1].tolist()
    assert epochs[0].tolist() != reference["id"].tolist()
    np.testing.assert_array_equal(ids(build(shuffle=True, batch_size=8)), shuffled)

    # Resume mid-epoch from a checkpoint: the same next batches.
    pipe = build(shuffle=True)
    it = iter(pipe)
    for _ in range(3):
        next(it)
    saved = state_dict(pipe)
    expected = ids([next(it) for _ in range(5)])  # crosses into epoch 1
    fresh = build(shuffle=True)
    load_state_dict(saved, fresh)
    fresh_it = iter(fresh)
    np.testing.assert_array_equal(ids([next(fresh_it) for _ in range(5)]), expected)

    # Random access is what it lacks: scan, step and get_batch_at say so.
    for call in (
        lambda: pipe.scan(lambda b: b["id"], length=2),
        pipe.step,
        lambda: pipe.source.get_batch_at(0, 4),
    ):
        with pytest.raises(TypeError, match="is iteration-only") as info:
            call()
        assert "file_format='array_record'" in info.exconly()


def test_import_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    for name in ("datarax.integrations.tfds", "datarax.integrations._tfds_source"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(
        ImportError, match=re.escape('pip install "datarax-integrations[tfds]"')
    ):
        importlib.import_module("datarax.integrations.tfds")


def test_text_and_variable_length_features_as_host_records(data_dir):
    from datarax.integrations.tfds import TFDSRecords
    from datarax.sources import HostMapSource

    records = TFDSRecords("datarax_mixed", split="train", data_dir=data_dir)
    assert len(records) == 5 and set(records.record(0)) == {"x", "text", "ragged"}

    def fixed(record, rng):  # text -> its record number; ragged -> padded to 4
        ragged = np.zeros(4, np.int32)
        ragged[: len(record["ragged"])] = record["ragged"]
        return {"n": int(record["text"].split()[1]), "ragged": ragged, "x": record["x"]}

    pipe = Pipeline(source=HostMapSource(records, [fixed]), batch_size=5)
    batch = next(iter(pipe))
    order = np.asarray(batch["n"])  # TFDS's own order (shuffled by key)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(batch["x"][:, 0], order)
    assert [int((row != 0).sum()) for row in np.asarray(batch["ragged"])] == [
        max(0, n - 1) for n in order
    ]
    with pytest.raises(ValueError, match="features=.*must name each"):
        TFDSRecords("datarax_mixed", split="train", data_dir=data_dir, features=["no"])


class DataraxImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Six JPEG-encoded images (green channel 40 * label) and their labels."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # as DataraxTiny

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(12, 16, 3), encoding_format="jpeg"
                    ),
                    "label": tfds.features.ClassLabel(num_classes=6),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(6):
            pixels = np.zeros((12, 16, 3), np.uint8)
            pixels[..., 1] = 40 * i
            yield i, {"image": pixels, "label": i}


def test_image_feature_bytes_decoded_in_host_stages(tmp_path):
    # TFDS encodes Image features with TensorFlow when preparing (reading them
    # back needs none): where TensorFlow is not installed there is nothing to read.
    pytest.importorskip("tensorflow")
    import hostfns

    from datarax.integrations.tfds import TFDSRecords
    from datarax.sources import HostMapSource

    DataraxImages(
        data_dir=str(tmp_path), file_format="array_record"
    ).download_and_prepare()
    builder = DataraxImages(data_dir=str(tmp_path))
    records = TFDSRecords(
        builder, split="train", decoders={"image": tfds.decode.SkipDecoding()}
    )
    assert records.record(0)["image"][:2] == b"\xff\xd8"  # the JPEG itself
    pipe = Pipeline(
        source=HostMapSource(records, [hostfns.decode], workers=2),
        batch_size=6,
        shuffle=True,
    )
    batch = next(iter(pipe))
    labels = np.asarray(batch["label"])
    assert sorted(labels.tolist()) == list(range(6))
    assert batch["image"].shape == (6, 12, 16, 3)
    np.testing.assert_allclose(
        np.asarray(batch["image"])[..., 1].mean((1, 2)), 40 * labels, atol=3
    )
    # TFDS's own decoding of the same feature: the same pixels.
    decoded = TFDSRecords(builder, split="train")
    for index in range(6):
        np.testing.assert_allclose(
            decoded.record(index)["image"],
            hostfns.decode(records.record(index), None)["image"],
            atol=2,
        )
