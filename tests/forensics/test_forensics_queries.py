"""ats.forensics.queries on synthetic, engine-shaped rows of the 0003 audit tables."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ats.forensics import queries as fx

from _reports_helpers import RUN, seed_run, ts


@pytest.fixture
def seeded(fresh_conn):
    exp = seed_run(fresh_conn)
    return fresh_conn, exp


def test_investigate_symbol_lifecycle_and_pnl(seeded):
    conn, exp = seeded
    r = fx.investigate_symbol(conn, "btcusdt")
    json.dumps(r)  # JSON-serialisable as returned
    assert r["run"]["run_id"] == RUN and r["symbol"] == "BTCUSDT"
    assert r["counts"]["positions"] == 3 and r["counts"]["closed"] == 2 and r["counts"]["open"] == 1
    assert r["counts"]["blocked"] == 4
    trades = {t["position_id"]: t for t in r["trades"]}
    btc = [t for t in exp["trades"] if t["symbol"] == "BTCUSDT"]
    win, loss = btc[0], btc[1]
    tw = trades[win["position_id"]]
    assert tw["close_reason"] == "tp" and tw["realized_pnl_usd"] == pytest.approx(float(win["realized"]))
    assert tw["entry_signal"]["signal_id"] == win["signal_id"]
    assert tw["entry_config"]["buy_enabled"] is True and tw["entry_config"]["params"]["tp_pct"] == 4.0
    assert tw["exit_evaluation"]["decision"] == "exit_tp"
    assert [t["reason"] for t in tw["targets"]] == ["initial"]
    assert len(tw["fills"]) == 2 and tw["opened_at"].endswith("+00:00")
    assert trades[loss["position_id"]]["close_reason"] == "sl"
    # P&L per trade sums to the expected realized P&L, net of fees
    assert r["pnl"]["closed_trades"] == 2
    assert r["pnl"]["realized_pnl_usd"] == pytest.approx(float(exp["realized_by_symbol"]["BTCUSDT"]))
    assert r["pnl"]["wins"] == 1 and r["pnl"]["losses"] == 1


def test_investigate_blocked_and_breakers(seeded):
    conn, _ = seeded
    r = fx.investigate_symbol(conn, "BTCUSDT")
    bs = r["blocked_summary"]
    assert bs["by_gate"] == {"breaker:daily_drawdown": 2, "cooldown": 1, "breaker:market_volatility": 1}
    assert bs["breakers"] == ["daily_drawdown", "market_volatility"]
    assert bs["by_day"]["2021-05-19"] == {"breaker:daily_drawdown": 2, "breaker:market_volatility": 1}
    wins = {w["breaker"]: w for w in r["breaker_windows"]}
    assert wins["daily_drawdown"]["tripped_at"] == ts(19, 12).isoformat()
    assert wins["daily_drawdown"]["reset_at"] == ts(20, 0).isoformat()
    kinds = {e["kind"] for e in r["timeline"]}
    assert {"signal", "blocked", "order", "fill", "position_open", "position_close", "event", "target"} <= kinds
    assert any("breaker:daily_drawdown" in e["text"] and "2021-05-19" in e["text"] for e in r["timeline"])
    assert any("breaker:daily_drawdown" in q for q in r["open_questions"])
    # a clean trail: no anomalies except none
    assert [a for a in r["anomalies"] if a["kind"] != "order_rejected"] == []
    assert all(q["sql"].startswith("SELECT") or q["sql"].startswith("WITH") for q in r["queries"])
    assert any(RUN in q["sql"] and "'BTCUSDT'" in q["sql"] for q in r["queries"])


@pytest.mark.parametrize("per_symbol", [True, False])
def test_reconciliation_against_snapshots(fresh_conn, per_symbol):
    exp = seed_run(fresh_conn, per_symbol_realized=per_symbol)
    r = fx.investigate_symbol(fresh_conn, "BTCUSDT")
    rec = r["reconciliation"]
    assert rec["method"] == ("positions_json" if per_symbol else "snapshot_deltas")
    assert rec["reconciled"] is True, rec
    assert rec["snapshot_pnl_usd"] == pytest.approx(float(exp["realized_by_symbol"]["BTCUSDT"]), abs=1e-6)
    assert rec["trades_pnl_usd"] == pytest.approx(r["pnl"]["realized_pnl_usd"])
    assert rec["total"]["reconciled"] is True
    assert rec["total"]["snapshot_realized_usd"] == pytest.approx(float(exp["realized_total"]), abs=1e-6)


def test_reconciliation_detects_a_missing_fee(fresh_conn):
    exp = seed_run(fresh_conn, per_symbol_realized=False)
    pid = exp["trades"][0]["position_id"]
    # corrupt one trade's realized P&L (fee forgotten): both the fills check and the snapshots must notice
    fresh_conn.execute("UPDATE positions SET realized_pnl_usd = realized_pnl_usd + 1.5 WHERE position_id = %s", (pid,))
    fresh_conn.commit()
    r = fx.investigate_symbol(fresh_conn, "BTCUSDT")
    assert r["reconciliation"]["reconciled"] is False
    assert r["reconciliation"]["difference_usd"] == pytest.approx(1.5, abs=1e-6)
    kinds = {a["kind"] for a in r["anomalies"]}
    assert {"pnl_mismatch_vs_fills", "pnl_not_reconciled"} <= kinds


@pytest.mark.parametrize("per_symbol", [True, False])
def test_investigate_window_and_unknown(fresh_conn, per_symbol):
    conn, exp = fresh_conn, seed_run(fresh_conn, per_symbol_realized=per_symbol)
    r = fx.investigate_symbol(conn, "BTCUSDT", since="2021-05-18T07:00", until="2021-05-19T23:59:59")
    assert r["counts"]["blocked"] == 4
    assert r["pnl"]["closed_trades"] == 1  # the SL loss closed 2021-05-19 03:00; the TP win closed before since
    loss = exp["trades"][2]
    assert r["pnl"]["realized_pnl_usd"] == pytest.approx(float(loss["realized"]))
    rec = r["reconciliation"]
    assert rec["reconciled"] is True and rec["trades_counted"] == [loss["position_id"]]
    assert rec["snapshot_pnl_usd"] == pytest.approx(float(loss["realized"]), abs=1e-6)
    assert rec["snapshot_interval"] == {"start": ts(18, 7).isoformat(), "end": ts(19, 23).isoformat()}
    none = fx.investigate_symbol(conn, "DOGEUSDT")
    assert none["run"] is None and none["trades"] == [] and none["open_questions"]
    with pytest.raises(fx.AtsError):
        fx.investigate_symbol(conn, "BTCUSDT", run_id="no-such-run")


def test_blocked_signals_counts_and_limit(seeded):
    conn, _ = seeded
    r = fx.blocked_signals(conn, "2021-05-01", limit=2)
    json.dumps(r)
    assert r["total"] == 4 and r["truncated"] is True and len(r["rows"]) == 2
    assert r["rows"][0]["ts"] == ts(19, 16).isoformat()  # newest first
    assert r["by_gate"]["breaker:daily_drawdown"] == 2
    assert r["by_symbol"] == {"BTCUSDT": 4}
    r2 = fx.blocked_signals(conn, "2021-05-19", strategy="momentum", until="2021-05-19T14:30")
    assert r2["total"] == 1 and r2["by_gate"] == {"breaker:daily_drawdown": 1}
    assert fx.blocked_signals(conn, "2021-05-01", strategy="other")["total"] == 0
    with pytest.raises(fx.AtsError):
        fx.blocked_signals(conn, None)


def test_health_summary(seeded):
    conn, _ = seeded
    conn.execute("""INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume, source)
                    VALUES ('BTCUSDT', '1h', %s, 1, 1, 1, 1, 1, 'test'), ('ETHUSDT', '1h', %s, 1, 1, 1, 1, 1, 'test')""",
                 (ts(20, 23), ts(19, 0)))
    conn.commit()
    h = fx.health_summary(conn)
    json.dumps(h)
    assert h["run"]["run_id"] == RUN and h["reference_time"] == ts(21, 0).isoformat()
    assert h["breakers"]["trips"] == 2 and h["breakers"]["resets"] == 2
    assert h["breakers"]["trips_by_breaker"] == {"daily_drawdown": 1, "market_volatility": 1}
    assert h["breakers"]["tripped"] == []
    assert h["stale_feeds"] == ["ETHUSDT 1h"]
    assert h["errors"]["total"] == 0  # the broker error was at 05-19 17:00, outside the 24 h before 05-21
    assert h["errors"]["recent"][0]["event_type"] == "order_error"
    assert h["last_successful"]["replay"]["run_id"] == RUN
    assert h["snapshot"]["ts"] == ts(21, 0).isoformat()
