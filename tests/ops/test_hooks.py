"""`ats hook pretooluse`: hook JSON in, exit 0 / exit 2 + reason out; and once through the real Claude Code CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime.now(timezone.utc).date().isoformat()


@pytest.fixture
def proj(tmp_path):
    root = tmp_path / "proj"
    for d in ("services/ats", "tests", "mcp_servers", "reports", "kb", "plans"):
        (root / d).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    return root


def hook(root: Path, tool: str, rel: str, *, mode: str = "default", cli: bool = False, **env: str):
    """Feed one hook input to `python -m ats.ops.hooks` (what the wrapper runs) or, cli=True, `ats hook pretooluse`."""
    payload = {"session_id": "s", "hook_event_name": "PreToolUse", "cwd": str(root), "permission_mode": mode,
               "tool_name": tool, "tool_input": {"file_path": str(root / rel), "content": "x"}}
    e = {"CLAUDE_PROJECT_DIR": str(root), "ATS_HEADLESS": "", **env}
    argv = ["-m", "ats.cli", "hook", "pretooluse"] if cli else ["-m", "ats.ops.hooks"]
    return subprocess.run([sys.executable, *argv], input=json.dumps(payload),
                          capture_output=True, text=True, env={**os.environ, **e}, timeout=60)


def _plan(root: Path, day: str) -> None:
    (root / "plans" / f"{day}_0900_a-plan.md").write_text("# A plan\n")


@pytest.mark.parametrize("rel", ["services/ats/x.py", "mcp_servers/y.py", "tests/test_z.py"])
def test_interactive_code_edit_needs_todays_plan(proj, rel):
    _plan(proj, "2020-01-01")
    r = hook(proj, "Write", rel, cli=rel.startswith("services"))
    assert r.returncode == 2 and f"no plans/{TODAY}_*.md" in r.stderr and "/save-plan" in r.stderr
    _plan(proj, TODAY)
    for tool in ("Write", "Edit", "MultiEdit"):
        r = hook(proj, tool, rel, cli=tool == "Write" and rel.startswith("services"))
        assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("rel", ["reports/x.md", "kb/a.md", "plans/p.md", "README.md", "../outside.txt"])
def test_interactive_other_paths_are_left_to_the_permission_rules(proj, rel):
    assert hook(proj, "Write", rel).returncode == 0


@pytest.mark.parametrize("how", [{"ATS_HEADLESS": "1"}, {"mode": "dontAsk"}])
def test_headless_writes_only_reports_kb_plans(proj, how):
    _plan(proj, TODAY)  # a plan does not open code to a headless run
    mode = how.get("mode", "default")
    env = {k: v for k, v in how.items() if k != "mode"}
    for rel in ("reports/r.md", "kb/k.md", "plans/p.md"):
        assert hook(proj, "Write", rel, mode=mode, **env).returncode == 0
    for rel in ("services/ats/x.py", "CLAUDE.md", ".claude/settings.json", "../outside.txt"):
        r = hook(proj, "Edit", rel, mode=mode, cli=rel == "CLAUDE.md", **env)
        assert r.returncode == 2 and "headless runs may write only reports/, kb/, plans/" in r.stderr, rel


def test_other_tools_pass_and_bad_input_fails_closed(proj):
    r = subprocess.run([sys.executable, "-m", "ats.cli", "hook", "pretooluse"], input='{"tool_name": "Read", '
                       '"tool_input": {"file_path": "/etc/passwd"}}', capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for bad in ("not json", '{"tool_name": "Write", "tool_input": {}}', "[1]"):
        r = subprocess.run([sys.executable, "-m", "ats.ops.hooks"], input=bad, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.startswith("ats hook:"), bad


def test_settings_register_the_hook_for_every_write_tool():
    doc = json.loads((ROOT / ".claude" / "settings.json").read_text())
    (entry,) = doc["hooks"]["PreToolUse"]
    assert set(entry["matcher"].split("|")) == {"Write", "Edit", "MultiEdit", "NotebookEdit"}
    assert entry["hooks"][0]["command"] == '"$CLAUDE_PROJECT_DIR"/.claude/hooks/ats-hook pretooluse'
    assert os.access(ROOT / ".claude" / "hooks" / "ats-hook", os.X_OK)


def test_wrapper_fails_closed_without_python(proj):
    payload = json.dumps({"tool_name": "Write", "tool_input": {"file_path": str(proj / "reports/x.md")}})
    r = subprocess.run([str(ROOT / ".claude/hooks/ats-hook"), "pretooluse"], input=payload, capture_output=True,
                       text=True, env={**os.environ, "CLAUDE_PROJECT_DIR": str(proj), "ATS_PYTHON": "/nonexistent"})
    assert r.returncode == 2 and "no Python" in r.stderr
    r = subprocess.run([str(ROOT / ".claude/hooks/ats-hook"), "pretooluse"], input=payload, capture_output=True,
                       text=True, env={**os.environ, "CLAUDE_PROJECT_DIR": str(proj), "ATS_PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
