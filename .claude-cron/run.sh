#!/usr/bin/env bash
# Headless ATS run: .claude-cron/run.sh TASK [ARGS...]   (also: run.sh prompt NAME)
#
# Runs `claude --print "/<command> ARGS"` for TASK with the task's explicit tool allowlist in dontAsk mode,
# under a wall-clock timeout and a per-task lock (a second concurrent run of the same task exits "busy",
# non-zero); appends to logs/cron/<task>.log and records the run as a system_events row (component 'cron').
# Without Claude Code (binary missing, or "Not logged in") it runs the task's deterministic `ats` core and
# says so. Each task declares the artifact it must leave (e.g. investigate: reports/investigations/*_SYMBOL.md
# newer than the run's start); when Claude Code returns without it, the deterministic core runs so it lands,
# the system_events row records artifact_missing, and the exit status is 3.
# Exit status: 0 success, non-zero on failure. See `ats run --help` and services/ats/ops/headless.py.
#
# Environment: ATS_HOME (project root; default: this checkout), ATS_PYTHON (interpreter with `ats`
# installed; default: <root>/.venv/bin/python, else python3), ATS_CLAUDE_BIN (claude binary).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${ATS_HOME:-$(dirname "$HERE")}"
cd "$ROOT"
export ATS_HOME="$ROOT"
PY="${ATS_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
# `ats` (the deterministic cores, and the Bash(ats ...) tools) must resolve to the same installation
export PATH="$(dirname "$PY"):$PATH"
if [ "$#" -lt 1 ]; then
  echo "usage: $0 TASK [ARGS...]   (tasks: ats run --help)" >&2
  exit 2
fi
exec "$PY" -m ats.cli run "$@"
