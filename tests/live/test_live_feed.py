"""A missing bar in the venue's feed (a real exchange outage in the candles) is a feed anomaly: system event and
the feed-anomaly breaker halts entries for the symbol; paper on live data is a `paper-live` run."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from _live_helpers import live_env, start_sim


def _q(url, sql, *args):
    with psycopg.connect(url, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def test_missing_bar_is_a_feed_anomaly(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import LiveOptions, run_live

    # BTC_USDT-1h has no candles for 2021-04-20 02:00 and 03:00 (exchange outage)
    import threading

    sim, srv, url = start_sim(shared_data, start="2021-04-19T22:00:00", speed=20000, paused=True)
    live_env(monkeypatch, url)
    threading.Timer(1.0, sim.pause, args=(False,)).start()  # the loop reads the (paused) clock first
    try:
        s = run_live(LiveOptions(broker="bybit", symbols=("BTCUSDT",), timeframe="1h", strategies=("momentum",),
                                 max_bars=8, reconcile_every_min=360.0))
    finally:
        srv.shutdown()
    ev = _q(fresh_db_url, """SELECT symbol, payload FROM system_events WHERE event_type='feed_anomaly'
                              ORDER BY ts""")
    assert [e["payload"]["open_time"][:16] for e in ev] == ["2021-04-20T02:00", "2021-04-20T03:00"]
    assert all(e["symbol"] == "BTCUSDT" and e["payload"]["kind"] == "missing" for e in ev)
    trips = _q(fresh_db_url, """SELECT symbol FROM system_events WHERE event_type='breaker_tripped'
                                 AND payload->>'breaker'='feed_anomaly'""")
    assert [t["symbol"] for t in trips] == ["BTCUSDT"]
    assert s["anomalies"] == 2


def test_paper_on_live_data(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import LiveOptions, run_live

    sim, srv, url = start_sim(shared_data, start="2021-05-12T00:00:00", speed=30000)
    monkeypatch.setenv("ATS_BYBIT_BASE_URL", url)  # public market data only: no key needed
    monkeypatch.delenv("BYBIT_API_KEY", raising=False)
    try:
        s = run_live(LiveOptions(broker="paper", symbols=("BTCUSDT",), timeframe="1h",
                                 strategies=("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown"),
                                 max_bars=36))
    finally:
        srv.shutdown()
    assert s["mode"] == "paper-live" and s["bars"] == 36
    assert _q(fresh_db_url, "SELECT mode FROM engine_runs")[0]["mode"] == "paper-live"
    assert not sim.orders  # the paper broker never reaches the venue
    assert {r["broker"] for r in _q(fresh_db_url, "SELECT broker FROM order_executions")} <= {"paper"}
