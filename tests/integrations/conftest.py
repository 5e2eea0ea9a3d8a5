"""Integration tests read only data they make; nothing reaches a hub."""

from __future__ import annotations

import os

# Set before any test imports datasets, so it never tries the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
