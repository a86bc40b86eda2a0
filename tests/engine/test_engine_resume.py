"""Crash safety and exclusivity of heavy runs: a replay killed with SIGKILL resumes with no duplicate order, no
lost fill and positions equal to the sum of their fills; a second heavy run is refused as busy (advisory lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from _engine_helpers import ROOT, connect, engine_db, engine_template  # noqa: F401
from ats.engine.replay import run_replay
from ats.engine.runs import heavy_lock, make_spec
from ats.errors import BusyError
from conftest import run_cli

SYMS = "ADAUSDT,BTCUSDT,DOTUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
ARGS = ["engine", "replay", "--symbols", SYMS, "--start", "2020-12-01", "--end", "2021-07-18", "--commit-every", "8",
        "--no-progress", "--tag", "kill"]


def _orders(c, rid):
    return [(o["client_order_id"].replace(rid, "RUN")[:-9], o["status"], o["qty"], o["filled_qty"], o["avg_fill_price"],
             o["position_id"] is not None) for o in c.execute(
        "SELECT * FROM order_executions WHERE run_id=%s ORDER BY client_order_id", (rid,)).fetchall()]


def _fills(c, rid):
    return [(f["client_order_id"].replace(rid, "RUN")[:-9], f["fill_seq"], f["qty"], f["price"], f["fee_usd"], f["ts"])
            for f in c.execute("SELECT * FROM fills WHERE run_id=%s ORDER BY client_order_id, fill_seq", (rid,)).fetchall()]


def test_sigkill_mid_replay_then_restart_resumes_exactly(engine_db):
    env = {**os.environ, "ATS_DATABASE_URL": engine_db}
    proc = subprocess.Popen([sys.executable, "-m", "ats.cli", *ARGS], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rid = None
    deadline = time.monotonic() + 180
    with connect(engine_db) as c:
        c.autocommit = True
        while time.monotonic() < deadline and proc.poll() is None:
            row = c.execute("SELECT run_id, bars_processed FROM engine_runs WHERE params->>'tag'='kill'").fetchone()
            if row and row["bars_processed"] >= 6 * 1200:
                rid = row["run_id"]
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"replay ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.2)
        run = c.execute("SELECT * FROM engine_runs WHERE run_id=%s", (rid,)).fetchone()
        assert run["status"] == "running" and run["last_bar_time"].isoformat() < "2021-07-01"
        committed = c.execute("SELECT count(*) AS n FROM order_executions WHERE run_id=%s", (rid,)).fetchone()["n"]
        assert committed > 0
        # the checkpoint and the committed rows agree: every open position is in the checkpoint
        ck = run["checkpoint"]
        open_ids = {r["position_id"] for r in c.execute(
            "SELECT position_id FROM positions WHERE run_id=%s AND status='open'", (rid,)).fetchall()}
        assert open_ids == {p["position_id"] for p in ck["portfolio"]["positions"]}

    out = run_cli(*ARGS, env={"ATS_DATABASE_URL": engine_db})
    assert out.returncode == 0, out.stderr
    assert "resumed and completed" in out.stdout and rid in out.stdout

    with connect(engine_db) as c:  # what the CLI replays without --strategies: every configured strategy
        configured = [r["strategy_name"] for r in c.execute(
            "SELECT strategy_name FROM strategy_configurations WHERE account_id='default' ORDER BY 1").fetchall()]
    ref = run_replay(make_spec("replay", strategies=configured,
                               symbols=SYMS, timeframe="1h", start="2020-12-01", end="2021-07-18", tag="reference"),
                     url=engine_db)
    with connect(engine_db) as c:
        n, distinct = c.execute("SELECT count(*) AS n, count(DISTINCT client_order_id) AS d FROM order_executions "
                                "WHERE run_id=%s", (rid,)).fetchone().values()
        assert n == distinct and n > committed
        assert _orders(c, rid) == _orders(c, ref["run_id"])  # no duplicate, no missing order
        assert _fills(c, rid) == _fills(c, ref["run_id"])    # no lost fill
        # every filled order has fills summing to its filled quantity
        assert c.execute("""SELECT count(*) AS n FROM order_executions o LEFT JOIN
                              (SELECT order_id, sum(qty) AS q FROM fills GROUP BY 1) f USING (order_id)
                             WHERE o.run_id=%s AND o.status IN ('filled','partially_filled')
                               AND (f.q IS NULL OR f.q <> o.filled_qty)""", (rid,)).fetchone()["n"] == 0
        # positions equal the sum of their fills
        assert c.execute("""WITH f AS (SELECT o.position_id,
                                   sum(f.qty) FILTER (WHERE o.intent IN ('open','add')) AS inq,
                                   coalesce(sum(f.qty) FILTER (WHERE o.intent='close'), 0) AS outq
                              FROM fills f JOIN order_executions o USING (order_id) WHERE f.run_id=%(r)s GROUP BY 1)
                          SELECT count(*) AS n FROM positions p LEFT JOIN f USING (position_id) WHERE p.run_id=%(r)s
                             AND (f.inq IS NULL OR abs(p.entry_qty - f.inq) > 1e-12 * f.inq
                                  OR abs(p.qty - (f.inq - f.outq)) > 1e-12 * f.inq)""", {"r": rid}).fetchone()["n"] == 0
        snaps = [c.execute("SELECT count(*) AS n, sum(equity_usd) AS s FROM portfolio_hourly_snapshots WHERE run_id=%s",
                           (r,)).fetchone() for r in (rid, ref["run_id"])]
        assert snaps[0] == snaps[1]
        run = c.execute("SELECT status, bars_processed FROM engine_runs WHERE run_id=%s", (rid,)).fetchone()
        assert run["status"] == "completed" and run["bars_processed"] == 6 * 5482
        assert c.execute("SELECT count(*) AS n FROM system_events WHERE event_type='run_resumed' AND "
                         "payload->>'run_id'=%s", (rid,)).fetchone()["n"] == 1


def test_second_heavy_run_is_refused_busy(engine_db):
    from ats.engine.backtest import run_backtest

    args = ["engine", "replay", "--symbols", "BTCUSDT", "--strategies", "momentum", "--start", "2021-01-01",
            "--end", "2021-01-10", "--no-progress"]
    with heavy_lock(engine_db, what="test-holder"):
        out = run_cli(*args, env={"ATS_DATABASE_URL": engine_db})
        assert out.returncode == 1
        assert out.stderr.startswith("ats: busy:") and "ats-heavy:test-holder" in out.stderr
        spec = make_spec("backtest", strategies=["momentum"], symbols=["BTCUSDT"], timeframe="1h",
                         start="2021-01-01", end="2021-01-10")
        with pytest.raises(BusyError, match="busy"):
            run_backtest(spec, url=engine_db)
        with connect(engine_db) as c:  # nothing was queued or half-created
            assert c.execute("SELECT count(*) AS n FROM engine_runs").fetchone()["n"] == 0
    out = run_cli(*args, env={"ATS_DATABASE_URL": engine_db})
    assert out.returncode == 0, out.stderr
