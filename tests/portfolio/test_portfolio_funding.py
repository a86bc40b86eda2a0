"""Funding of linear-perp shorts (ats.portfolio.funding): a short held across funding times pays/receives
qty x mark x rate at 00:00, 08:00 and 16:00 UTC, in its P&L, in the funding_payments ledger and in the hourly
snapshots; without a funding_rates row the documented fallback applies and says so; the quiet-span fast path
pays exactly what the step-by-step path pays."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

import pytest

from _engine_helpers import connect, engine_db, engine_template, raw_by_time  # noqa: F401
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.market_data import microstructure as ms
from ats.portfolio.funding import funding_times

H = 3600
START, END = "2021-05-10", "2021-07-01"
SHORTS = ["mean_reversion_short", "trend_breakdown"]


def _rates(t0: int, t1: int) -> dict[int, str]:
    """A funding rate per funding time, positive and negative (longs pay shorts when positive)."""
    return {t: ("0.0004", "-0.0002", "0.0001", "-0.0006", "0.00025")[(t // (8 * H)) % 5]
            for t in range(t0, t1, 8 * H)}


def _load_eth_funding(url) -> dict[int, float]:
    t0 = int(datetime.fromisoformat(START).replace(tzinfo=timezone.utc).timestamp())
    t1 = int(datetime.fromisoformat(END).replace(tzinfo=timezone.utc).timestamp())
    rates = _rates(t0, t1)
    rows = [{"symbol": "ETHUSDT", "fundingRate": r, "fundingRateTimestamp": str(t * 1000)}
            for t, r in sorted(rates.items(), reverse=True)]
    with connect(url) as c:
        ms.load_payload(c, "funding", {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows}})
    return {t: float(r) for t, r in rates.items()}


def test_funding_times():
    assert funding_times(0, 8 * H) == [8 * H]
    assert funding_times(8 * H, 9 * H) == []
    assert funding_times(7 * H, 25 * H) == [8 * H, 16 * H, 24 * H]


def test_short_held_across_funding_times_has_the_funding_in_its_pnl(engine_db):
    rates = _load_eth_funding(engine_db)
    res = run_replay(make_spec("replay", strategies=SHORTS, symbols=["ETHUSDT", "SOLUSDT"], timeframe="1h",
                               start=START, end=END, tag="funding"), url=engine_db)
    rid = res["run_id"]
    eth = raw_by_time("ETH")
    with connect(engine_db) as c:
        pays = c.execute("SELECT * FROM funding_payments WHERE run_id=%s ORDER BY ts, funding_id", (rid,)).fetchall()
        pos = {p["position_id"]: p for p in c.execute("SELECT * FROM positions WHERE run_id=%s", (rid,)).fetchall()}
        last = c.execute("SELECT * FROM portfolio_hourly_snapshots WHERE run_id=%s ORDER BY ts DESC LIMIT 1",
                         (rid,)).fetchone()
    assert {p["symbol"] for p in pays} == {"ETHUSDT", "SOLUSDT"}
    by_pos = defaultdict(list)
    for f in pays:
        ts = int(f["ts"].timestamp())
        p = pos[f["position_id"]]
        assert ts % (8 * H) == 0 and p["side"] == "short" == f["side"]
        # held at F: a fill at F (the open of the bar starting then) comes just after the settlement
        assert p["opened_at"] < f["ts"] and (p["closed_at"] is None or f["ts"] <= p["closed_at"])
        assert 0 < float(f["qty"]) <= float(p["entry_qty"]) * (1 + 1e-12)
        if f["symbol"] == "ETHUSDT":  # the loaded rate of that funding time, the close of the bar ending then
            assert f["rate_source"] == "funding_rates" and float(f["funding_rate"]) == rates[ts]
            assert float(f["mark_price"]) == eth[ts - H][4]
            assert float(f["cost_usd"]) == pytest.approx(-float(f["qty"]) * eth[ts - H][4] * rates[ts], rel=1e-12)
        else:  # no funding data for SOL: the fallback (0 bps by default) and the note in the ledger
            assert f["rate_source"] == "fallback" and float(f["funding_rate"]) == 0 and float(f["cost_usd"]) == 0
        by_pos[f["position_id"]].append(float(f["cost_usd"]))
    eth_closed = [p for pid, p in pos.items() if p["symbol"] == "ETHUSDT" and p["status"] == "closed" and pid in by_pos]
    assert any(len(by_pos[p["position_id"]]) >= 2 and abs(sum(by_pos[p["position_id"]])) > 0.01 for p in eth_closed)
    for p in eth_closed:  # the trade's P&L = price move - fees - funding paid
        paid = sum(by_pos[p["position_id"]])
        assert p["context"]["funding_usd"] == pytest.approx(paid, abs=1e-9)
        move = (float(p["avg_entry_price"]) - float(p["avg_exit_price"])) * float(p["entry_qty"])
        assert float(p["realized_pnl_usd"]) == pytest.approx(move - float(p["fees_usd"]) - paid, abs=1e-6)
    # the snapshots carry it: realized = every position's realized (funding of open ones included), and
    # equity = start + realized + unrealized
    assert float(last["realized_pnl_usd"]) == pytest.approx(sum(float(p["realized_pnl_usd"]) for p in pos.values()),
                                                             abs=1e-6)
    assert float(last["equity_usd"]) == pytest.approx(
        10_000 + float(last["realized_pnl_usd"]) + float(last["unrealized_pnl_usd"]), abs=1e-6)
    assert res["funding"]["payments"] == len(pays) and res["funding"]["fallback"] == sum(
        f["rate_source"] == "fallback" for f in pays)
    assert res["funding"]["cost_usd"] == pytest.approx(sum(float(f["cost_usd"]) for f in pays), abs=1e-6)


def test_fast_path_pays_the_same_funding_as_the_step_path(engine_db):
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import resolve
    from ats.engine.sink import MemorySink

    _load_eth_funding(engine_db)
    out = {}
    with connect(engine_db) as c:
        for fast in (False, True):
            spec = resolve(c, make_spec("replay", strategies=SHORTS, symbols=["ETHUSDT", "SOLUSDT"], timeframe="1h",
                                        start=START, end=END, tag="fp"))
            feed = ReplayFeed.load(c, spec.symbols, "1h", spec.start, spec.end)
            sink = MemorySink(spec.run_id, spec.account_id)
            eng = Engine(c, spec, sink=sink, feed=feed, fast=fast)
            eng.run()
            out[fast] = (eng, sink)
        c.rollback()
    (ref, rs), (got, gs) = out[False], out[True]
    assert rs.rows["funding_payments"] and gs.rows["funding_payments"] == rs.rows["funding_payments"]
    assert got.bulk_steps > 0 and got.checkpoint() == ref.checkpoint()
    assert gs.rows["portfolio_hourly_snapshots"] == rs.rows["portfolio_hourly_snapshots"]
