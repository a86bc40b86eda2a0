"""Reports reconcile with themselves (issue 11, item 3): on a real replay, every report whose figures are parts of a
whole says the parts add up, and the 24 h analysis labels trades only by what their P&L supports."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import engine_db, engine_template  # noqa: F401  (fixtures)
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec, resolve
from ats.forensics.periodic import pick_trades, report_24h, report_weekly

pytestmark = pytest.mark.slow

UTC = timezone.utc


@pytest.fixture
def crash_replay(engine_db):
    spec = make_spec("replay", strategies=["btc_trend", "mean_reversion", "momentum", "trend_breakdown",
                                           "volatility_breakout"], symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                     timeframe="1h", start="2021-05-08", end="2021-05-26")
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        spec = resolve(c, spec)
    run_replay(spec, url=engine_db)
    return engine_db, spec.run_id


def _snap_equity(c, run_id, at):
    return float(c.execute("SELECT equity_usd FROM portfolio_hourly_snapshots WHERE run_id=%s AND ts <= %s "
                           "ORDER BY ts DESC LIMIT 1", (run_id, at)).fetchone()["equity_usd"])


@pytest.mark.parametrize("as_of", [datetime(2021, 5, 24, tzinfo=UTC), datetime(2021, 5, 23, 17, tzinfo=UTC)])
def test_weekly_days_and_strategies_add_up_to_the_headline(crash_replay, tmp_path, as_of):
    url, run_id = crash_replay
    with psycopg.connect(url, row_factory=dict_row) as c:
        res = report_weekly(c, as_of, run_id=run_id, out_dir=tmp_path)
        start = as_of - timedelta(days=7)
        # the headline is the CLAUDE.md equity difference, with the last snapshot at or before each boundary
        assert res["pnl"]["pnl_usd"] == pytest.approx(_snap_equity(c, run_id, as_of) - _snap_equity(c, run_id, start))
    checks = res["reconciliation"]
    assert len(checks) == 9 and all(ch["ok"] for ch in checks), [ch for ch in checks if not ch["ok"]]
    assert sum(d["equity_change_usd"] for d in res["daily"]) == pytest.approx(res["pnl"]["pnl_usd"], abs=1e-6)
    assert sum(d["realized_change_usd"] for d in res["daily"]) == pytest.approx(res["pnl"]["realized_change_usd"], abs=1e-6)
    # consecutive days share their boundary snapshot; the first starts where the headline starts
    assert res["daily"][0]["start_ts"] == res["pnl"]["start_ts"] and res["daily"][-1]["end_ts"] == res["pnl"]["end_ts"]
    for a, b in zip(res["daily"], res["daily"][1:]):
        assert a["end_ts"] == b["start_ts"] and a["equity_usd"] == b["start_equity_usd"]
    assert len(res["daily"]) == (7 if as_of.hour == 0 else 8)  # a window ending 17:00 touches 8 UTC days
    assert res["strategy_totals"]["trades"] == sum(s["trades"] for s in res["strategies"]) > 0
    md = Path(res["md_path"]).read_text()
    assert "## Reconciliation" in md and "DOES NOT RECONCILE" not in md


def test_24h_parts_reconcile_and_labels_follow_the_data(crash_replay, tmp_path):
    url, run_id = crash_replay
    with psycopg.connect(url, row_factory=dict_row) as c:
        busiest = c.execute(
            """SELECT date_trunc('day', closed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS d, count(*) AS n
                 FROM positions WHERE run_id=%s AND status='closed' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
            (run_id,)).fetchone()
        end = busiest["d"] + timedelta(days=1)
        n = c.execute("SELECT count(*) AS n FROM positions WHERE run_id=%s AND status='closed' AND closed_at > %s "
                      "AND closed_at <= %s", (run_id, end - timedelta(hours=24), end)).fetchone()["n"]
    assert n > 5  # the busiest day: the sample of 5 is exercised
    res = report_24h(end, run_id=run_id, url=url, workers=2, out_dir=tmp_path)
    assert res["closed_trades"] == n
    assert all(ch["ok"] is not False or ch.get("informational") for ch in res["reconciliation"])
    assert res["reconciliation"][0]["ok"]  # equity change = realized change + unrealized change
    assert len(res["trades"]) == min(5, n)
    for t in res["trades"]:
        pnl = float(t["realized_pnl_usd"])
        assert t["label"] != "worst" or pnl < 0
        assert t["label"] != "best" or pnl > 0
    idx = Path(res["index_path"]).read_text()
    assert "## The 5 trades" not in idx or n == 5
    heading = [ln for ln in idx.splitlines() if ln.startswith("## ") and "trade" in ln and "closed" in ln][0]
    assert str(n) in heading


def test_pick_trades_never_calls_a_win_the_worst_nor_a_loss_the_best():
    won = [{"position_id": i, "realized_pnl_usd": Decimal(v)} for i, v in enumerate(["0.86", "7.15"], 1)]
    assert [lbl for lbl, _ in pick_trades(won)] == ["lowest", "best"]
    lost = [{"position_id": i, "realized_pnl_usd": Decimal(v)} for i, v in enumerate(["-4", "-1", "-2"], 1)]
    assert [lbl for lbl, _ in pick_trades(lost)] == ["worst", "median", "highest"]
    many_wins = [{"position_id": i, "realized_pnl_usd": Decimal(i)} for i in range(1, 10)]
    assert [lbl for lbl, _ in pick_trades(many_wins)] == ["lowest", "lowest", "median", "best", "best"]
    assert [lbl for lbl, _ in pick_trades(won[:1])] == ["only"]
