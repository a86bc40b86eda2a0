"""End to end through the real Claude Code CLI (pinned, installed from npm into a reused cache) and the real MCP
servers, offline: tests/_scripted_model.py plays the model on 127.0.0.1.

`.claude-cron/run.sh investigate BTCUSDT` in a temporary copy of the project must: expand the /investigate slash
command, call the MCP tools the script asks for (seen in logs/mcp-postgres.log), land the report in reports/,
record the run as a system_events row, and refuse — in permission_denials, with nothing changed — the scripted
calls outside the task's allowlist.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psycopg
import pytest

from _ops_helpers import ROOT, cron_events, make_project, run_env, run_sh
from _ops_helpers import claude_bin, mcp_calls  # noqa: F401  (claude_bin: fixture)
from _scripted_model import ScriptedModel, message_text, tool_results

pytestmark = [pytest.mark.slow, pytest.mark.network_cli]


@pytest.fixture
def real_project(tmp_path):
    missing = [what for what, ok in [
        ("mcp_servers/launch", (ROOT / "mcp_servers" / "launch").exists()),
        (".mcp.json", (ROOT / ".mcp.json").exists()),
        ("ats.forensics.investigate", importlib.util.find_spec("ats.forensics.investigate") is not None),
    ] if not ok]
    if missing:
        pytest.skip(f"not built yet: {', '.join(missing)}")
    return make_project(tmp_path / "proj", real_mcp=True)


def test_investigate_end_to_end_through_the_real_cli(claude_bin, real_project, fresh_db_url):
    home = real_project
    note = home / "reports" / "investigations" / "agent-note.md"
    script = [
        {"tool_use": {"name": "mcp__ats-postgres__investigate_symbol", "input": {"symbol": "BTCUSDT"}}},
        {"tool_use": {"name": "mcp__ats-postgres__write_investigation_report", "input": {"symbol": "BTCUSDT"}}},
        # allowed: Edit(/reports/**) — the agent's own note next to the report
        {"tool_use": {"name": "Write", "input": {"file_path": str(note), "content": "## Agent assessment\nok\n"}}},
        # outside the allowlist: a destructive shell command, a write tool the task is not granted, a code edit
        {"tool_use": {"name": "Bash", "input": {"command": "rm -rf reports", "description": "clean reports"}}},
        {"tool_use": {"name": "mcp__ats-postgres__append_lesson",
                      "input": {"title": "scripted", "body": "must be refused"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(home / "services" / "evil.py"),
                                                 "content": "x = 1\n"}}},
        {"text": "BTCUSDT investigated: report written under reports/investigations/."},
    ]
    with ScriptedModel(script, final_text="done") as model:
        env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(claude_bin), ANTHROPIC_BASE_URL=model.base_url,
                      ANTHROPIC_API_KEY="sk-ant-test-dummy")
        res = run_sh(home, env, "investigate", "BTCUSDT")
        requests = model.main_requests()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out + (home / "logs" / "cron" / "investigate.log").read_text()

    # 1. the slash command was expanded: the first request carries the command's body with $0 substituted
    first = "\n".join(message_text(m) for m in requests[0]["messages"] if m.get("role") == "user")
    assert "<command-name>/investigate</command-name>" in first
    assert "Investigate the full trading lifecycle of symbol **BTCUSDT**" in first
    assert "Arguments as typed: `BTCUSDT`" in first
    expanded = first[first.index("<command-name>"):]
    assert "$0" not in expanded and "$ARGUMENTS" not in expanded
    assert len(requests) == len(script), "one main-loop request per scripted step"

    # 2. the scripted MCP tools ran in the real ats-postgres server (its call log)
    calls = mcp_calls(home)
    assert [c["tool"] for c in calls] == ["investigate_symbol", "write_investigation_report"]
    assert all(c["ok"] for c in calls) and calls[0]["arguments"]["symbol"] == "BTCUSDT"
    results = tool_results(requests[2])
    assert '"symbol":"BTCUSDT"' in results[-1]["text"] and not results[-1]["is_error"]

    # 3. the report landed in the temporary project's reports/, not in the repository's
    reports = sorted((home / "reports" / "investigations").glob("*_BTCUSDT.md"))
    assert len(reports) == 1 and reports[0].with_suffix(".json").exists()
    assert "BTCUSDT" in reports[0].read_text()
    assert note.read_text().startswith("## Agent assessment")
    assert not list((ROOT / "reports").glob("investigations/*agent-note*"))

    # 4. the run is a system_events row with the parsed JSON result
    (ev,) = cron_events(fresh_db_url, "investigate")
    p = ev["payload"]
    assert ev["event_type"] == "cron_run" and p["mode"] == "claude" and p["exit_code"] == 0
    assert p["is_error"] is False and p["subtype"] == "success" and p["num_turns"] == len(script)
    assert isinstance(p["total_cost_usd"], (int, float)) and p["session_id"]

    # 5. the calls outside the allowlist were refused, reported, and changed nothing
    denied = [(d["tool_name"], d["tool_input"]) for d in p["permission_denials"]]
    assert [name for name, _ in denied] == ["Bash", "mcp__ats-postgres__append_lesson", "Write"]
    assert denied[0][1]["command"] == "rm -rf reports"
    refusals = [r for r in tool_results(requests[-1]) if r["is_error"]]
    assert len(refusals) == 3 and all("denied" in r["text"].lower() for r in refusals)
    assert reports[0].exists(), "rm -rf reports did not run"
    assert not (home / "services" / "evil.py").exists()
    with psycopg.connect(fresh_db_url) as c:
        # the seeded lessons (LL-001, LL-002 from migration 0140) are there; the scripted one is not
        titles = [r[0] for r in c.execute("SELECT title FROM lessons").fetchall()]
        assert "scripted" not in titles and not any(t.lower().startswith("scripted") for t in titles), titles
        audited = c.execute("SELECT event_type FROM system_events WHERE component = 'mcp'").fetchall()
    audited = [a[0] for a in audited]
    assert "investigation_written" in audited and not any("lesson" in a for a in audited), audited
    assert "1 permission denial" not in out and "3 permission denial(s): Bash, mcp__ats-postgres__append_lesson, Write" in out


def test_project_deny_list_and_cli_core_in_headless_runs(claude_bin, real_project, fresh_db_url):
    """The rendered --settings file is honoured (Claude Code silently ignores an invalid one in print mode): a
    project deny rule beats the task's Edit(/reports/**) allow, and the headless deny list stops a core CLI
    from writing outside reports/; the allowed core (`ats health-check`, a Bash(ats ...:*) rule) really runs."""
    home = real_project
    settings_path = home / ".claude" / "settings.json"
    settings = json.loads(settings_path.read_text())
    settings["permissions"]["deny"].append("Edit(/reports/private/**)")
    settings_path.write_text(json.dumps(settings, indent=2))
    allowed, blocked = home / "reports" / "ok.md", home / "reports" / "private" / "secret.md"
    # a trusted workspace (as on a server where the operator accepted the trust dialog): the project's
    # interactive allow list is live, and the rendered deny list must cancel what the task does not have
    (home / ".home").mkdir(exist_ok=True)
    (home / ".home" / ".claude.json").write_text(json.dumps(
        {"projects": {str(home): {"hasTrustDialogAccepted": True}}}))
    script = [
        {"tool_use": {"name": "Bash", "input": {"command": "ats health-check --json", "description": "core"}}},
        {"tool_use": {"name": "Bash", "input": {"command": "ats kb status", "description": "not this task's"}}},
        {"tool_use": {"name": "Bash", "input": {"command": "ats health-check --out-dir services",
                                                "description": "core elsewhere"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(blocked), "content": "no\n"}}},
        {"tool_use": {"name": "Write", "input": {"file_path": str(allowed), "content": "yes\n"}}},
        {"text": "done"},
    ]
    with ScriptedModel(script) as model:
        env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(claude_bin), ANTHROPIC_BASE_URL=model.base_url,
                      ANTHROPIC_API_KEY="sk-ant-test-dummy")
        res = run_sh(home, env, "ats-health-check")
        requests = model.main_requests()
    assert res.returncode == 0, res.stdout + res.stderr
    log = (home / "logs" / "cron" / "ats-health-check.log").read_text()
    assert "has not been trusted" not in log, "the workspace must count as trusted for this test"
    assert allowed.read_text() == "yes\n" and not blocked.exists()
    assert not (home / "services").exists()
    core_out = json.loads(tool_results(requests[1])[-1]["text"])  # the core's --json output
    assert core_out["passed"] is True and core_out["violations"] == []
    assert all(Path(p).exists() and Path(p).is_relative_to(home / "reports") for p in core_out["paths"])
    (ev,) = cron_events(fresh_db_url, "ats-health-check")
    denials = [d["tool_input"] for d in ev["payload"]["permission_denials"]]
    assert denials == [{"command": "ats kb status", "description": "not this task's"},
                       {"command": "ats health-check --out-dir services", "description": "core elsewhere"},
                       {"file_path": str(blocked), "content": "no\n"}]


def test_real_cli_not_logged_in_falls_back_to_the_core(claude_bin, real_project, fresh_db_url):
    home = real_project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(claude_bin))  # no API key, empty HOME: not logged in
    res = run_sh(home, env, "investigate", "BTCUSDT")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Not logged in" in res.stdout and "running the deterministic core instead" in res.stdout
    assert list((home / "reports" / "investigations").glob("*_BTCUSDT.md"))
    (ev,) = cron_events(fresh_db_url, "investigate")
    assert ev["payload"]["mode"] == "core" and "Not logged in" in ev["payload"]["fallback_reason"]
