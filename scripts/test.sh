#!/usr/bin/env bash
# The whole test suite, from a fresh clone: lint, doctests and tests on python3,
# then the tests again on Python 3.12 where pyenv has it (jax 0.10 + flax 0.12.8
# on 3.11, jax 0.12 + flax 0.12.12 on 3.12: both must work).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
export JAX_PLATFORMS=cpu
# Python caches the modules it compiles (__pycache__): a machine that sets
# PYTHONDONTWRITEBYTECODE (this one does) would have every process of the run
# (pytest's workers, the examples, docs blocks, multi-process runs and spawned
# host workers) compile jax, flax, TensorFlow and the rest from
# source again; importing jax, flax and datarax alone then took 3.9 s of CPU
# against 1.5 s. The venvs are installed with --no-compile (scripts/_env.sh),
# so the first import of each module writes its cache.
unset PYTHONDONTWRITEBYTECODE
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # tests never download

# Two workers take the tests one by one in collection order, which
# tests/conftest.py starts with the long ones (property tests, slow tests), so
# short tests even out the end; --dist loadgroup with its reordering off does
# that and keeps an xdist_group (tests sharing a costly fixture) on one worker.
suite() {  # VENV [pytest args...]
  local venv="$1"
  shift
  "$venv/bin/python" -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder tests \
    --doctest-modules packages/datarax-core/src packages/datarax-sources/src "$@"
}

# The benchmark peers go into the first environment only, and only on 3.11:
# PyTorch's CPU build (torch==2.13.0) is on this machine's disk for 3.11, any
# other Python would pull a multi-GB CUDA build from the index.
peers=""
if [ "$(python3 -c 'import sys; print(sys.version_info[:2] == (3, 11))')" = True ]; then
  peers=peers
fi

py312=""
if command -v pyenv >/dev/null 2>&1; then
  for candidate in "$(pyenv root)"/versions/3.12*/bin/python3; do
    [ -x "$candidate" ] && py312="$candidate"
  done
fi
if [ "$(python3 -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ]; then
  py312=""
  echo "== Python 3.12 run skipped: python3 is already 3.12"
elif [ -z "$py312" ]; then
  echo "== Python 3.12 run skipped: no Python 3.12 found under pyenv"
else
  # The second environment installs beside the first: one pip keeps about one
  # core busy (unpacking wheels), so on a fresh clone the two take the time of
  # one, and the first pass of tests runs with both cores to itself.
  env312_log="$(mktemp)"
  ensure_env "$py312" .venv312 >"$env312_log" 2>&1 &
  env312_pid=$!
fi
ensure_env python3 .venv $peers

echo "== ruff"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
echo "== tests on $(.venv/bin/python --version)"
suite .venv

if [ -n "$py312" ]; then
  if ! wait "$env312_pid"; then
    cat "$env312_log"
    echo "== creating .venv312 failed" >&2
    exit 1
  fi
  cat "$env312_log"
  echo "== tests on $(.venv312/bin/python --version)"
  # This run checks the library under the other jax / flax versions: its unit
  # tests (core, sources, operators, checkpoint state, the TFDS integration).
  # Left to the first pass: tests marked "once" (tests/conftest.py: ONCE says
  # which and why: what those versions do not change, and whole programs built
  # on public calls the unit tests cover here) and those marked "slow" (several
  # processes: jax.distributed runs, checkpoints read by another process,
  # forced-device subprocesses, fresh venvs). The property tests draw 3/8 of the
  # first pass's examples (tests/helpers/budget.py): the same code paths, under
  # the other versions. Measured on this 2-core machine on 2026-11-30, when it
  # ran 1.6x slower than the week before: a fresh clone took 15 min with both
  # passes whole (.venv 1:28, 3.11 9:51, 3.12 3:36).
  DATARAX_HYPOTHESIS_EXAMPLES=3 suite .venv312 -m "not once and not slow"
fi
