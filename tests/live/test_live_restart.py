"""kill -9 of a real `ats live run --broker bybit` subprocess, then the same command: no duplicate order, no lost
fill, and the same outcome as an uninterrupted run (venue clock paused while the process is dead)."""

from __future__ import annotations

import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from _live_helpers import KEY, SECRET, live_session, sim_control, start_live, start_sim

ROOT = Path(__file__).resolve().parents[2]
STRATS = "btc_trend,mean_reversion_short,momentum,trend_breakdown"
UNTIL = "2021-05-18T00:00:00"  # a simulated week from 2021-05-11


def _cmd(tag):
    return [sys.executable, "-m", "ats.cli", "live", "run", "--account", "default", "--broker", "bybit",
            "--symbols", "BTCUSDT", "--timeframe", "1h", "--strategies", STRATS, "--until", UNTIL, "--no-progress",
            "--reconcile-every", "360", "--tag", tag]


def _env(db_url, url):
    e = dict(os.environ)
    e.update(ATS_DATABASE_URL=db_url, ATS_BYBIT_BASE_URL=url, BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET,
             PYTHONPATH=f"{ROOT / 'services'}:{ROOT}")
    return e


def _start(db_url, url, tag, log):
    return start_live(_cmd(tag), _env(db_url, url), db_url, log, cwd=ROOT)


def _outcome(db_url, run_id):
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        orders = c.execute("""SELECT strategy_name, intent, side, submitted_at, status, filled_qty::float8 AS q,
                                     client_order_id FROM order_executions WHERE run_id=%s
                               ORDER BY submitted_at, strategy_name, intent""", (run_id,)).fetchall()
        fills = c.execute("SELECT client_order_id, qty::float8 AS q FROM fills WHERE run_id=%s", (run_id,)).fetchall()
        pos = c.execute("""SELECT symbol, side, qty::float8 AS q FROM positions WHERE run_id=%s AND status='open'""",
                        (run_id,)).fetchall()
    return orders, fills, pos


def _run(db_url, shared_data, tmp_path, tag, kill: bool):
    sim, srv, url = start_sim(shared_data, start="2021-05-11T00:00:00", speed=8000, paused=True)
    log = open(tmp_path / f"{tag}.log", "w")
    try:
        p = _start(db_url, url, tag, log)
        sim_control(url, pause=False)
        if kill:
            mid = None
            while p.poll() is None:
                n = len(sim.state()["orders"])
                st = sim.state()
                if mid is None and st["now_ms"] > sim.start_ms + 84 * 3600_000:
                    mid = n
                if mid is not None and n > mid:  # an order just accepted: kill before its checkpoint
                    sim_control(url, pause=True)
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
                    break
                time.sleep(0.002)
            assert mid is not None, "the run ended before the kill point"
            p = _start(db_url, url, tag, log)
            sim_control(url, pause=False)
        assert p.wait(timeout=300) == 0, Path(log.name).read_text()[-3000:]
        return sim.state(), live_session(db_url)["run_id"]
    finally:
        srv.shutdown()
        log.close()


def test_kill_9_and_resume_changes_nothing(fresh_db_url, shared_data, tmp_path):
    st_a, rid_a = _run(fresh_db_url, shared_data, tmp_path, "a", kill=False)
    st_b, rid_b = _run(fresh_db_url, shared_data, tmp_path, "b", kill=True)
    oa, fa, pa = _outcome(fresh_db_url, rid_a)
    ob, fb, pb = _outcome(fresh_db_url, rid_b)
    assert oa, "no order in the uninterrupted run"
    key = lambda o: (o["strategy_name"], o["intent"], o["side"], o["submitted_at"], o["status"])  # noqa: E731
    assert [key(o) for o in ob] == [key(o) for o in oa]
    assert [round(o["q"], 9) for o in ob] == [round(o["q"], 9) for o in oa]
    assert [(p["symbol"], p["side"], round(p["q"], 9)) for p in pb] == [(p["symbol"], p["side"], round(p["q"], 9))
                                                                       for p in pa]
    # the venue: one order per orderLinkId, each = a database client_order_id, every execution in the fills
    links = [o["orderLinkId"] for o in st_b["orders"]]
    assert len(links) == len(set(links))
    assert set(links) == {o["client_order_id"] for o in ob if o["status"] != "rejected"}
    venue_qty = sum(Decimal(e["execQty"]) for e in st_b["executions"])
    assert len(st_b["executions"]) == len(fb)
    assert venue_qty > 0
    assert st_b["linear"]["size"] == st_a["linear"]["size"]
    assert abs(Decimal(st_b["wallet"]["BTC"]) - Decimal(st_a["wallet"]["BTC"])) < Decimal("1e-9")
