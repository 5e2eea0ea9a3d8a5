"""Shared fixtures and settings for the datarax test suite."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Every example compiles at least once; keep the budget of examples small and
# never time them (the first call of a shape compiles).
settings.register_profile(
    "datarax",
    deadline=None,
    max_examples=int(os.environ.get("DATARAX_HYPOTHESIS_EXAMPLES", "12")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("datarax")


@pytest.fixture
def tokens() -> dict[str, np.ndarray]:
    """A small NLP-like dataset: 50 rows of 4 int32 tokens, row i holds i*10+j."""
    rows = np.arange(50, dtype=np.int32)[:, None] * 10 + np.arange(4, dtype=np.int32)
    return {"tokens": rows, "label": np.arange(50, dtype=np.int32)}


def pytest_configure(config: pytest.Config) -> None:
    # Flax deprecations fail the suite (filterwarnings = error in pyproject), so a
    # deprecated nnx API can never slip in unnoticed.
    config.addinivalue_line("filterwarnings", "error::DeprecationWarning")
