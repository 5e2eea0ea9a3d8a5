# Shared by scripts/test.sh and scripts/demo.sh: create or reuse a virtual
# environment and install the four distributions (editable) and the dev tools.
# Usage: ensure_env PYTHON VENV_DIR [peers]
# With "peers", also installs the benchmark peers (requirements-peers.txt: Grain,
# tf.data, CPU PyTorch, SPDL), which the test suite uses where present.
#
# pip runs only when what it installs from changed: VENV_DIR/.datarax-installed
# holds a hash of the requirements files, the four pyproject.toml files, VERSION,
# the metadata hook and this script, written after a successful install. With
# everything installed, pip itself costs 10-25 s per environment (it rebuilds the
# four editable wheels); the editable installs already follow source edits. A new
# venv (a fresh clone) has no stamp and installs everything; delete the stamp to
# force a reinstall. --no-compile: pip would byte-compile every module of every
# package it installs (TensorFlow and PyTorch hold thousands), a minute of a fresh
# install; Python compiles the modules a run imports, once, when it imports them.
ensure_env() {
  local python="$1" venv="$2" peers="${3:-}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
  fi
  local stamp="$venv/.datarax-installed" hash have=""
  hash="$(sha256sum requirements-*.txt packages/*/pyproject.toml VERSION \
    tools/hatch_metadata.py scripts/_env.sh | sha256sum | cut -d' ' -f1)"
  [ -f "$stamp" ] && have="$(cat "$stamp")"
  # An install with the peers also serves a request without them (demo.sh). The
  # stamp alone is not trusted: the four distributions must still be there.
  if { [ "$have" = "$hash $peers" ] || [ "$have" = "$hash peers" ]; } &&
    "$venv/bin/python" -c 'import importlib.metadata as m
for d in ("core", "sources", "integrations", "bench"): m.version("datarax-" + d)' \
      2>/dev/null; then
    echo "== $venv is up to date (delete $stamp to reinstall)"
    return
  fi
  rm -f "$stamp"
  local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  # The build backend first, so that the four editable builds use it in place:
  # with build isolation pip made a fresh environment with hatchling for each
  # of them (23 s of a fresh install here, 7 s without).
  "${pip[@]}" --no-compile hatchling editables
  "${pip[@]}" --no-compile --no-build-isolation -r requirements-dev.txt \
    -e packages/datarax-core -e packages/datarax-sources \
    -e "packages/datarax-integrations[all]" -e packages/datarax-bench
  if [ "$peers" = peers ] && [ -f requirements-peers.txt ]; then
    "${pip[@]}" --no-compile -r requirements-peers.txt
  fi
  echo "$hash $peers" >"$stamp"
}
