#!/usr/bin/env bash
# ATS quick start. Two commands on a fresh machine (Python 3.11+, git, network to package registries):
#   ./dev.sh demo     set everything up, then run the main job (`ats demo`)
#   ./dev.sh test     set everything up (test extras too), then run the test suite
# Other: ./dev.sh setup [extras]   ./dev.sh ats ARGS...   (runs the CLI inside the project's virtualenv)
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"
VENV="${ATS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

need_py() {
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || {
    echo "dev.sh: Python 3.11+ is required (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  }
}

setup() {  # setup EXTRAS  (e.g. "test,embeddings")
  local extras="$1"
  need_py
  if [ ! -x "$VENV/bin/python" ]; then
    echo "dev.sh: creating virtualenv $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.ats-installed-$extras"
  local want
  want="$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "dev.sh: installing ats[$extras] into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  if [[ ",$extras," == *",embeddings,"* ]]; then
    # pin the CPU torch first: otherwise sentence-transformers pulls the newest torch with CUDA packages
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
}

browser_deps() {  # the dashboard's browser test needs Debian's chromium + driver and a CJK font (root only)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
     && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || [ ! -d /usr/share/fonts/truetype/wqy ]; }; then
    echo "dev.sh: installing chromium chromium-driver fonts-wqy-microhei (dashboard browser test)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
      fonts-wqy-microhei >/dev/null
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    setup "test"
    exec "$VENV/bin/ats" demo "$@"
    ;;
  test)
    setup "test,embeddings,sweep"
    browser_deps
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  setup)
    setup "${1:-test,embeddings,sweep}"
    ;;
  ats)
    setup "test"
    exec "$VENV/bin/ats" "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo|test|setup [extras]|ats ARGS..." >&2
    exit 2
    ;;
esac
