"""One iron condor through the live loop against the local Alpaca simulator (SPY daily bars, July 2013: realised
volatility falls under 16 % on 2013-07-16): the same decision path as every entry, ONE MLEG order with four legs
chosen from the venue's option chain, sized by its max loss, recorded with its legs, valued at the legs' mid, and
closed through ``close_position`` per leg; an MLEG order the venue rejects leaves no position; a multi-leg strategy
on a broker without MLEG orders is blocked (``risk:multi_leg``)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

KEY, SECRET = "PKCONDOR-PLANTED-71", "condorsecret-PLANTED-a4"
START = "2013-07-12T00:00:10Z"
PARAMS = {"max_hold_hours": 10 * 24, "cooldown_min": 60 * 1440}   # exit by max hold at the latest; one condor


def _q(url, sql, *args):
    with psycopg.connect(url, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def _configure(url):
    from ats.db import config_store as cs
    from ats.strategies import default_params

    with psycopg.connect(url, row_factory=dict_row) as c:
        cs.upsert_strategy(c, "iron_condor", params={**default_params("iron_condor"), **PARAMS},
                           effective_from=__import__("datetime").datetime(1970, 1, 1, tzinfo=__import__(
                               "datetime").timezone.utc), watchlist_enabled=True, buy_enabled=True,
                           sell_enabled=True)
        c.commit()


def _live(monkeypatch, shared_data, until, **sim_kw):
    from ats.execution.venue_sim.alpaca import AlpacaSim, _parse_time, load_bars
    from ats.live.loop import LiveOptions, run_live

    sim = AlpacaSim([load_bars(shared_data / "equities" / "SPY_1d.csv")], KEY, SECRET, start_ms=_parse_time(START),
                    speed=150_000, cash_usd=10_000, **sim_kw).start()
    for k, v in {"ATS_ALPACA_BASE_URL": sim.url, "ATS_ALPACA_DATA_URL": sim.url, "ALPACA_API_KEY": KEY,
                 "ALPACA_SECRET_KEY": SECRET}.items():
        monkeypatch.setenv(k, v)
    return sim, lambda: run_live(LiveOptions(broker="alpaca", symbols=("SPY",), timeframe="1d",
                                             strategies=("iron_condor",), reconcile_every_min=60 * 24,
                                             until_ms=_parse_time(until)))


def test_one_iron_condor_through_the_live_loop(fresh_db_url, shared_data, monkeypatch):
    _configure(fresh_db_url)
    sim, run = _live(monkeypatch, shared_data, "2013-08-06T00:00:00Z")
    try:
        s = run()
        sim.pause()
    finally:
        sim.stop()
    rid = s["run_id"]
    assert s["status"] == "completed" and s["mismatches"] == 0, \
        _q(fresh_db_url, "SELECT payload FROM system_events WHERE event_type='reconciliation_mismatch'")
    # the venue: exactly one MLEG order with four legs, then one close_position order per leg, nothing else
    mleg = [o for o in sim.orders if o.order_class == "mleg"]
    assert len(mleg) == 1 and len(mleg[0].legs) == 4 and mleg[0].status == "filled"
    legs = {lg.symbol: lg.side for lg in mleg[0].legs}
    closes = [o for o in sim.orders if o.source == "close_position"]
    assert sorted(o.symbol for o in closes) == sorted(legs) and all(o.status == "filled" for o in closes)
    assert all(o.side != legs[o.symbol] for o in closes)                  # each leg bought back / sold out
    assert len(sim.orders) == 5 and sim.positions == {}
    # the database: the open order (the MLEG's client_order_id, its legs), the close, both fills, one position
    orders = _q(fresh_db_url, """SELECT client_order_id, intent, side, status, qty::float8 AS qty,
                                        avg_fill_price::float8 AS px, context FROM order_executions
                                 WHERE run_id=%s ORDER BY submitted_at""", rid)
    assert [(o["intent"], o["side"], o["status"]) for o in orders] == [("open", "sell", "filled"),
                                                                      ("close", "buy", "filled")]
    op, cl = orders
    n = mleg[0].qty
    assert op["client_order_id"] == mleg[0].client_order_id and op["qty"] == n == cl["qty"]
    st = op["context"]["structure"]
    assert st["name"] == "iron_condor" and {lg["symbol"]: lg["side"] for lg in st["legs"]} == legs
    assert [f["symbol"] for f in op["context"]["leg_fills"]] == [lg.symbol for lg in mleg[0].legs]
    assert cl["context"]["structure"] == st                               # closed leg by leg, never re-built
    assert op["px"] == pytest.approx(-mleg[0].filled_avg_price * 100)    # USD per condor = the venue's net credit
    plan = op["context"]["plan"]
    k1, k2, k3, k4 = plan["strikes"]
    assert k1 < k2 < k3 < k4 and plan["max_loss_usd"] > 0
    sizing = op["context"]["sizing"]
    assert n == min(int(sizing["notional_usd"] // plan["max_loss_usd"]), 10) >= 1   # sized by max loss
    pos = _q(fresh_db_url, "SELECT * FROM positions WHERE run_id=%s", rid)
    assert len(pos) == 1 and pos[0]["status"] == "closed" and pos[0]["side"] == "short"
    assert pos[0]["context"]["structure"] == st and pos[0]["close_reason"] in ("tp", "sl", "max_hold", "expiry",
                                                                                "signal")
    fills = _q(fresh_db_url, "SELECT client_order_id, qty, price FROM fills WHERE run_id=%s ORDER BY ts", rid)
    assert [f["client_order_id"] for f in fills] == [op["client_order_id"], cl["client_order_id"]]
    credit, debit = (float(f["price"]) for f in fills)
    assert float(pos[0]["realized_pnl_usd"]) == pytest.approx((credit - debit) * n)
    venue_pnl = sim.cash - 10_000                                      # the venue's cash moved by the same amount
    assert venue_pnl == pytest.approx((credit - debit) * n, abs=1e-6)
    evals = _q(fresh_db_url, "SELECT decision, price FROM position_evaluations WHERE run_id=%s ORDER BY ts", rid)
    assert evals and evals[-1]["decision"].startswith("exit_") and all(e["price"] > 0 for e in evals)
    blocked = _q(fresh_db_url, "SELECT gate FROM blocked_signals WHERE run_id=%s", rid)
    assert {b["gate"] for b in blocked} <= {"risk:open_structure", "cooldown"}


def test_mleg_rejected_by_the_venue_leaves_no_position(fresh_db_url, shared_data, monkeypatch):
    _configure(fresh_db_url)
    sim, run = _live(monkeypatch, shared_data, "2013-07-20T00:00:00Z")
    sim.faults.reject_next_mleg = "insufficient options buying power"
    try:
        s = run()
        sim.pause()
    finally:
        sim.stop()
    mleg = [o for o in sim.orders if o.order_class == "mleg"]
    assert len(mleg) == 1 and mleg[0].status == "rejected" and sim.positions == {}
    rid = s["run_id"]
    orders = _q(fresh_db_url, "SELECT status FROM order_executions WHERE run_id=%s", rid)
    assert [o["status"] for o in orders] == ["rejected"]
    assert _q(fresh_db_url, "SELECT 1 FROM positions WHERE run_id=%s", rid) == []
    assert _q(fresh_db_url, "SELECT 1 FROM fills WHERE run_id=%s", rid) == []
    assert s["mismatches"] == 0
    assert Decimal(str(sim.cash)) == Decimal(10_000)
