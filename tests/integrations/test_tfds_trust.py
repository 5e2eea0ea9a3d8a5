"""TFDS sources serve int64 features exactly, or refuse values beyond int32 by name."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from datarax.integrations.tfds import TFDSSource, TFDSStreamingSource  # noqa: E402

pytestmark = pytest.mark.tfds

READ_ERRORS = (ValueError, jax.errors.JaxRuntimeError)  # a callback wraps

N = 6


class DataraxWide(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Records whose int64 feature ``big`` exceeds int32 in one record only."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no checksums to look up: nothing is downloaded

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Scalar(dtype=np.int64),
                    "big": tfds.features.Scalar(dtype=np.int64),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(N):
            yield i, {"id": i, "big": 2**40 if i == 3 else -i}


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds_wide")
    built = DataraxWide(data_dir=str(path), file_format="array_record")
    built.download_and_prepare()
    return built


def records(builder):
    source = builder.as_data_source("train")
    return [source[i] for i in range(len(source))]


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="narrowing needs x64 off")
def test_int64_feature_beyond_int32_is_refused_by_name(builder):
    row = [int(r["id"]) for r in records(builder)].index(3)
    match = re.escape(
        f"field 'big' holds 1099511627776 (record {row}), which int32 cannot hold"
    )
    with pytest.raises(ValueError, match=r"TFDSSource\('datarax_wide'.*" + match):
        TFDSSource(builder, split="train")
    streaming = TFDSStreamingSource(builder, split="train")
    fine = [i for i in range(N) if i != row]
    # The other records are served, exactly; the read holding record `row` fails.
    batch = streaming.get_batch_at(fine[0], 1)
    assert int(batch["big"][0]) == int(records(builder)[fine[0]]["big"])
    with pytest.raises(READ_ERRORS, match="TFDSRandomAccessSource: " + match):
        jax.block_until_ready(streaming.get_batch_at(0, N))


def test_int64_features_that_fit_are_served_exactly(builder):
    want = [int(r["id"]) for r in records(builder)]
    for cls in (TFDSSource, TFDSStreamingSource):
        source = cls(builder, split="train", features=["id"])
        assert source.element_spec["id"].dtype == jax.dtypes.canonicalize_dtype(
            np.int64
        )
        assert np.asarray(source.get_batch_at(0, N)["id"]).tolist() == want
