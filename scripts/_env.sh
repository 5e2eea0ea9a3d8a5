# Shared by scripts/test.sh and scripts/demo.sh: create or reuse a virtual
# environment and install the four distributions (editable) and the dev tools.
# Usage: ensure_env PYTHON VENV_DIR [peers]
# With "peers", also installs the benchmark peers (requirements-peers.txt: Grain,
# tf.data, CPU PyTorch, SPDL), which the test suite uses where present.
ensure_env() {
  local python="$1" venv="$2" peers="${3:-}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements-dev.txt \
    -e packages/datarax-core -e packages/datarax-sources \
    -e "packages/datarax-integrations[all]" -e packages/datarax-bench
  if [ "$peers" = peers ] && [ -f requirements-peers.txt ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r requirements-peers.txt
  fi
}
