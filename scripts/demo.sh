#!/usr/bin/env bash
# The demo, from a fresh clone: trains a Flax NNX classifier on scikit-learn's
# bundled digits by iteration and by Pipeline.scan; prints accuracy and batches/s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_env python3 .venv
exec .venv/bin/python examples/digits_demo.py "$@"
