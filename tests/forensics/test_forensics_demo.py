"""Done-when on the demo database (real candles, Dec 2020 - Jul 2021 replay): `ats investigate BTCUSDT` writes
a report whose per-trade P&L sums to the snapshot P&L for BTCUSDT and which names the breakers that blocked its
signals on 2021-05-19; the health check and the periodic reports run on the same data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def btc_report(demo_db_url, tmp_path_factory):
    home = tmp_path_factory.mktemp("demo_home")
    r = run_cli("investigate", "BTCUSDT", env={"ATS_DATABASE_URL": demo_db_url, "ATS_HOME": str(home)})
    assert r.returncode == 0, r.stderr + r.stdout
    md = next((home / "reports" / "investigations").glob("*_BTCUSDT.md"))
    twin = json.loads(md.with_suffix(".json").read_text())
    return md.read_text(), twin, r.stdout


def test_btc_trade_pnl_sums_to_snapshot_pnl(btc_report, demo_db_url):
    md, twin, _ = btc_report
    rec = twin["reconciliation"]
    closed = [t for t in twin["trades"] if t["status"] == "closed"]
    assert closed, "the demo replay closed no BTCUSDT trade"
    counted = [t for t in closed if t["position_id"] in set(rec["trades_counted"])]
    per_trade = sum(t["realized_pnl_usd"] for t in counted)
    assert per_trade == pytest.approx(rec["trades_pnl_usd"], abs=1e-6)
    assert rec["snapshot_pnl_usd"] == pytest.approx(per_trade, abs=0.01), rec
    assert rec["reconciled"] is True and rec["total"]["reconciled"] is True, rec
    # every closed trade is either in the reconciliation or closed after the last snapshot
    assert {t["position_id"] for t in closed} == set(rec["trades_counted"]) | set(rec["trades_after_last_snapshot"])
    # the report prints each trade's P&L; they add up to the reconciled figure
    printed = [float(x.replace(",", "")) for x in re.findall(r"- \*\*P&L\*\* ([+-][\d,]+\.\d\d) USD", md)]
    assert len(printed) == len(closed)
    assert sum(printed) == pytest.approx(sum(t["realized_pnl_usd"] for t in closed), abs=0.01 * len(closed))
    assert "Result: **yes**" in md
    # independent check straight from the tables: the portfolio's last snapshot realized P&L equals the sum of
    # every position closed before it (all symbols)
    with psycopg.connect(demo_db_url, row_factory=dict_row) as c:
        run = twin["run"]["run_id"]
        snap = c.execute("SELECT ts, realized_pnl_usd FROM portfolio_hourly_snapshots WHERE run_id=%s ORDER BY ts DESC "
                         "LIMIT 1", (run,)).fetchone()
        tot = c.execute("SELECT coalesce(sum(realized_pnl_usd), 0) AS s FROM positions WHERE run_id=%s AND "
                        "status='closed' AND closed_at < %s", (run, snap["ts"])).fetchone()["s"]
        assert float(tot) == pytest.approx(float(snap["realized_pnl_usd"]), abs=0.01)


def test_btc_report_names_crash_day_breakers(btc_report, demo_db_url):
    md, twin, stdout = btc_report
    with psycopg.connect(demo_db_url, row_factory=dict_row) as c:
        rows = c.execute("""SELECT DISTINCT substr(gate, 9) AS breaker FROM blocked_signals
                             WHERE run_id = %s AND symbol = 'BTCUSDT' AND gate LIKE 'breaker:%%'
                               AND ts >= '2021-05-19' AND ts < '2021-05-20' ORDER BY 1""",
                         (twin["run"]["run_id"],)).fetchall()
    expected = [r["breaker"] for r in rows]
    assert expected, "no BTCUSDT signal was blocked by a breaker on 2021-05-19 in the demo replay"
    day = twin["blocked_summary"]["by_day"]["2021-05-19"]
    assert sorted(g[len("breaker:"):] for g in day if g.startswith("breaker:")) == expected
    line = next(ln for ln in md.splitlines() if ln.startswith("| 2021-05-19 |"))
    for b in expected:
        assert f"breaker:{b}" in line
        assert b in stdout
    assert any(w["breaker"] in expected and w["tripped_at"].startswith("2021-05-19") for w in twin["breaker_windows"])


def test_health_and_reports_on_demo(demo_db_url, tmp_path):
    env = {"ATS_DATABASE_URL": demo_db_url, "ATS_HOME": str(tmp_path)}
    r = run_cli("health-check", "--json", env=env)
    assert r.returncode in (0, 1), r.stderr
    res = json.loads(r.stdout)
    assert Path(res["md_path"]).exists()
    # the engine must obey its own configuration: any violation is named (and fails this test with the list)
    assert res["passed"] is True, [(v["rule"], v["position_id"], v["detail"].get("message")) for v in res["violations"]][:20]
    r = run_cli("report", "weekly", "--as-of", "2021-05-23T00:00", env=env)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "reports" / "weekly" / "2021-05-23_weekly.md").read_text()
    assert "breaker" in md and "## Circuit-breaker trips" in md and "| 2021-05-19" in md
    r = run_cli("report", "24h", "--as-of", "2021-05-20T00:00", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "reports" / "daily" / "2021-05-20_24h" / "index.md").exists()
    r = run_cli("report", "watchlist", "--as-of", "2021-05-23T00:00", env=env)
    assert r.returncode == 0, r.stderr
