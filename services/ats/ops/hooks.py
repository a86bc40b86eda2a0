"""`ats hook pretooluse`: the Claude Code PreToolUse hook that makes the path rules structural.

Claude Code runs ``.claude/hooks/ats-hook pretooluse`` (configured in ``.claude/settings.json``) before every
Write / Edit / MultiEdit / NotebookEdit, with the hook input JSON on stdin (``tool_name``, ``tool_input.file_path``
or ``notebook_path`` — absolute —, ``cwd``, ``permission_mode``, ...). The decision:

* **headless** runs (``ATS_HEADLESS=1`` in the environment, or ``permission_mode`` ``dontAsk``, which only
  the headless runner uses) may write only under ``reports/``, ``kb/``, ``plans/`` of the project;
* **interactive** edits under ``services/``, ``mcp_servers/``, ``tests/`` are refused unless a plan saved
  today (UTC, ``plans/YYYY-MM-DD_HHMM_<slug>.md``) exists; anything else is left to the permission rules.

A refusal exits **2** with the reason on stderr (Claude Code blocks the call and shows the reason to the model;
any other non-zero exit would let the call through, so every unexpected error while judging a write tool is
also a refusal: the hook fails closed). An allowed call exits 0 with no output (the normal permission flow
continues). Bash is not inspected: headless allowlists hold no bare Bash, and interactive shell commands go
through ``.claude/settings.json`` ask/deny rules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

WRITE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")
HEADLESS_DIRS = ("reports", "kb", "plans")
GUARDED_DIRS = ("services", "mcp_servers", "tests")


@dataclass(frozen=True)
class Decision:
    """``allow`` (exit 0, no output) or ``deny`` with the one-line ``reason`` (exit 2, stderr)."""

    allow: bool
    reason: str = ""

    @property
    def exit_code(self) -> int:
        """0 to let the call continue, 2 to block it (Claude Code's PreToolUse contract)."""
        return 0 if self.allow else 2


def is_headless(payload: dict, environ: dict | None = None) -> bool:
    """True for a headless run: ``ATS_HEADLESS=1`` or the runner's ``--permission-mode dontAsk``."""
    env = os.environ if environ is None else environ
    return env.get("ATS_HEADLESS") == "1" or payload.get("permission_mode") == "dontAsk"


def project_dir(payload: dict, environ: dict | None = None) -> Path:
    """``CLAUDE_PROJECT_DIR`` (set by Claude Code for hooks), else ATS_HOME / the project root, else ``cwd``."""
    env = os.environ if environ is None else environ
    if env.get("CLAUDE_PROJECT_DIR"):
        return Path(env["CLAUDE_PROJECT_DIR"]).resolve()
    if env.get("ATS_HOME"):
        return Path(env["ATS_HOME"]).resolve()
    return Path(payload.get("cwd") or os.getcwd()).resolve()


def target_path(payload: dict) -> str | None:
    """The file a write tool targets (``file_path``, or ``notebook_path`` for NotebookEdit)."""
    ti = payload.get("tool_input") or {}
    return ti.get("file_path") or ti.get("notebook_path")


def decide(payload: dict, environ: dict | None = None) -> Decision:
    """Judge one PreToolUse call (see the module docstring).

    Parameters
    ----------
    payload : dict
        The hook input JSON.
    environ : dict, optional
        Environment (default ``os.environ``).

    Returns
    -------
    Decision
    """
    from .gitflow import todays_plans

    tool = payload.get("tool_name", "")
    if tool not in WRITE_TOOLS:
        return Decision(True)
    raw = target_path(payload)
    if not raw:
        return Decision(False, f"ats hook: {tool} without a file_path: denied")
    root = project_dir(payload, environ)
    path = Path(raw)
    full = (path if path.is_absolute() else Path(payload.get("cwd") or root) / path).resolve()
    try:
        rel = full.relative_to(root)
        top = rel.parts[0] if rel.parts else ""
    except ValueError:
        rel, top = None, None
    if is_headless(payload, environ):
        if top in HEADLESS_DIRS:
            return Decision(True)
        return Decision(False, f"ats hook: {tool} of {full} denied: headless runs may write only "
                               f"{', '.join(d + '/' for d in HEADLESS_DIRS)} (CLAUDE.md: headless runs are read-only)")
    if top in GUARDED_DIRS and not todays_plans(root):
        from datetime import datetime, timezone

        day = datetime.now(timezone.utc).date().isoformat()
        return Decision(False, f"ats hook: {tool} of {rel} denied: changes under {top}/ need a plan saved today "
                               f"(no plans/{day}_*.md). Plan first, get it approved, run /save-plan \"title\".")
    return Decision(True)


def run(stdin_text: str, environ: dict | None = None) -> Decision:
    """Parse the hook input and decide; fails closed (deny) when the input cannot be judged."""
    try:
        payload = json.loads(stdin_text or "{}")
        if not isinstance(payload, dict):
            raise ValueError("hook input is not a JSON object")
    except ValueError as exc:
        return Decision(False, f"ats hook: unreadable hook input ({exc}): denied")
    try:
        return decide(payload, environ)
    except Exception as exc:  # fail closed for write tools, open for the rest
        if payload.get("tool_name") in WRITE_TOOLS:
            return Decision(False, f"ats hook: error while checking {payload.get('tool_name')}: {exc}: denied")
        return Decision(True)


def main() -> int:
    """``python -m ats.ops.hooks``: the same as ``ats hook pretooluse`` without loading every CLI module (the
    hook runs before each write, so its start-up time matters)."""
    import sys

    decision = run(sys.stdin.read())
    if not decision.allow:
        print(decision.reason, file=sys.stderr)
    return decision.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
