#!/usr/bin/env bash
# GPU figures, on a machine whose Python already has jax with CUDA, flax and optax
# and can install nothing (no pip, no network). Runs ../shared/floor_bench.py and
# `datarax-bench run --variant small --adapters Floor,Datarax,Datarax-scan` on the
# default JAX backend, straight from the source tree (the four src folders on
# PYTHONPATH, as the editable install does), and writes everything under $OUT.
# psutil and matplotlib are optional here: without them peak RSS counts this
# process only and the report has no charts. Never part of the test command.
#
#   OUT=/tmp/gpu bash scripts/gpu_bench.sh          # PYTHON=python3 by default
#   FLOOR_BENCH=path/to/floor_bench.py ...           # if ../shared is elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="${OUT:-$root/gpu-bench}"
python="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONPATH="$root/packages/datarax-core/src:$root/packages/datarax-sources/src:$root/packages/datarax-integrations/src:$root/packages/datarax-bench/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

floor="${FLOOR_BENCH:-}"
for candidate in ../shared/floor_bench.py shared/floor_bench.py; do
  [ -z "$floor" ] && [ -f "$candidate" ] && floor="$candidate"
done

{
  echo "== $(date -u +%FT%TZ) $(uname -n)"
  "$python" -c 'import sys, jax, flax; print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, jax.devices())'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} 2>&1 | tee "$out/machine.txt"

# Budget: about 2 + 5 minutes, inside 8 (each step is cut off rather than overrun).
if [ -n "$floor" ]; then
  echo "== floor_bench ($floor)"
  timeout 150 "$python" "$floor" --steps 100 2>&1 | tee "$out/floor_bench.txt" || echo "floor_bench stopped: $?"
else
  echo "== floor_bench.py not found (set FLOOR_BENCH=); skipped" | tee "$out/floor_bench.txt"
fi
echo "== datarax-bench"
timeout 300 "$python" -m datarax.bench run --variant small \
  --adapters Floor,Datarax,Datarax-scan --out "$out/bench" 2>&1 | tee "$out/bench.log" \
  || echo "datarax-bench stopped: $?"
echo "== written under $out"
