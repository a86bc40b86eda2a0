"""`ats backtest run/show/list/compare` on real candles: the backtest_* tables, the summary, walk-forward
out-of-sample figures, reuse of a finished backtest."""

from __future__ import annotations

import json

from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from conftest import run_cli

BT = ["backtest", "run", "--strategies", "momentum,mean_reversion", "--symbols", "BTCUSDT,ETHUSDT", "--timeframe",
      "1h", "--start", "2021-01-01", "--end", "2021-05-01", "--no-progress"]


def test_backtest_run_with_walk_forward_records_everything(engine_db):
    env = {"ATS_DATABASE_URL": engine_db}
    out = run_cli(*BT, "--walk-forward", "2", env=env)
    assert out.returncode == 0, out.stderr
    txt = out.stdout
    for needle in ("(completed)", "run id:", "max drawdown:", "Sharpe:", "trades:", "win rate", "blocked signals:",
                   "walk-forward out-of-sample (2 folds", "fold 1:", "fold 2:"):
        assert needle in txt, needle
    with connect(engine_db) as c:
        bt = c.execute("SELECT * FROM backtest_runs").fetchone()
        assert bt["status"] == "completed" and bt["walk_forward"] == 2 and bt["run_id"].startswith("backtest-")
        assert f"backtest {bt['backtest_id']} " in txt and bt["run_id"] in txt
        s = bt["summary"]
        for k in ("return_pct", "max_drawdown_pct", "sharpe", "trades", "win_rate", "blocked_by_reason", "oos"):
            assert k in s, k
        rid = bt["run_id"]
        n_pos = c.execute("SELECT count(*) AS n FROM positions WHERE run_id=%s", (rid,)).fetchone()["n"]
        n_closed = c.execute("SELECT count(*) AS n FROM positions WHERE run_id=%s AND status='closed'",
                             (rid,)).fetchone()["n"]
        trades = c.execute("SELECT * FROM backtest_trades WHERE backtest_id=%s", (bt["backtest_id"],)).fetchall()
        full = [t for t in trades if t["fold"] is None]
        assert len(full) == n_pos and s["trades"] == n_closed > 10
        wins = sum(1 for t in full if t["pnl_usd"] is not None and t["pnl_usd"] > 0)
        assert s["win_rate"] == round(wins / n_closed, 4)
        folds = {(t["fold"], t["in_sample"]) for t in trades if t["fold"] is not None}
        assert folds == {(1, True), (1, False), (2, True), (2, False)}
        oos = s["oos"]
        assert [f["fold"] for f in oos["folds"]] == [1, 2] and oos["trades"] == sum(f["oos_trades"] for f in oos["folds"])
        assert oos["trades"] == sum(1 for t in trades if t["in_sample"] is False and t["exit_time"] is not None)
        assert all(f["chosen_tp_sl_scale"] in (0.75, 1.0, 1.5) for f in oos["folds"])
        assert oos["folds"][0]["out_of_sample"][0] == oos["folds"][0]["in_sample"][1]  # OOS starts where IS ends
        curve = c.execute("SELECT * FROM backtest_equity_curve WHERE backtest_id=%s ORDER BY ts",
                          (bt["backtest_id"],)).fetchall()
        snaps = c.execute("SELECT count(*) AS n FROM portfolio_hourly_snapshots WHERE run_id=%s", (rid,)).fetchone()["n"]
        assert len(curve) == snaps and all(r["drawdown_pct"] >= 0 for r in curve)
        assert round(max(r["drawdown_pct"] for r in curve), 4) == s["max_drawdown_pct"]
        assert s["return_pct"] == round((float(curve[-1]["equity_usd"]) / float(curve[0]["equity_usd"]) - 1) * 100, 4)
        nb = c.execute("SELECT count(*) AS n FROM backtest_blocked_signals WHERE backtest_id=%s",
                       (bt["backtest_id"],)).fetchone()["n"]
        assert nb == sum(s["blocked_by_reason"].values()) == c.execute(
            "SELECT count(*) AS n FROM blocked_signals WHERE run_id=%s", (rid,)).fetchone()["n"] > 0
    # the same arguments reuse the finished backtest
    again = run_cli(*BT, "--walk-forward", "2", "--json", env=env)
    doc = json.loads(again.stdout)
    assert doc["state"] == "reused" and doc["backtest_id"] == bt["backtest_id"]
    # show / list / compare
    show = run_cli("backtest", "show", str(bt["backtest_id"]), env=env)
    assert show.returncode == 0 and "walk-forward out-of-sample" in show.stdout
    other = run_cli("backtest", "run", "--strategies", "volatility_breakout", "--symbols", "BTCUSDT,ETHUSDT",
                    "--start", "2021-01-01", "--end", "2021-05-01", "--no-progress", "--json", env=env)
    assert other.returncode == 0, other.stderr
    bid2 = json.loads(other.stdout)["backtest_id"]
    cmp = run_cli("backtest", "compare", str(bt["backtest_id"]), str(bid2), "--json", env=env)
    table = json.loads(cmp.stdout)["metric_table"]
    assert set(table) == {str(bt["backtest_id"]), str(bid2)} and "oos_return_pct" in table[str(bt["backtest_id"])]
    lst = run_cli("backtest", "list", env=env)
    assert lst.stdout.count("completed") == 2
    with connect(engine_db) as c:
        assert c.execute("SELECT count(*) AS n FROM backtest_comparisons").fetchone()["n"] == 1
        assert c.execute("SELECT count(*) AS n FROM backtest_runs").fetchone()["n"] == 2
