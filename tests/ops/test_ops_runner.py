"""The headless runner behind `.claude-cron/run.sh`: command line, rendered MCP config and settings, the
system_events row, fallback to the deterministic core, the per-task busy lock, the timeout.

These tests drive run.sh with a stand-in claude binary (tests/_ops_helpers.FAKE_CLAUDE) that records how it
was called; the real CLI is exercised end to end in tests/test_ops_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from ats.ops.headless import CronLog, ProcOutcome, no_model_reason, parse_claude_json
from ats.ops.tasks import TASKS

from _ops_helpers import cron_events, make_fake_claude, make_project, run_env, run_sh


@pytest.fixture
def project(tmp_path):
    """(home, fake claude path, record file) for one test."""
    home = make_project(tmp_path / "proj")
    fake = make_fake_claude(tmp_path / "fake-claude")
    return home, fake, tmp_path / "claude-calls.jsonl"


def _calls(record: Path) -> list[dict]:
    return [json.loads(ln) for ln in record.read_text().splitlines()] if record.exists() else []


def test_claude_command_line_config_and_event(project, fresh_db_url):
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    res = run_sh(home, env, "investigate", "BTCUSDT", "2021-05-19")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Claude Code ok (subtype success, 3 turns" in res.stdout
    assert "Fake assessment done." in res.stdout

    (call,) = _calls(record)
    argv = call["argv"]
    assert argv[:2] == ["--print", "/investigate BTCUSDT 2021-05-19"]
    for flag, value in [("--output-format", "json"), ("--permission-mode", "dontAsk"), ("--max-turns", "20"),
                        ("--setting-sources", "project")]:
        assert argv[argv.index(flag) + 1] == value
    assert "--strict-mcp-config" in argv
    assert argv[argv.index("--allowedTools") + 1].split(",") == list(TASKS["investigate"].allowed_tools)
    assert call["cwd"] == str(home) and call["ats_home"] == str(home)
    # the MCP servers of .mcp.json, ats-postgres with --allow-writes (investigate writes through it)
    servers = call["mcp_config"]["mcpServers"]
    assert set(servers) == {"ats-postgres", "ats-docs"}
    assert servers["ats-postgres"]["args"][-1] == "--allow-writes"
    assert "--allow-writes" not in servers["ats-docs"]["args"]
    assert servers["ats-postgres"]["env"]["ATS_HOME"] == str(home)
    # the project's deny list with absolute paths, plus the headless denies
    deny = call["settings"]["permissions"]["deny"]
    assert f"Edit(/{home}/services/ats/db/migrations/0001_*.sql)" in deny
    assert "Bash(rm -rf:*)" in deny and "Bash(git push:*)" in deny
    # the project's interactive allows beyond the task's own are denied for this run
    assert "Bash(ats health-check:*)" in deny and f"Edit(/{home}/kb/**)" in deny
    assert not set(TASKS["investigate"].allowed_tools) & set(deny)
    assert call["settings"]["permissions"]["allow"] == []

    (ev,) = cron_events(fresh_db_url, "investigate")
    assert ev["event_type"] == "cron_run" and ev["severity"] == "info" and ev["symbol"] == "BTCUSDT"
    p = ev["payload"]
    assert p["mode"] == "claude" and p["exit_code"] == 0 and p["args"] == ["BTCUSDT", "2021-05-19"]
    assert p["is_error"] is False and p["subtype"] == "success" and p["num_turns"] == 3
    assert p["total_cost_usd"] == 0.0123
    assert p["permission_denials"][0]["tool_input"]["command"] == "rm -rf reports"
    assert f"event_id={ev['event_id']}" in res.stdout

    log = (home / "logs" / "cron" / "investigate.log").read_text()
    assert "--allowedTools" in log and "--- claude stdout ---" in log and "exit 0" in log


def test_read_only_task_gets_a_server_without_write_tools(project, fresh_db_url):
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    res = run_sh(home, env, "ats-health-check")
    assert res.returncode == 0, res.stdout + res.stderr
    (call,) = _calls(record)
    assert "--allow-writes" not in call["mcp_config"]["mcpServers"]["ats-postgres"]["args"]
    assert call["argv"][1] == "/ats-health-check"


def test_failed_claude_run_exits_non_zero(project, fresh_db_url):
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record),
                  FAKE_CLAUDE_MODE="max-turns")
    res = run_sh(home, env, "weekly-report")
    assert res.returncode != 0
    assert "Claude Code FAILED (subtype error_max_turns" in res.stdout
    (ev,) = cron_events(fresh_db_url, "weekly-report")
    assert ev["severity"] == "error" and ev["payload"]["subtype"] == "error_max_turns"
    assert ev["payload"]["mode"] == "claude", "a model that ran and failed is not silently replaced by the core"


def test_missing_claude_runs_the_deterministic_core(project, fresh_db_url):
    home, _, _ = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(home / "no-such-claude"))
    res = run_sh(home, env, "investigate", "BTCUSDT")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Claude Code not found" in res.stdout
    assert "running the deterministic core instead (ats investigate BTCUSDT)" in res.stdout
    assert list((home / "reports" / "investigations").glob("*_BTCUSDT.md")), "the core wrote the report"
    (ev,) = cron_events(fresh_db_url, "investigate")
    p = ev["payload"]
    assert p["mode"] == "core" and p["exit_code"] == 0 and "Claude Code not found" in p["fallback_reason"]
    assert p["core_runs"] == [{"argv": ["ats", "investigate", "BTCUSDT"], "exit_code": 0,
                               "duration_s": p["core_runs"][0]["duration_s"], "timed_out": False}]
    assert ev["severity"] == "warning", "a fallback is visible, not info"


def test_not_logged_in_runs_the_deterministic_core(project, fresh_db_url):
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record),
                  FAKE_CLAUDE_MODE="not-logged-in")
    res = run_sh(home, env, "investigate", "ETHUSDT", "2021-05-19")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(_calls(record)) == 1
    assert "claude: Not logged in" in res.stdout
    assert "ats investigate ETHUSDT --since 2021-05-19 --until 2021-05-20" in res.stdout
    (ev,) = cron_events(fresh_db_url, "investigate")
    assert ev["payload"]["mode"] == "core" and ev["payload"]["is_error"] is True
    assert "Not logged in" in ev["payload"]["fallback_reason"]


def test_second_concurrent_run_of_a_task_is_busy(project, fresh_db_url, tmp_path):
    home, fake, record = project
    started, release = tmp_path / "started", tmp_path / "release"
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record),
                  FAKE_CLAUDE_MODE="hang", FAKE_CLAUDE_STARTED=str(started), FAKE_CLAUDE_RELEASE=str(release))
    first = subprocess.Popen([str(home / ".claude-cron" / "run.sh"), "ats-health-check"], cwd=str(home), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started claude"
            time.sleep(0.05)
        second = run_sh(home, env, "ats-health-check")
        assert second.returncode != 0
        assert "busy" in second.stderr and "ats-health-check is already running" in second.stderr
        # another task is not blocked by it
        other = run_sh(home, {**env, "FAKE_CLAUDE_MODE": "ok"}, "weekly-report")
        assert other.returncode == 0, other.stdout + other.stderr
    finally:
        release.write_text("go")
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    events = cron_events(fresh_db_url, "ats-health-check")
    assert [e["event_type"] for e in events] == ["cron_busy", "cron_run"]
    assert events[0]["severity"] == "warning" and events[0]["payload"]["mode"] == "busy"


def test_wall_clock_timeout_kills_the_run(project, fresh_db_url, tmp_path):
    home, fake, record = project
    started = tmp_path / "started"
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record),
                  FAKE_CLAUDE_MODE="hang", FAKE_CLAUDE_STARTED=str(started))
    res = run_sh(home, env, "--timeout", "3", "watchlist-healthcheck")
    assert res.returncode == 124, res.stdout + res.stderr
    assert "timed out after 3s" in res.stdout
    pid = int(started.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    (ev,) = cron_events(fresh_db_url, "watchlist-healthcheck")
    assert ev["payload"]["subtype"] == "timeout" and ev["severity"] == "error"


def test_one_shot_prompt_runs_once(project, fresh_db_url):
    home, fake, record = project
    (home / ".claude-cron" / "prompts" / "check-db.md").write_text(
        "---\ndescription: a deferred check\nrun_at: 2027-01-04 08:00\ncore: ats db status\n---\n"
        "Check the database and write a note under reports/.\n")
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(home / "no-such-claude"))
    res = run_sh(home, env, "prompt", "check-db")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "running the deterministic core instead (ats db status)" in res.stdout
    again = run_sh(home, env, "prompt", "check-db")
    assert again.returncode == 0 and "already ran" in again.stdout
    events = cron_events(fresh_db_url, "prompt-check-db")
    assert [e["payload"]["mode"] for e in events] == ["core", "skipped"]
    # with the model available the prompt text itself is the --print argument
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    forced = run_sh(home, env, "--force", "prompt", "check-db")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    (call,) = _calls(record)
    assert call["argv"][1].startswith("Check the database")
    assert "--allowedTools" in call["argv"]


def test_prompt_without_core_fails_loudly_when_no_model(project, fresh_db_url):
    home, _, _ = project
    (home / ".claude-cron" / "prompts" / "think.md").write_text("---\ndescription: x\n---\nThink.\n")
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(home / "no-such-claude"))
    res = run_sh(home, env, "prompt", "think")
    assert res.returncode == 1
    assert "no deterministic core" in res.stdout
    (ev,) = cron_events(fresh_db_url, "prompt-think")
    assert ev["severity"] == "error"


def test_unrecorded_run_is_a_failed_run(project, fresh_db_url):
    home, fake, record = project
    info = psycopg.conninfo.conninfo_to_dict(fresh_db_url)
    bad_url = psycopg.conninfo.make_conninfo(**{**info, "dbname": "ats_no_such_database"})
    env = run_env(home, bad_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    res = run_sh(home, env, "weekly-report")
    assert res.returncode == 1
    assert "could not record the run in system_events" in res.stdout


def test_usage_errors(project, fresh_db_url):
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    res = run_sh(home, env, "investigate")
    assert res.returncode == 2 and "needs a SYMBOL" in res.stderr
    res = run_sh(home, env, "frobnicate")
    assert res.returncode == 2 and "unknown task 'frobnicate'" in res.stderr
    res = subprocess.run([str(home / ".claude-cron" / "run.sh")], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr
    assert not _calls(record)


def test_core_only_task_never_calls_claude(project, fresh_db_url):
    """kb-scan (hourly) is deterministic: it runs `ats kb scan` even when Claude Code is available."""
    home, fake, record = project
    env = run_env(home, fresh_db_url, ATS_CLAUDE_BIN=str(fake), FAKE_CLAUDE_RECORD=str(record))
    res = run_sh(home, env, "kb-scan")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kb-scan: deterministic core ok: ats kb scan" in res.stdout
    assert "Claude Code was not used" not in res.stdout
    assert not _calls(record)
    (ev,) = cron_events(fresh_db_url, "kb-scan")
    assert ev["severity"] == "info" and ev["payload"]["mode"] == "core"
    assert "fallback_reason" not in ev["payload"]


def _proc(stdout: str = "", stderr: str = "", timed_out: bool = False) -> ProcOutcome:
    return ProcOutcome(returncode=1, stdout=stdout, stderr=stderr, timed_out=timed_out, duration_s=0.1)


@pytest.mark.parametrize("doc, expected", [
    ({"is_error": True, "result": "Not logged in · Please run /login"}, "Not logged in"),
    ({"is_error": True, "result": "Invalid API key · Fix external API key"}, "Invalid API key"),
    ({"is_error": True, "result": "x", "api_error_status": 401}, "claude: x"),
    ({"is_error": True, "result": "Connection error.", "terminal_reason": "api_error", "num_turns": 1},
     "model API unreachable"),
    ({"is_error": True, "result": "Connection error.", "terminal_reason": "api_error", "num_turns": 4}, None),
    ({"is_error": True, "subtype": "error_max_turns", "result": ""}, None),
    ({"is_error": False, "result": "Not logged in is what the report says"}, None),
])
def test_no_model_reason(doc, expected):
    got = no_model_reason(doc, _proc(json.dumps(doc)))
    assert (got is None) if expected is None else (expected in got)


def test_parse_claude_json_takes_the_result_object():
    doc = {"type": "result", "is_error": False, "subtype": "success"}
    assert parse_claude_json(json.dumps(doc)) == doc
    assert parse_claude_json("warning: something\n" + json.dumps(doc) + "\n") == doc
    assert parse_claude_json("") is None and parse_claude_json("not json") is None
    assert no_model_reason(None, _proc("", "Error: Not logged in")) == "claude: not logged in"
    assert no_model_reason(None, _proc(timed_out=True)) is None


def test_cron_log_rotates(tmp_path, monkeypatch):
    monkeypatch.setenv("ATS_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("ATS_CRON_LOG_MAX_BYTES", "100")
    for i in range(8):
        CronLog("rot").write("x" * 150 + f" run {i}")
    files = sorted(p.name for p in (tmp_path / "cron").iterdir())
    assert files == ["rot.log", "rot.log.1", "rot.log.2", "rot.log.3", "rot.log.4", "rot.log.5"]
    assert (tmp_path / "cron" / "rot.log").read_text().strip().endswith("run 7")
    assert (tmp_path / "cron" / "rot.log.5").read_text().strip().endswith("run 2")
