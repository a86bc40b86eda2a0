"""STOP within one bar, a reconciliation mismatch halts entries, the read-only preflight, the go-live opt-ins,
credentials hygiene (a planted key never leaks into logs, events or exceptions)."""

from __future__ import annotations

import logging
import os
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from _live_helpers import KEY, SECRET, live_env, ms, start_sim

STRATS = ("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown")


def _opts(**kw):
    from ats.live.loop import LiveOptions

    base = dict(broker="bybit", symbols=("BTCUSDT",), timeframe="1h", strategies=STRATS, reconcile_every_min=360.0)
    base.update(kw)
    return LiveOptions(**base)


def _q(url, sql, *args):
    with psycopg.connect(url, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def test_stop_halts_entries_within_one_bar(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import run_live

    sim, srv, url = start_sim(shared_data, start="2021-05-11T00:00:00", speed=6000)
    live_env(monkeypatch, url)
    out = {}
    th = threading.Thread(target=lambda: out.update(run_live(_opts(max_bars=30))))
    th.start()
    try:
        last = None
        while th.is_alive():
            r = _q(fresh_db_url, "SELECT last_bar_time FROM live_sessions")
            if r and r[0]["last_bar_time"] is not None and r[0]["last_bar_time"] >= \
                    _dt("2021-05-11T12:00:00"):
                last = r[0]["last_bar_time"]
                break
            time.sleep(0.02)
        from ats.db.config_store import set_setting

        with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:  # what `ats risk stop` writes
            set_setting(c, "breaker.manual_stop", True, account_id="default")
            c.commit()
        th.join(timeout=300)
    finally:
        srv.shutdown()
    assert last is not None and out["bars"] == 30
    trips = _q(fresh_db_url, """SELECT ts FROM system_events WHERE event_type='breaker_tripped'
                                 AND payload->>'breaker'='manual_stop'""")
    assert trips, "STOP never reached the loop"
    assert trips[0]["ts"].timestamp() <= last.timestamp() + 2 * 3600  # the bar in progress or the next one
    late_entries = _q(fresh_db_url, """SELECT count(*) AS n FROM order_executions WHERE intent IN ('open','add')
                                        AND submitted_at > %s""", trips[0]["ts"])
    assert late_entries[0]["n"] == 0


def _dt(iso):
    from datetime import datetime, timezone

    return datetime.fromisoformat(iso).replace(tzinfo=timezone.utc)


def test_reconciliation_mismatch_halts_entries(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import run_live

    sim, srv, url = start_sim(shared_data, start="2021-05-10T00:00:00", speed=30000)
    sim.wallet["BTC"] = Decimal("0.5")  # coins the database knows nothing about
    live_env(monkeypatch, url)
    try:
        s = run_live(_opts(max_bars=48))
    finally:
        srv.shutdown()
    assert s["mismatches"] >= 1
    ev = _q(fresh_db_url, "SELECT payload FROM system_events WHERE event_type='reconciliation_mismatch'")
    d = ev[0]["payload"]["diffs"][0]
    assert d["what"] == "position" and d["symbol"] == "BTCUSDT" and d["venue"] == "0.5" and d["database"] == "0"
    assert _q(fresh_db_url, """SELECT 1 FROM system_events WHERE event_type='breaker_tripped'
                                AND payload->>'breaker'='reconciliation'""")
    assert _q(fresh_db_url, "SELECT count(*) AS n FROM order_executions WHERE intent IN ('open','add')")[0]["n"] == 0
    assert Decimal(str(sim.wallet["BTC"])) == Decimal("0.5")  # never "fixed"
    blocked = _q(fresh_db_url, "SELECT DISTINCT gate FROM blocked_signals")
    assert {b["gate"] for b in blocked} <= {"breaker:reconciliation", "regime", "cooldown", "buy_gate"}


def test_preflight_is_read_only_and_refuses_a_misconfigured_account(fresh_db_url, shared_data, monkeypatch):
    from conftest import run_cli

    sim, srv, url = start_sim(shared_data)
    env = {"ATS_BYBIT_BASE_URL": url, "BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET,
           "ATS_DATABASE_URL": fresh_db_url}
    try:
        ok = run_cli("broker", "preflight", "--account", "default", env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "preflight passed" in ok.stdout
        sim.read_only = True
        with psycopg.connect(fresh_db_url) as c:
            c.execute("""INSERT INTO system_settings (account_id, key, value) VALUES
                         ('default', 'preflight.min_equity_usd', '50000'::jsonb)""")
        bad = run_cli("broker", "preflight", "--account", "default", env=env)
    finally:
        srv.shutdown()
    assert bad.returncode == 1
    lines = [x for x in bad.stdout.splitlines() if x.startswith("preflight FAILED")]
    assert len(lines) == 3, bad.stdout  # equity, key permissions, shorting
    assert any("read_only" in x for x in lines) and any("equity" in x for x in lines)
    assert sim.order_hits == 0 and not sim.orders  # never placed, cancelled or modified anything
    ev = _q(fresh_db_url, "SELECT event_type FROM system_events WHERE component='broker' ORDER BY event_id")
    assert [e["event_type"] for e in ev] == ["preflight_passed", "preflight_failed"]
    assert KEY not in bad.stdout + bad.stderr + ok.stdout and SECRET not in bad.stdout + ok.stdout


def test_production_endpoint_needs_three_opt_ins(fresh_db_url, monkeypatch):
    from ats.errors import UsageError
    from ats.live.loop import run_live

    monkeypatch.setenv("ATS_BYBIT_BASE_URL", "https://api.bybit.com")  # refused before any network call
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    with pytest.raises(UsageError) as e:
        run_live(_opts(max_bars=1))
    msg = str(e.value)
    assert "--live" in msg and "live_enabled" in msg and "preflight" in msg and "\n" not in msg
    assert KEY not in msg and SECRET not in msg


def test_planted_key_never_leaks(fresh_db_url, shared_data, monkeypatch, caplog, capfd, tmp_path):
    from ats.errors import AtsError, UsageError
    from ats.execution.bybit import BybitBroker
    from ats.live.credentials import venue_keys
    from ats.live.loop import run_live

    caplog.set_level(logging.DEBUG)
    sim, srv, url = start_sim(shared_data, start="2021-05-10T00:00:00", speed=30000)
    sim.faults.update(drop=1, rate_limit=3, reject=1)
    live_env(monkeypatch, url)
    errors = []
    try:
        run_live(_opts(max_bars=36))
        try:
            BybitBroker(KEY, "not-the-secret", base_url=url).balance()
        except AtsError as e:
            errors.append(repr(e) + str(e))
    finally:
        srv.shutdown()
    f = tmp_path / "default.env"
    f.write_text(f"BYBIT_API_KEY={KEY}\nBYBIT_API_SECRET={SECRET}\n")
    os.chmod(f, 0o644)
    monkeypatch.delenv("BYBIT_API_KEY")
    monkeypatch.delenv("BYBIT_API_SECRET")
    monkeypatch.setenv("ATS_SECRETS_DIR", str(tmp_path))
    with pytest.raises(UsageError) as e:
        venue_keys("bybit", "default")
    errors.append(str(e.value))
    assert "0644" in str(e.value)
    os.chmod(f, 0o600)
    assert venue_keys("bybit", "default") == (KEY, SECRET)
    out = capfd.readouterr()
    text = "\n".join([caplog.text, out.out, out.err, *errors])
    with psycopg.connect(fresh_db_url) as c:
        for table in ("system_events", "engine_runs", "order_executions", "live_sessions", "signals",
                      "blocked_signals"):
            text += "\n".join(str(r) for r in c.execute(f"SELECT * FROM {table}").fetchall())
    assert len(text) > 1000
    assert KEY not in text and SECRET not in text
