"""The live loop's Alpaca wiring: weekends/holidays are no feed anomaly (``expects_bar``), positions reconcile as
``equity`` (``category_for``), the Alpaca preflight rules, ``ats venue-sim alpaca`` from the CLI, and paper-live
recording the venue's price at decision time beside each paper order."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from _live_helpers import start_sim

KEY, SECRET = "PKWIRING-PLANTED-02", "wiringsecret-PLANTED-3c"
STRATS = ("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown")


def _q(url, sql, *args):
    with psycopg.connect(url, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def _alpaca_env(monkeypatch, sim):
    for k, v in {"ATS_ALPACA_BASE_URL": sim.url, "ATS_ALPACA_DATA_URL": sim.url, "ALPACA_API_KEY": KEY,
                 "ALPACA_SECRET_KEY": SECRET}.items():
        monkeypatch.setenv(k, v)


def test_weekends_are_not_missing_bars_and_equity_positions_reconcile(fresh_db_url, shared_data, monkeypatch):
    from ats.execution.venue_sim.alpaca import AlpacaSim, _parse_time, load_bars
    from ats.live.loop import LiveOptions, run_live

    sim = AlpacaSim([load_bars(shared_data / "equities" / "SPY_1d.csv")], KEY, SECRET,
                    start_ms=_parse_time("2008-09-01T00:00:10Z"), speed=150_000, cash_usd=10_000).start()
    _alpaca_env(monkeypatch, sim)
    try:   # 2008-09-01 is Labor Day; three weekends follow
        s = run_live(LiveOptions(broker="alpaca", symbols=("SPY",), timeframe="1d", strategies=STRATS,
                                 reconcile_every_min=60 * 24 * 2, until_ms=_parse_time("2008-09-24T00:00:00Z")))
    finally:
        sim.stop()
    assert 12 <= s["bars"] <= 16   # trading days only (16 from 09-02 to 09-23; the start bar depends on the clock)
    assert s["anomalies"] == 0
    assert not _q(fresh_db_url, "SELECT 1 FROM system_events WHERE event_type='feed_anomaly'")
    assert s["reconciliations"] >= 5 and s["mismatches"] == 0, \
        _q(fresh_db_url, "SELECT payload FROM system_events WHERE event_type='reconciliation_mismatch'")


def test_db_positions_use_the_adapters_category(fresh_db_url):
    from ats.execution.alpaca import AlpacaBroker
    from ats.live.reconcile import db_positions

    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        c.execute("""INSERT INTO engine_runs (run_id, account_id, mode, status, params)
                     VALUES ('r1', 'default', 'live', 'running', '{}')""")
        for sym, side in (("SPY", "long"), ("SPY261218P00450000", "short")):
            c.execute("""INSERT INTO positions (run_id, account_id, strategy_name, symbol, side, status, qty, entry_qty,
                                                avg_entry_price, opened_at)
                         VALUES ('r1', 'default', 's', %s, %s, 'open', 2, 2, 10, now())""", (sym, side))
        assert db_positions(c, "r1", AlpacaBroker) == {("SPY", "equity"): Decimal(2),
                                                       ("SPY261218P00450000", "option"): Decimal(-2)}
        assert db_positions(c, "r1") == {("SPY", "spot"): Decimal(2), ("SPY261218P00450000", "linear"): Decimal(-2)}


def _facts(**kw):
    from ats.execution.venue import PreflightFacts

    base = dict(venue="alpaca", endpoint="https://api.alpaca.markets", endpoint_kind="production",
                account_status="active", equity_usd=Decimal(50_000), buying_power_usd=Decimal(100_000),
                margin_multiplier=Decimal(2), shorting_enabled=True, key_permissions="trade", position_mode="one_way",
                checks={"pattern_day_trader": False, "trading_blocked": False})
    base.update(kw)
    return PreflightFacts(**base)


def test_alpaca_preflight_on_production_skips_key_checks_and_adds_venue_rules():
    from ats.live.preflight import failed_checks

    exp = {"min_equity_usd": 100.0, "key_permissions": "trade", "position_mode": "one_way",
           "require_shorting": True, "require_ip_binding": True, "min_days_to_expiry": 7}
    assert failed_checks(_facts(), exp) == []                           # no IP binding / expiry asked of Alpaca
    bad = failed_checks(_facts(equity_usd=Decimal(20_000),
                               checks={"pattern_day_trader": True, "trading_blocked": True}), exp)
    assert any("trading_blocked" in b for b in bad) and any("pattern day trader" in b for b in bad)
    bybit = failed_checks(_facts(venue="bybit"), exp)                  # Bybit keeps the key checks
    assert any("IP address" in b for b in bybit)


def test_venue_sim_alpaca_from_the_cli(shared_data):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET}
    p = subprocess.Popen([sys.executable, "-m", "ats.cli", "venue-sim", "alpaca", "--port", "0", "--candles",
                          str(shared_data / "equities" / "SPY_1d.csv"), "--speed", "1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert "alpaca simulator on http://127.0.0.1:" in line, (line, p.stderr.read() if p.poll() else "")
        url = line.split(" on ", 1)[1].split()[0]
        req = urllib.request.Request(f"{url}/v2/clock", headers={"APCA-API-KEY-ID": KEY,
                                                                 "APCA-API-SECRET-KEY": SECRET})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert b"timestamp" in r.read()
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_paper_live_records_the_venue_price_beside_each_paper_fill(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import LiveOptions, modelled_vs_venue, run_live

    sim, srv, url = start_sim(shared_data, start="2021-05-12T00:00:00", speed=40000)
    monkeypatch.setenv("ATS_BYBIT_BASE_URL", url)
    monkeypatch.delenv("BYBIT_API_KEY", raising=False)
    try:
        s = run_live(LiveOptions(broker="paper", symbols=("BTCUSDT",), timeframe="1h", strategies=STRATS,
                                 max_bars=72))
    finally:
        srv.shutdown()
    orders = _q(fresh_db_url, "SELECT client_order_id FROM order_executions WHERE run_id=%s", s["run_id"])
    quotes = _q(fresh_db_url, "SELECT * FROM paper_live_quotes WHERE run_id=%s", s["run_id"])
    assert orders, "no paper order in three simulated days"
    assert {q["client_order_id"] for q in quotes} == {o["client_order_id"] for o in orders}
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        rows = modelled_vs_venue(c, s["run_id"])
        candle = c.execute("""SELECT close::float8 AS c FROM candles WHERE symbol='BTCUSDT' AND timeframe='1h'
                              AND open_time = %s - interval '1 hour'""", (quotes[0]["decision_ts"],)).fetchone()
    assert rows and all(abs(r["diff_bps"]) < 500 for r in rows)
    assert float(quotes[0]["venue_price"]) == candle["c"]            # the venue's candle close at decision time
