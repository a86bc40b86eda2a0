"""The live loop against the local Bybit simulator through pybit (accelerated venue clock, real PostgreSQL)."""

from __future__ import annotations


import psycopg
from psycopg.rows import dict_row

from _live_helpers import live_env, ms, start_sim

STRATS = ("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown")


def _opts(**kw):
    from ats.live.loop import LiveOptions

    base = dict(broker="bybit", symbols=("BTCUSDT",), timeframe="1h", strategies=STRATS,
                reconcile_every_min=360.0)
    base.update(kw)
    return LiveOptions(**base)


def _db(url):
    return psycopg.connect(url, row_factory=dict_row)


def test_loop_trades_simulated_bars(fresh_db_url, shared_data, monkeypatch):
    from ats.live.loop import run_live

    sim, srv, url = start_sim(shared_data, start="2021-05-10T00:00:00", speed=30000)
    live_env(monkeypatch, url)
    try:
        s = run_live(_opts(until_ms=ms("2021-05-17T00:00:00")))
    finally:
        srv.shutdown()
    st = sim.state()
    assert s["status"] == "completed" and s["bars"] >= 160
    with _db(fresh_db_url) as c:
        orders = c.execute("SELECT client_order_id, broker, status, filled_qty FROM order_executions WHERE run_id=%s",
                           (s["run_id"],)).fetchall()
        run = c.execute("SELECT mode FROM engine_runs WHERE run_id=%s", (s["run_id"],)).fetchone()
        ncandles = c.execute("SELECT count(*) AS n FROM candles WHERE source='bybit'").fetchone()["n"]
        ev = c.execute("SELECT payload FROM system_events WHERE event_type='reconciliation_mismatch'").fetchall()
    assert run["mode"] == "live" and ncandles > 300
    assert orders, "no order in a simulated week"
    venue_links = {o["orderLinkId"] for o in st["orders"]}
    assert {o["client_order_id"] for o in orders if o["status"] != "rejected"} <= venue_links
    assert len(venue_links) == len(st["orders"])  # never two venue orders for one id
    assert all(o["broker"] == "bybit" and len(o["client_order_id"]) <= 36 for o in orders)
    assert s["mismatches"] == 0, ev
