"""MCP details (issue 11 item 6): a tool call's total time stays below the client's MCP tool timeout, every call is
logged at INFO (into the log file, not on stderr), and .mcp.json sets Claude Code's per-server tool timeout."""

from __future__ import annotations

import json
import logging
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import readonly_url

from _mcp_helpers import err, ok
from _reports_helpers import seed_run
from conftest import ROOT, clone_template, drop_database


@pytest.fixture(scope="module")
def url(pg_admin_url, template_db):
    name, u = clone_template(pg_admin_url, template_db, prefix="ats_mcp_budget")
    with psycopg.connect(u, row_factory=dict_row) as c:
        seed_run(c)
        c.commit()
    yield u
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def server(url):
    from mcp_servers.postgres import build_server

    s = build_server(readonly_url=readonly_url(url))
    yield s
    s._ats_readonly.close()


def test_budget_bounds_the_total_of_several_statements(url):
    from mcp_servers._common import BudgetExhausted, TimeBudget

    def three_sleeps(conn):
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.6)")
        return "done"

    with psycopg.connect(readonly_url(url)) as conn:
        t0 = time.monotonic()
        with pytest.raises(BudgetExhausted, match="time budget is 1000 ms"):
            TimeBudget("probe", budget_ms=1000).wrap(three_sleeps)(conn)
        assert time.monotonic() - t0 < 1.5  # the second sleep was cut at the budget, the third never started
        conn.rollback()
        assert TimeBudget("probe", budget_ms=5000).wrap(three_sleeps)(conn) == "done"


def test_forensic_tool_stops_at_its_budget_with_a_clear_error(url, server, monkeypatch):
    """A forensic tool blocked by a lock ends at ATS_MCP_TOOL_BUDGET_MS, not after 60 s statements."""
    monkeypatch.setenv("ATS_MCP_TOOL_BUDGET_MS", "1500")
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with psycopg.connect(url) as c:
            c.execute("LOCK TABLE engine_runs IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)
            c.rollback()

    t = threading.Thread(target=hold_lock, daemon=True)
    t.start()
    assert locked.wait(10)
    try:
        t0 = time.monotonic()
        msg = err(server, "health_summary", {})
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        t.join(10)
    assert "time budget is 1500 ms" in msg and "ATS_MCP_TOOL_BUDGET_MS" in msg, msg
    assert elapsed < 5
    monkeypatch.delenv("ATS_MCP_TOOL_BUDGET_MS")
    assert ok(server, "health_summary", {})  # the server still answers once the lock is gone


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_every_tool_call_is_logged_at_info_into_the_file(server):
    logger = logging.getLogger("ats.mcp-postgres")
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    streams = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    assert files and all(h.level <= logging.INFO for h in files)
    assert streams and all(h.level > logging.INFO for h in streams)  # so INFO calls stay off stderr
    cap = _Records()
    logger.addHandler(cap)
    try:
        ok(server, "query", {"sql": "SELECT 1"})
        err(server, "query", {"sql": "SELECT 1; SELECT 2"})          # refused by PostgreSQL: still a normal call
        err(server, "describe_table", {"name": "no_such_table"})
    finally:
        logger.removeHandler(cap)
    calls = [r for r in cap.records if r.getMessage().startswith("tool call")]
    assert [(r.fields["tool"], r.fields["ok"]) for r in calls] == [
        ("query", True), ("query", False), ("describe_table", False)]
    assert {r.levelno for r in calls} == {logging.INFO}
    for h in files:
        h.flush()
    lines = [json.loads(x) for x in open(files[0].baseFilename, encoding="utf-8").read().splitlines()[-3:]]
    assert [(x["level"], x["tool"], x["ok"]) for x in lines] == [
        ("INFO", "query", True), ("INFO", "query", False), ("INFO", "describe_table", False)]


def test_mcp_json_sets_claude_codes_per_server_tool_timeout_above_the_budget():
    from ats.ops.headless import headless_mcp_config
    from ats.ops.tasks import get_task
    from mcp_servers._common import DEFAULT_TOOL_BUDGET_MS

    servers = json.loads((ROOT / ".mcp.json").read_text())["mcpServers"]
    for name, spec in servers.items():
        assert isinstance(spec.get("timeout"), int) and spec["timeout"] > DEFAULT_TOOL_BUDGET_MS, name
    rendered = headless_mcp_config(get_task("investigate"), ROOT)["mcpServers"]
    assert {n: s["timeout"] for n, s in rendered.items()} == {n: s["timeout"] for n, s in servers.items()}
