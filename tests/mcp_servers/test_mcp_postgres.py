"""ats-postgres: every tool through the SDK's in-process client, on a real database seeded with engine-shaped
rows of the 0003 audit tables (tests/_reports_helpers.seed_run)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import readonly_url
from ats.forensics import queries as fx

from _mcp_helpers import call, err, ok, tool_names
from _reports_helpers import RUN, seed_run
from conftest import ROOT, clone_template, drop_database

READ_TOOLS = {"query", "list_tables", "describe_table", "explain", "investigate_symbol", "portfolio_pnl",
              "health_summary", "blocked_signals"}
WRITE_TOOLS = {"append_lesson", "add_lesson", "record_report", "write_investigation_report"}


@pytest.fixture(scope="module")
def seeded_url(pg_admin_url, template_db, db_url):
    """A module database with the synthetic replay run (db_url is requested so ATS_LOG_DIR points to tmp)."""
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_mcp_pg")
    with psycopg.connect(url, row_factory=dict_row) as c:
        seed_run(c)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ANALYZE")
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def server(seeded_url):
    from mcp_servers.postgres import build_server

    s = build_server(allow_writes=True, readonly_url=readonly_url(seeded_url), owner_url=seeded_url)
    yield s
    s._ats_readonly.close()


@pytest.fixture(scope="module")
def ro_server(seeded_url):
    from mcp_servers.postgres import build_server

    s = build_server(readonly_url=readonly_url(seeded_url))
    yield s
    s._ats_readonly.close()


def _owner(url):
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


def test_tools_without_and_with_allow_writes(server, ro_server):
    assert set(tool_names(ro_server)) == READ_TOOLS
    assert set(tool_names(server)) == READ_TOOLS | WRITE_TOOLS
    from mcp import MCPError

    try:  # an unknown tool is a protocol error or an error result, never a write
        r = call(ro_server, "append_lesson", {"title": "t", "body": "b"})
        assert r.is_error and "append_lesson" in r.content[0].text
    except MCPError as exc:
        assert "append_lesson" in str(exc)


def test_query_runs_as_readonly_role_with_types(server):
    doc = ok(server, "query", {"sql": "SELECT current_user AS who, current_setting('transaction_read_only') AS ro"})
    assert doc["rows"] == [["ats_readonly", "on"]]
    doc = ok(server, "query", {"sql": "SELECT signal_id, price, ts, context, status FROM signals "
                                      "WHERE symbol = 'BTCUSDT' ORDER BY signal_id"})
    assert doc["columns"] == ["signal_id", "price", "ts", "context", "status"]
    assert doc["types"] == ["bigint", "numeric", "timestamp with time zone", "jsonb", "text"]
    assert doc["row_count"] == len(doc["rows"]) > 0 and doc["truncated"] is False
    sid, price, ts, ctx, status = doc["rows"][0]
    assert isinstance(sid, int) and isinstance(price, (int, float)) and ts.endswith("+00:00")
    assert isinstance(ctx, dict) and status in ("accepted", "blocked")


def test_query_row_limit_sets_truncated(server, seeded_url):
    with _owner(seeded_url) as c:
        n = c.execute("SELECT count(*) AS n FROM signals").fetchone()["n"]
    assert n > 3
    doc = ok(server, "query", {"sql": "SELECT signal_id FROM signals ORDER BY signal_id", "limit": 3})
    assert doc["row_count"] == 3 and doc["truncated"] is True and doc["truncated_reason"] == "limit"
    doc = ok(server, "query", {"sql": "SELECT signal_id FROM signals", "limit": n})
    assert doc["row_count"] == n and doc["truncated"] is False
    assert "positive integer" in err(server, "query", {"sql": "SELECT 1", "limit": 0})


def test_list_tables(server, seeded_url):
    doc = ok(server, "list_tables")
    by = {t["name"]: t for t in doc["tables"]}
    assert {"signals", "order_executions", "lessons", "reports_registry", "doc_chunks"} <= set(by)
    with _owner(seeded_url) as c:
        n = c.execute("SELECT count(*) AS n FROM signals").fetchone()["n"]
    assert by["signals"]["kind"] == "table" and by["signals"]["estimated_rows"] == n
    assert by["system_events"]["comment"].startswith("Audit log")


def test_describe_table(server):
    d = ok(server, "describe_table", {"name": "signals"})
    cols = {c["name"]: c for c in d["columns"]}
    assert cols["symbol"]["type"] == "text" and cols["symbol"]["nullable"] is False
    assert cols["signal_id"]["default"].startswith("nextval(")
    assert {"signals_symbol_ts", "signals_pkey"} <= {i["name"] for i in d["indexes"]}
    assert any(c["type"] == "check" for c in d["constraints"])
    assert d["estimated_rows"] > 0 and d["kind"] == "table"
    assert ok(server, "describe_table", {"name": "public.lessons"})["comment"].startswith("Append-only lessons")
    assert "no table or view named" in err(server, "describe_table", {"name": "no_such_table"})


def test_explain(server):
    d = ok(server, "explain", {"sql": "SELECT * FROM signals WHERE symbol = 'BTCUSDT'"})
    assert "signals" in d["plan"] and d["analyze"] is False
    d = ok(server, "explain", {"sql": "SELECT count(*) FROM fills", "format": "json", "analyze": True})
    assert isinstance(d["plan"], list) and "Actual Total Time" in d["plan"][0]["Plan"]
    assert "multiple commands" in err(server, "explain", {"sql": "SELECT 1; DROP TABLE signals"})


def _strip_volatile(doc):
    d = json.loads(json.dumps(doc))
    for k in ("generated_at", "reference_time"):
        d.pop(k, None)
    return d


def test_investigate_symbol_delegates_to_forensics(server, seeded_url):
    doc = ok(server, "investigate_symbol", {"symbol": "btcusdt", "since": "2021-05-17", "until": "2021-05-22"})
    assert doc["run"]["run_id"] == RUN and doc["symbol"] == "BTCUSDT"
    assert doc["counts"]["positions"] == 3 and doc["counts"]["blocked"] == 4
    assert {b["gate"] for b in doc["blocked_signals"]} >= {"cooldown", "breaker:daily_drawdown"}
    assert all("realized_pnl_usd" in t for t in doc["trades"])
    with psycopg.connect(seeded_url, row_factory=dict_row) as c:
        direct = fx.investigate_symbol(c, "btcusdt", since="2021-05-17", until="2021-05-22")
    assert _strip_volatile(doc) == _strip_volatile(direct)
    assert "since" in err(server, "investigate_symbol", {"symbol": "BTCUSDT", "since": "not a date"})


def test_health_summary(server, seeded_url):
    doc = ok(server, "health_summary")
    assert doc["run"]["run_id"] == RUN
    assert {s["breaker"] for s in doc["breakers"]["states"]} >= {"daily_drawdown", "market_volatility"}
    assert doc["breakers"]["trips"] == 2 and "total" in doc["errors"]
    with psycopg.connect(seeded_url, row_factory=dict_row) as c:
        assert _strip_volatile(doc) == _strip_volatile(fx.health_summary(c))


def test_blocked_signals(server):
    doc = ok(server, "blocked_signals", {"since": "2021-05-17T00:00:00Z", "strategy": "momentum"})
    assert doc["total"] == 4 and len(doc["rows"]) == 4
    assert doc["by_gate"] == {"cooldown": 1, "breaker:daily_drawdown": 2, "breaker:market_volatility": 1}
    doc = ok(server, "blocked_signals", {"since": "2021-05-19T15:00:00Z"})
    assert doc["total"] == 2
    assert ok(server, "blocked_signals", {"since": "2021-05-17", "strategy": "nope"})["total"] == 0


def test_portfolio_pnl(server, seeded_url):
    pnl = pytest.importorskip("ats.portfolio.pnl", reason="ats.portfolio.pnl (engine helper) not in this checkout")
    doc = ok(server, "portfolio_pnl")
    with psycopg.connect(seeded_url, row_factory=dict_row) as c:
        direct = pnl.pnl_windows(c)
    assert _strip_volatile(doc) == _strip_volatile(direct)
    assert "all_time" in json.dumps(doc)


def test_append_lesson_is_audited_and_append_only(server, seeded_url):
    doc = ok(server, "append_lesson", {"title": "Never sum net_pnl_daily_usd",
                                       "body": "It is a running cumulative since 00:00 UTC; use equity deltas.",
                                       "tags": ["PnL", "snapshots", "pnl"]})
    assert doc["tags"] == ["pnl", "snapshots"] and doc["source"] == "mcp"
    with _owner(seeded_url) as c:
        row = c.execute("SELECT * FROM lessons WHERE lesson_id = %s", (doc["lesson_id"],)).fetchone()
        assert row["title"] == "Never sum net_pnl_daily_usd" and row["tags"] == ["pnl", "snapshots"]
        ev = c.execute("SELECT * FROM system_events WHERE event_id = %s", (doc["event_id"],)).fetchone()
        assert ev["component"] == "mcp" and ev["event_type"] == "lesson_appended"
        assert ev["payload"]["lesson_id"] == doc["lesson_id"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE lessons SET body = 'x' WHERE lesson_id = %s", (doc["lesson_id"],))
    assert "title" in err(server, "append_lesson", {"title": "", "body": "b"})


def test_record_report_is_audited_and_refuses_outside_paths(server, seeded_url):
    doc = ok(server, "record_report", {"kind": "health_check", "path": "reports/health/2021-05-19.md",
                                       "summary": "two breakers tripped on 2021-05-19"})
    assert doc["path"] == "reports/health/2021-05-19.md" and doc["exists"] is False
    with _owner(seeded_url) as c:
        row = c.execute("SELECT * FROM reports_registry WHERE report_id = %s", (doc["report_id"],)).fetchone()
        assert row["kind"] == "health_check" and row["summary"].startswith("two breakers")
        ev = c.execute("SELECT * FROM system_events WHERE event_id = %s", (doc["event_id"],)).fetchone()
        assert (ev["component"], ev["event_type"]) == ("mcp", "report_recorded")
        before = c.execute("SELECT count(*) AS n FROM reports_registry").fetchone()["n"]
    assert "outside the project root" in err(server, "record_report", {"kind": "other", "path": "/etc/passwd"})
    assert "'..'" in err(server, "record_report", {"kind": "other", "path": "reports/../../x.md"})
    assert "not one of" in err(server, "record_report", {"kind": "bogus", "path": "reports/x.md"})
    with _owner(seeded_url) as c:
        assert c.execute("SELECT count(*) AS n FROM reports_registry").fetchone()["n"] == before


def test_write_investigation_report(server, seeded_url, tmp_path, monkeypatch):
    pytest.importorskip("ats.forensics.investigate", reason="ats.forensics.investigate not in this checkout")
    home = tmp_path / "home"
    (home / "reports").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", home / "pyproject.toml")
    monkeypatch.setenv("ATS_HOME", str(home))
    doc = ok(server, "write_investigation_report", {"symbol": "BTCUSDT", "since": "2021-05-17"})
    md, js = Path(doc["md_path"]), Path(doc["json_path"])
    assert md.is_file() and js.is_file() and md.parent == home / "reports" / "investigations"
    assert "BTCUSDT" in md.read_text()
    assert doc["run_id"] == RUN and doc["report_id"] and doc["event_id"]
    with _owner(seeded_url) as c:
        reg = c.execute("SELECT * FROM reports_registry WHERE report_id = %s", (doc["report_id"],)).fetchone()
        assert reg["kind"] == "investigation" and reg["path"] == md.relative_to(home).as_posix()
        ev = c.execute("SELECT * FROM system_events WHERE event_id = %s", (doc["event_id"],)).fetchone()
        assert (ev["component"], ev["event_type"], ev["symbol"]) == ("mcp", "investigation_written", "BTCUSDT")


def test_every_call_is_logged(server):
    ok(server, "query", {"sql": "SELECT 41 + 1 AS answer_logged"})
    err(server, "query", {"sql": "SELECT 1; SELECT 2 AS logged_failure"})
    handlers = [h for h in logging.getLogger("ats.mcp-postgres").handlers if hasattr(h, "baseFilename")]
    assert handlers, "mcp-postgres logs to a file"
    for h in handlers:
        h.flush()
    lines = [json.loads(x) for x in Path(handlers[0].baseFilename).read_text().splitlines()]
    good = [x for x in lines if "answer_logged" in json.dumps(x.get("arguments"))][-1]
    assert good["tool"] == "query" and good["ok"] is True and good["rows"] == 1
    assert good["duration_ms"] >= 0 and good["service"] == "mcp-postgres"
    bad = [x for x in lines if "logged_failure" in json.dumps(x.get("arguments"))][-1]
    assert bad["ok"] is False and "multiple commands" in bad["error"] and bad["rows"] == 0
    inv = [x for x in lines if x.get("tool") == "investigate_symbol" and x["ok"]]
    assert not inv or inv[-1]["rows"] > 0
