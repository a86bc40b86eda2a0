"""Staged soaks (issue 17): `ats strategy soak start` (effective-dated watchlist on / buy off, strategy_soaks row,
one-shot review prompt the schedule accepts) and `ats strategy soak report` over a replayed month of real candles:
every buy-gate block played forward with the engine's paper broker and exit logic, one trade checked by hand."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest

from ats.db import config_store as cs
from ats.ops.schedule import load_prompt
from ats.risk.settings import SettingsView
from conftest import ROOT, run_cli

from _engine_helpers import connect, engine_db, engine_template, raw_by_time, utc  # noqa: F401

SYMS = "BTCUSDT,ETHUSDT,SOLUSDT,ADAUSDT,LINKUSDT,DOTUSDT"


def test_soak_of_a_replayed_month_produces_its_report(engine_db, tmp_path):
    env = {"ATS_DATABASE_URL": engine_db, "ATS_HOME": str(tmp_path)}
    r = run_cli("strategy", "soak", "start", "momentum", "--days", "30", "--at", "2021-04-01T00:00:00Z", env=env)
    assert r.returncode == 0, r.stderr
    assert "no review prompt scheduled" in r.stdout          # a back-dated soak that already ended
    with connect(engine_db) as conn:
        before = cs.strategy_as_of(conn, "momentum", utc("2021-03-31T23:00:00"))
        during = cs.strategy_as_of(conn, "momentum", utc("2021-04-01T00:00:00"))
        assert before["buy_enabled"] and not during["buy_enabled"] and during["watchlist_enabled"]
        assert during["sell_enabled"] == before["sell_enabled"] and during["params"] == before["params"]
    r = run_cli("engine", "replay", "--strategies", "momentum", "--symbols", SYMS, "--start", "2021-04-01",
                "--end", "2021-05-01", "--no-progress", "--json", env=env)
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    with connect(engine_db) as conn:
        blocked = conn.execute("SELECT count(*) AS n FROM blocked_signals WHERE run_id = %s AND gate = 'buy_gate' "
                               "AND strategy_name = 'momentum'", (run_id,)).fetchone()["n"]
        opened = conn.execute("SELECT count(*) AS n FROM positions WHERE run_id = %s", (run_id,)).fetchone()["n"]
    assert blocked >= 5 and opened == 0                      # buy off: every entry blocked, nothing opened

    r = run_cli("strategy", "soak", "report", "momentum", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["run_id"] == run_id and out["summary"]["blocked"] == blocked
    js = tmp_path / "reports" / "soaks" / "2021-05-01_momentum_soak.json"
    md = js.with_suffix(".md")
    assert [str(js.with_suffix(".md")), str(js)] == out["paths"]
    doc = json.loads(js.read_text())
    trades = doc["trades"]
    s = doc["summary"]
    assert len(trades) == blocked and s["played"] + s["not_played"] == blocked
    assert s["pnl_usd"] == pytest.approx(sum(t["pnl_usd"] for t in trades if t["status"] in ("closed", "open")),
                                         abs=0.011)
    assert s["closed"] >= 3 and s["wins"] == sum(1 for t in trades if t["status"] == "closed" and t["pnl_usd"] > 0)
    text = md.read_text()
    assert "## Hypothetical trades" in text and "buy_gate_blocks" in text and f"`{run_id}`" in text

    # one closed trade by hand, from the raw candles and the broker settings in force
    t = next(t for t in trades if t["status"] == "closed")
    sym, base = t["symbol"], t["symbol"][:-4]
    bars = raw_by_time(base)
    dec = int(utc(t["decision_time"]).timestamp())
    ent, ext = int(utc(t["entry_time"]).timestamp()), int(utc(t["exit_time"]).timestamp())
    with connect(engine_db) as conn:
        params = cs.strategy_as_of(conn, "momentum", utc(t["decision_time"]))["params"]
        sv = SettingsView(conn)
        s_in, s_out = sv.at(ent + 3600), sv.at(ext + 3600)
    from ats.strategies import get_strategy

    p = get_strategy("momentum").params(params)
    assert not s_in["broker.partial_fills"]
    d_bar = bars[dec - 3600]
    qty = p["trade_amount_usd"] / d_bar[4]
    assert t["qty"] == pytest.approx(qty, rel=1e-12)
    assert ent == dec and ent in bars                        # fills at the next bar's open
    slip_in = s_in["broker.slippage_bps"] + s_in["broker.impact_bps_per_pct"] * 100 * qty / d_bar[5]
    entry = bars[ent][1] * (1 + slip_in / 1e4)
    x_bar = bars[ext - 3600]                                 # the exit decision bar
    slip_out = s_out["broker.slippage_bps"] + s_out["broker.impact_bps_per_pct"] * 100 * qty / x_bar[5]
    exit_ = bars[ext][1] * (1 - slip_out / 1e4)
    fees = qty * entry * s_in["broker.taker_fee_bps"] / 1e4 + qty * exit_ * s_out["broker.taker_fee_bps"] / 1e4
    assert t["entry_price"] == pytest.approx(entry, rel=1e-9) and t["exit_price"] == pytest.approx(exit_, rel=1e-9)
    assert t["pnl_usd"] == pytest.approx(qty * (exit_ - entry) - fees, abs=1e-6)
    if t["exit_reason"] == "tp":
        assert x_bar[4] >= entry * (1 + p["tp_pct"] / 100)
    elif t["exit_reason"] == "sl":
        assert x_bar[4] <= entry * (1 - p["sl_pct"] / 100)
    elif t["exit_reason"] == "max_hold":
        assert (ext - 3600 - ent) / 3600 >= p["max_hold_hours"]


def test_soak_start_schedules_a_review_prompt_the_schedule_accepts(engine_db, tmp_path):
    (tmp_path / ".claude-cron").mkdir()
    shutil.copy(ROOT / ".claude-cron" / "schedule.toml", tmp_path / ".claude-cron" / "schedule.toml")
    env = {"ATS_DATABASE_URL": engine_db, "ATS_HOME": str(tmp_path)}
    r = run_cli("strategy", "soak", "start", "mean_reversion", "--days", "7", env=env)
    assert r.returncode == 0, r.stderr
    assert "review prompt .claude-cron/prompts/soak-mean-reversion.md" in r.stdout
    spec = load_prompt("soak-mean-reversion", tmp_path)
    assert spec.core_argvs() == [["strategy", "soak", "report", "mean_reversion"]]
    assert "Bash(ats strategy soak report:*)" in spec.allowed_tools
    with connect(engine_db) as conn:
        soak = conn.execute("SELECT * FROM strategy_soaks WHERE strategy_name = 'mean_reversion'").fetchone()
        assert soak["ends_at"] - soak["started_at"] == timedelta(days=7)
        assert soak["prior_gates"] == {"watchlist_enabled": True, "buy_enabled": True, "sell_enabled": True}
        cur = conn.execute("SELECT * FROM strategy_configurations WHERE strategy_name = 'mean_reversion'").fetchone()
        assert (cur["watchlist_enabled"], cur["buy_enabled"]) == (True, False)
        ev = conn.execute("SELECT payload FROM system_events WHERE event_type = 'soak_started'").fetchone()
        assert ev["payload"]["soak_id"] == soak["soak_id"]
    run_at = soak["ends_at"].strftime("%Y-%m-%d %H:%M")
    assert spec.when.describe() == f"once {run_at}"
    r = run_cli("cron", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    prompts = {p["name"]: p for p in json.loads(r.stdout)["prompts"]}
    assert prompts["soak-mean-reversion"]["on_calendar"] == f"{run_at}:00 UTC"
    # an overlapping second soak is refused and writes nothing; an unknown strategy is a usage error
    r = run_cli("strategy", "soak", "start", "mean_reversion", "--days", "3", env=env)
    assert r.returncode == 1 and "overlaps" in r.stderr
    with connect(engine_db) as conn:
        assert conn.execute("SELECT count(*) AS n FROM strategy_soaks").fetchone()["n"] == 1
    r = run_cli("strategy", "soak", "start", "nope", env=env)
    assert r.returncode == 2 and "unknown strategy" in r.stderr
    r = run_cli("strategy", "soak", "report", "volatility_breakout", env=env)
    assert r.returncode == 1 and "no soak of volatility_breakout recorded" in r.stderr
