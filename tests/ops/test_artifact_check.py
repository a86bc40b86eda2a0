"""Headless runs must prove they produced their artifact (issue 11 item 5), through the real Claude Code CLI.

A scripted model (tests/_scripted_model.py on 127.0.0.1) calls the read-only MCP tools of the real ats-postgres
server and then ends without writing anything. `.claude-cron/run.sh investigate BTCUSDT` must notice that no
report for BTCUSDT newer than the run's start exists, run the deterministic core so it lands, record
``artifact_missing`` in the run's system_events row and exit non-zero. A run whose model does write the report
passes with the artifact named in the payload.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from ats.ops.headless import ARTIFACT_MISSING_EXIT
from ats.ops.tasks import TASKS

from _ops_helpers import ROOT, cron_events, make_project, run_env, run_sh
from _ops_helpers import claude_bin, mcp_calls  # noqa: F401  (claude_bin: fixture)
from _scripted_model import ScriptedModel, tool_results

pytestmark = [pytest.mark.slow, pytest.mark.network_cli]


@pytest.fixture
def real_project(tmp_path):
    if not (ROOT / "mcp_servers" / "launch").exists() or importlib.util.find_spec("ats.forensics.investigate") is None:
        pytest.skip("the MCP servers are not built in this checkout")
    home = make_project(tmp_path / "proj", real_mcp=True)
    # an older BTCUSDT report: it exists, but it is not this run's
    old = home / "reports" / "investigations" / "2020-01-01_BTCUSDT.md"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("# an old investigation\n")
    past = time.time() - 86400
    os.utime(old, (past, past))
    return home


def _run(claude_bin, home, db_url, script):
    with ScriptedModel(script, final_text="done") as model:
        env = run_env(home, db_url, ATS_CLAUDE_BIN=str(claude_bin), ANTHROPIC_BASE_URL=model.base_url,
                      ANTHROPIC_API_KEY="sk-ant-test-dummy")
        t0 = time.time()
        res = run_sh(home, env, "investigate", "BTCUSDT")
        return res, model.main_requests(), t0


def test_model_that_writes_nothing_fails_the_run_and_the_core_lands_the_report(claude_bin, real_project,
                                                                                 fresh_db_url):
    home = real_project
    script = [
        {"tool_use": {"name": "mcp__ats-postgres__investigate_symbol", "input": {"symbol": "BTCUSDT"}}},
        {"tool_use": {"name": "mcp__ats-postgres__blocked_signals", "input": {"since": "2021-05-01"}}},
        {"text": "BTCUSDT looks fine; nothing to add."},   # ends without writing the report
    ]
    res, requests, t0 = _run(claude_bin, home, fresh_db_url, script)
    out = res.stdout + res.stderr
    log = (home / "logs" / "cron" / "investigate.log").read_text()

    # the CLI really ran the script against the real server, read-only
    assert len(requests) == len(script), log
    assert [c["tool"] for c in mcp_calls(home)] == ["investigate_symbol", "blocked_signals"]
    assert not [r for r in tool_results(requests[-1]) if r["is_error"]]

    # the run failed loudly...
    assert res.returncode == ARTIFACT_MISSING_EXIT, out
    assert "ARTIFACT MISSING" in out and "reports/investigations/*_BTCUSDT.md" in out
    # ...and the deterministic core wrote today's report (the old one does not count)
    fresh = [p for p in (home / "reports" / "investigations").glob("*_BTCUSDT.md") if p.stat().st_mtime >= int(t0)]
    assert len(fresh) == 1 and fresh[0].name != "2020-01-01_BTCUSDT.md"
    assert fresh[0].with_suffix(".json").exists() and "BTCUSDT" in fresh[0].read_text()
    assert "core: ats investigate BTCUSDT" in log

    (ev,) = cron_events(fresh_db_url, "investigate")
    p = ev["payload"]
    assert ev["severity"] == "error" and p["mode"] == "claude" and p["exit_code"] == ARTIFACT_MISSING_EXIT
    assert p["is_error"] is False and p["subtype"] == "success"   # Claude Code itself reported success
    miss = p["artifact_missing"]
    assert miss["expected"] == "reports/investigations/*_BTCUSDT.md" and miss["after"] == "claude"
    assert miss["landed"] is True and miss["core_exit_code"] == 0
    assert miss["paths"] == [fresh[0].relative_to(home).as_posix()]
    assert [r["argv"] for r in p["core_runs"]] == [["ats", "investigate", "BTCUSDT"]]
    assert "artifact" not in p


def test_model_that_writes_the_report_passes_with_the_artifact_named(claude_bin, real_project, fresh_db_url):
    home = real_project
    script = [
        {"tool_use": {"name": "mcp__ats-postgres__write_investigation_report", "input": {"symbol": "BTCUSDT"}}},
        {"text": "report written"},
    ]
    res, _requests, _t0 = _run(claude_bin, home, fresh_db_url, script)
    assert res.returncode == 0, res.stdout + res.stderr
    (ev,) = cron_events(fresh_db_url, "investigate")
    p = ev["payload"]
    assert "artifact_missing" not in p and "core_runs" not in p
    assert p["artifact"]["produced_by"] == "claude"
    assert [Path(x).name for x in p["artifact"]["paths"]] != ["2020-01-01_BTCUSDT.md"]
    assert all(x.endswith("_BTCUSDT.md") for x in p["artifact"]["paths"])


def test_every_producing_task_declares_its_artifact():
    declared = {name: t.expected_artifact(["BTCUSDT"] if name == "investigate" else []) for name, t in TASKS.items()}
    assert declared["investigate"].pattern == "reports/investigations/*_BTCUSDT.md"
    for name in ("ats-health-check", "weekly-report", "24-h-trade-analysis", "watchlist-healthcheck",
                 "update-knowledge-base", "save-plan"):
        art = declared[name]
        assert art is not None and art.pattern.split("/")[0] in TASKS[name].writes, name
    assert declared["kb-scan"] is None  # core-only, writes only the registry
