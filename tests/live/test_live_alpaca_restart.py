"""kill -9 of a real `ats live run --broker alpaca` subprocess trading SPY daily bars against the local Alpaca
simulator, then the same command: no duplicate order, no lost fill, the same outcome as an uninterrupted run, and
the venue's SPY position equal to the database's (venue clock paused while the process is dead)."""

from __future__ import annotations

import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from _live_helpers import live_session, start_live

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "PKRESTART-PLANTED-5e1f", "restartsecret-PLANTED-0b9c"
STRATS = "btc_trend,mean_reversion_short,momentum,trend_breakdown"
START, UNTIL = "2008-09-01T00:00:10Z", "2008-10-15T00:00:00Z"   # the autumn 2008 crash: shorts and longs trade
SPEED = 120_000.0                                                 # a trading day in about 0.7 s


def _cmd(tag):
    return [sys.executable, "-m", "ats.cli", "live", "run", "--account", "default", "--broker", "alpaca",
            "--symbols", "SPY", "--timeframe", "1d", "--strategies", STRATS, "--until", UNTIL, "--no-progress",
            "--reconcile-every", str(60 * 24 * 3), "--tag", tag]


def _env(db_url, url):
    e = dict(os.environ)
    e.update(ATS_DATABASE_URL=db_url, ATS_ALPACA_BASE_URL=url, ATS_ALPACA_DATA_URL=url, ALPACA_API_KEY=KEY,
             ALPACA_SECRET_KEY=SECRET, PYTHONPATH=f"{ROOT / 'services'}:{ROOT}")
    return e


def _start(db_url, url, tag, log):
    return start_live(_cmd(tag), _env(db_url, url), db_url, log, cwd=ROOT)


def _outcome(db_url, run_id):
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        orders = c.execute("""SELECT strategy_name, intent, side, submitted_at, status, filled_qty::float8 AS q,
                                     client_order_id FROM order_executions WHERE run_id=%s
                               ORDER BY submitted_at, strategy_name, intent""", (run_id,)).fetchall()
        fills = c.execute("SELECT client_order_id, fill_seq, qty::float8 AS q, price::float8 AS p FROM fills "
                          "WHERE run_id=%s ORDER BY client_order_id, fill_seq", (run_id,)).fetchall()
        pos = c.execute("""SELECT strategy_name, side, qty::float8 AS q FROM positions WHERE run_id=%s
                           AND status='open' ORDER BY strategy_name""", (run_id,)).fetchall()
        ckpt = c.execute("SELECT checkpoint FROM engine_runs WHERE run_id=%s", (run_id,)).fetchone()["checkpoint"]
    booked = {}
    for f in fills:
        booked[f["client_order_id"]] = booked.get(f["client_order_id"], 0) + 1
    return orders, fills, pos, (ckpt, booked)


def _run(db_url, shared_data, tmp_path, tag, kill: bool):
    from ats.execution.venue_sim.alpaca import AlpacaSim, _parse_time, load_bars

    sim = AlpacaSim([load_bars(shared_data / "equities" / "SPY_1d.csv")], KEY, SECRET, start_ms=_parse_time(START),
                    speed=SPEED, cash_usd=10_000).start()
    sim.pause()
    log = open(tmp_path / f"{tag}.log", "w")
    killed_at = None
    try:
        p = _start(db_url, sim.url, tag, log)
        sim.resume(SPEED)
        if kill:
            mid_ms = _parse_time("2008-09-22T00:00:00Z")
            mid = None
            while p.poll() is None:
                n = len(sim.orders)
                if mid is None and sim.now_ms() > mid_ms:
                    mid = n
                if mid is not None and n > mid:  # an order just accepted by the venue: kill before its checkpoint
                    sim.pause()
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
                    killed_at = (sim.now_ms(), n)
                    break
                time.sleep(0.002)
            assert killed_at is not None, "the run ended before the kill point"
            p = _start(db_url, sim.url, tag, log)   # the same command again
            sim.resume(SPEED)
        assert p.wait(timeout=600) == 0, Path(log.name).read_text()[-3000:]
        sim.pause()
        return sim, live_session(db_url)["run_id"], killed_at
    finally:
        sim.stop()
        log.close()


def _venue_minus_db(sim, run_id, pos, state):
    """The venue's signed SPY position minus the database's open positions and what executed at the venue but is
    not reported to the engine yet (orders decided at the last bar)."""
    from ats.execution.alpaca import AlpacaBroker
    from ats.execution.broker import Order, run_tag

    ckpt, booked = state
    sim.start()
    try:
        b = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id=run_id)
        b.restore([Order.from_dict(d) for d in (ckpt or {}).get("pending_orders", [])])
        flight = b.in_flight(f"{run_tag(run_id)}-", booked, 0).get(("SPY", "equity"), Decimal(0))
    finally:
        sim.stop()
    db = sum(Decimal(str(p["q"])) * (1 if p["side"] == "long" else -1) for p in pos)
    return Decimal(str(sim.positions.get("SPY", {}).get("qty", 0))) - db - flight


def test_alpaca_kill_9_and_resume_changes_nothing(fresh_db_url, shared_data, tmp_path):
    sim_a, rid_a, _ = _run(fresh_db_url, shared_data, tmp_path, "a", kill=False)
    sim_b, rid_b, killed = _run(fresh_db_url, shared_data, tmp_path, "b", kill=True)
    oa, fa, pa, ca = _outcome(fresh_db_url, rid_a)
    ob, fb, pb, cb = _outcome(fresh_db_url, rid_b)
    assert oa, "no order in the uninterrupted run"
    assert killed is not None
    assert len(sim_b.orders) > killed[1], "nothing at the venue after the restart"
    key = lambda o: (o["strategy_name"], o["intent"], o["side"], o["submitted_at"], o["status"])  # noqa: E731
    assert [key(o) for o in ob] == [key(o) for o in oa]
    assert [round(o["q"], 9) for o in ob] == [round(o["q"], 9) for o in oa]
    assert [(f["q"], f["p"]) for f in fb] == [(f["q"], f["p"]) for f in fa]          # no lost or doubled fill
    assert [(p["strategy_name"], p["side"], p["q"]) for p in pb] == [(p["strategy_name"], p["side"], p["q"])
                                                                      for p in pa]
    # the venue: one order per client_order_id, each = a database client_order_id (ours are <= 48 characters)
    placed = [o for o in sim_b.orders if o.source == "order"]
    cids = [o.client_order_id for o in placed]
    assert len(cids) == len(set(cids))
    assert set(cids) == {o["client_order_id"] for o in ob if o["intent"] != "close" and o["status"] != "rejected"}
    closes = [o for o in ob if o["intent"] == "close" and o["status"] != "rejected"]
    assert len([o for o in sim_b.orders if o.source == "close_position"]) == len(closes)   # one close each
    assert [(o.client_order_id[9:23], o.side, o.qty, o.filled_qty) for o in sim_b.orders if o.source == "order"] \
        == [(o.client_order_id[9:23], o.side, o.qty, o.filled_qty) for o in sim_a.orders if o.source == "order"]
    assert sim_b.positions.get("SPY") == sim_a.positions.get("SPY")
    assert abs(sim_b.cash - sim_a.cash) < 1e-6
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        bad = c.execute("""SELECT payload FROM system_events WHERE event_type='reconciliation_mismatch'
                           AND payload->>'run_id' IN (%s, %s)""", (rid_a, rid_b)).fetchall()
    assert bad == []          # the order sent before the kill was in flight, not a difference
    assert _venue_minus_db(sim_b, rid_b, pb, cb) == 0
    assert _venue_minus_db(sim_a, rid_a, pa, ca) == 0
