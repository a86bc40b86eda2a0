"""The PreToolUse hook through the REAL Claude Code CLI (pinned, offline, tests/_scripted_model.py as the model):
a scripted forbidden Write under services/ is refused by the hook — the file is not written and the refusal
reaches the model — while a Write into reports/ and, after a plan is saved today, a code Write go through."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from _ops_helpers import make_project, run_env
from _ops_helpers import claude_bin  # noqa: F401  (fixture)
from _scripted_model import ScriptedModel, tool_results

pytestmark = [pytest.mark.slow, pytest.mark.network_cli]


def _claude(binary: Path, home: Path, env: dict, *extra: str) -> dict:
    res = subprocess.run([str(binary), "-p", "do the scripted work", "--output-format", "json",
                          "--setting-sources", "project", "--max-turns", "8", *extra],
                         cwd=str(home), env=env, capture_output=True, text=True, timeout=240)
    assert res.stdout.strip(), res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_forbidden_code_write_is_refused_by_the_hook_through_the_real_cli(claude_bin, tmp_path):
    home = make_project(tmp_path / "proj")
    (home / "services").mkdir()
    today = datetime.now(timezone.utc).date().isoformat()
    evil, ok, plan, good = (home / "services" / "evil.py", home / "reports" / "ok.md",
                            home / "plans" / f"{today}_0000_scripted-plan.md", home / "services" / "good.py")
    script = [
        {"tool_use": {"name": "Write", "input": {"file_path": str(evil), "content": "x = 1\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(ok), "content": "fine\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(plan), "content": "# Scripted plan\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(good), "content": "y = 2\n"}}},
        {"text": "done"},
    ]
    with ScriptedModel(script, final_text="done") as model:
        env = run_env(home, "", ANTHROPIC_BASE_URL=model.base_url, ANTHROPIC_API_KEY="sk-ant-test-dummy")
        env.pop("ATS_HEADLESS", None)
        # the permission rules allow Write outright: only the hook stands between the model and services/
        doc = _claude(claude_bin, home, env, "--permission-mode", "acceptEdits", "--allowedTools", "Write")
        requests = model.main_requests()
    assert not evil.exists(), "the hook must stop the Write before it happens"
    first = tool_results(requests[1])[-1]
    assert first["is_error"] and "need a plan saved today" in first["text"], first
    assert ok.read_text() == "fine\n" and plan.exists()
    assert good.read_text() == "y = 2\n", "with today's plan saved the code Write goes through"
    later = [r for r in tool_results(requests[-1]) if r["is_error"]]
    assert len(later) == 1, later
    assert doc.get("is_error") is False, doc


def test_headless_run_cannot_write_code_even_with_a_plan(claude_bin, tmp_path):
    home = make_project(tmp_path / "proj")
    (home / "services").mkdir()
    today = datetime.now(timezone.utc).date().isoformat()
    (home / "plans" / f"{today}_0000_p.md").write_text("# P\n")
    evil, note = home / "services" / "evil.py", home / "kb" / "note.md"
    script = [
        {"tool_use": {"name": "Write", "input": {"file_path": str(evil), "content": "x = 1\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(note), "content": "ok\n"}}},
        {"text": "done"},
    ]
    with ScriptedModel(script, final_text="done") as model:
        env = run_env(home, "", ANTHROPIC_BASE_URL=model.base_url, ANTHROPIC_API_KEY="sk-ant-test-dummy",
                      ATS_HEADLESS="1")
        _claude(claude_bin, home, env, "--permission-mode", "acceptEdits", "--allowedTools", "Write")
        requests = model.main_requests()
    assert not evil.exists() and note.read_text() == "ok\n"
    refusal = tool_results(requests[1])[-1]
    assert refusal["is_error"] and "headless runs may write only reports/, kb/, plans/" in refusal["text"]
