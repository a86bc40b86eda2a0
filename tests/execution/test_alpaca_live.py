"""The live loop (``ats.live.loop``) driving AlpacaBroker through alpaca-py against the Alpaca simulator: SPY daily
bars on an accelerated venue clock, stopped after 10 bars and resumed (``--max-bars``); every order at the venue exactly once, the
venue's position equal to the database's (plus fills executed but not yet reported), no planted key anywhere.

Skipped where ``ats.live`` is not installed (it is built on the ``bybit`` branch).
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

loop = pytest.importorskip("ats.live.loop")

from ats.execution.alpaca import AlpacaBroker, venue_client_id  # noqa: E402
from ats.execution.broker import Order, run_tag  # noqa: E402
from ats.execution.venue_sim.alpaca import AlpacaSim, _parse_time, load_bars  # noqa: E402

KEY, SECRET = "PKLIVETEST-PLANTED-01", "livesecret-PLANTED-77aa"
STRATS = ("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown")


def _run(until: str, max_bars: int | None = None):
    return loop.run_live(loop.LiveOptions(broker="alpaca", symbols=("SPY",), timeframe="1d", strategies=STRATS,
                                          reconcile_every_min=60 * 24 * 3, until_ms=_parse_time(until),
                                          max_bars=max_bars))


def test_loop_trades_spy_on_the_alpaca_simulator_and_resumes(fresh_db_url, shared_data, monkeypatch):
    sim = AlpacaSim([load_bars(shared_data / "equities" / "SPY_1d.csv")], KEY, SECRET,
                    start_ms=_parse_time("2008-09-01T00:00:10Z"), speed=150_000, cash_usd=10_000).start()
    for k, v in {"ATS_ALPACA_BASE_URL": sim.url, "ATS_ALPACA_DATA_URL": sim.url, "ALPACA_API_KEY": KEY,
                 "ALPACA_SECRET_KEY": SECRET}.items():
        monkeypatch.setenv(k, v)
    try:
        first = _run("2008-10-08T00:00:00Z", max_bars=10)   # stops after 10 bars, orders in flight
        second = _run("2008-10-08T00:00:00Z")               # the same command again: resumes the same run
        sim.pause()
    except BaseException:
        sim.stop()
        raise
    assert first["run_id"] == second["run_id"] and second["status"] == "completed"
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        orders = c.execute("SELECT client_order_id, broker, status, intent, filled_qty FROM order_executions "
                           "WHERE run_id=%s", (first["run_id"],)).fetchall()
        pos = c.execute("SELECT side, qty FROM positions WHERE run_id=%s AND status='open'",
                        (first["run_id"],)).fetchall()
        events = c.execute("SELECT payload::text AS p FROM system_events").fetchall()
        booked = {r["client_order_id"]: r["n"] for r in c.execute(
            "SELECT client_order_id, count(*) AS n FROM fills WHERE run_id=%s GROUP BY 1", (first["run_id"],))}
        ckpt = c.execute("SELECT checkpoint FROM engine_runs WHERE run_id=%s", (first["run_id"],)).fetchone()
        ckpt = ckpt["checkpoint"] if ckpt else None
    assert orders, "no order in five simulated weeks"
    assert all(o["broker"] == "alpaca" for o in orders)
    placed = [o for o in sim.orders if o.source == "order"]
    venue = {o.client_order_id: o for o in placed}
    assert len(venue) == len(placed)                                   # never two venue orders for one id
    entries = [o for o in orders if o["intent"] != "close" and o["status"] != "rejected"]
    assert {venue_client_id(o["client_order_id"]) for o in entries} == set(venue)
    for o in entries:                                       # what the database says was filled, the venue filled
        if o["status"] in ("filled", "partially_filled"):
            assert Decimal(str(venue[venue_client_id(o["client_order_id"])].filled_qty)) == o["filled_qty"]
    closes = [o for o in orders if o["intent"] == "close" and o["status"] != "rejected"]
    assert len([o for o in sim.orders if o.source == "close_position"]) == len(closes)   # one close each
    # the venue's position = the database's + what executed at the venue but is not reported yet (in flight)
    b = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id=first["run_id"])
    b.restore([Order.from_dict(d) for d in (ckpt or {}).get("pending_orders", [])])
    try:
        flight = b.in_flight(f"{run_tag(first['run_id'])}-", booked, 0)
    finally:
        sim.stop()
    db_qty = sum(Decimal(str(p["qty"])) * (1 if p["side"] == "long" else -1) for p in pos)
    venue_qty = Decimal(str(sim.positions.get("SPY", {}).get("qty", 0)))
    assert abs(venue_qty - db_qty - flight.get(("SPY", "equity"), Decimal(0))) < Decimal("1e-6")
    blob = " ".join(e["p"] for e in events) + repr(first) + repr(second)
    assert KEY not in blob and SECRET not in blob
