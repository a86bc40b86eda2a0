"""`ats demo`: real candles, the Dec 2020 - Jul 2021 replay, the summary with the 2021-05-19 breaker trips;
idempotent re-runs; --fresh; the Bybit fallback (vendor client mocked with pybit-shaped payloads) and its
offline message."""

from __future__ import annotations


import pytest

from _engine_helpers import connect, engine_db, engine_template, raw_rows  # noqa: F401
from _market_data_helpers import bybit_kline_response
from ats.demo import format_demo, micro_notes, prepare_demo
from ats.errors import AtsError
from ats.strategies import BOOK
from conftest import run_cli


def _counts(url):
    with connect(url) as c:
        return c.execute("""SELECT (SELECT count(*) FROM engine_runs) AS runs, (SELECT count(*) FROM order_executions) AS o,
                                   (SELECT count(*) FROM fills) AS f, (SELECT count(*) FROM candles) AS candles,
                                   (SELECT count(*) FROM feed_anomalies) AS anomalies,
                                   (SELECT count(*) FROM system_events) AS events""").fetchone()


def test_demo_summary_shows_breaker_trips_on_the_crash(demo_db_url, shared_data):
    before = _counts(demo_db_url)
    s = prepare_demo(demo_db_url, data_dir=shared_data, progress=False)  # the fixture already ran it: reuse
    assert s["state"] == "completed" and _counts(demo_db_url) == before  # idempotent: nothing duplicated
    assert before["runs"] == 1 and len(s["symbols"]) == 10 and s["strategies"] == list(BOOK)
    # the demo figures of the book of eleven (the seven-strategy baseline was 1,469 trades, 10,000.00 -> 9,164.19)
    assert (s["trades"], round(s["end_equity_usd"], 2)) == (1347, 11282.51)
    # strategies needing microstructure data the demo lacks say so, with their blocked counts
    notes = {m["strategy"]: m for m in micro_notes(s)}
    assert set(notes) == {"growth_potential", "momentum_short", "btc_trend_short"}
    assert all(m["no_data"] > 0 and m["no_data"] == s["microstructure_blocked"][n]["no_data"] for n, m in notes.items())
    assert s["blocked_by_gate"]["microstructure"] == sum(m["no_data"] + m["condition"] for m in notes.values())
    assert s["funding"]["payments"] > 0 and s["funding"]["fallback"] == s["funding"]["payments"]  # no funding data
    trips = s["crash_day_trips"]
    assert trips and all(t["ts"].startswith("2021-05-19") for t in trips)
    assert {"velocity", "market_volatility"} <= {t["breaker"] for t in trips}
    assert s["breaker_trips_by_day"]["2021-05-19"] == {b: sum(1 for t in trips if t["breaker"] == b)
                                                       for b in {t["breaker"] for t in trips}}
    assert s["trades"] > 200 and s["end_equity_usd"] > 0 and s["pnl"]["all_time"]["from_equity_usd"] == 10_000.0
    assert any(g.startswith("breaker:") for g in s["blocked_by_gate"]) and "regime" in s["blocked_by_gate"]
    txt = format_demo(s)
    assert "2021-05-19 crash:" in txt and "velocity" in txt and "market_volatility" in txt
    assert "blocked signals:" in txt and "P&L (from portfolio_hourly_snapshots" in txt
    assert "microstructure: btc_trend_short needs funding_floor:" in txt and "(microstructure:no_data)" in txt
    assert "funding:" in txt and "without funding data" in txt
    with connect(demo_db_url) as c:
        rid = s["run_id"]
        # the breakers really blocked entries that day, while exits still filled
        blocked = c.execute("""SELECT count(*) AS n FROM blocked_signals WHERE run_id=%s AND gate LIKE 'breaker:%%'
                                 AND ts >= '2021-05-19' AND ts < '2021-05-20'""", (rid,)).fetchone()["n"]
        exits = c.execute("""SELECT count(*) AS n FROM order_executions WHERE run_id=%s AND intent='close'
                               AND status='filled' AND submitted_at >= '2021-05-19' AND submitted_at < '2021-05-20'""",
                          (rid,)).fetchone()["n"]
        assert blocked > 0 and exits > 0
        st = c.execute("SELECT regime, confirmed, run_id FROM btc_market_state").fetchone()
        assert st["run_id"] == rid


def test_demo_cli_prints_the_summary_and_reuses_the_run(demo_db_url, shared_data):
    out = run_cli("demo", "--no-progress", "--data-dir", str(shared_data), env={"ATS_DATABASE_URL": demo_db_url})
    assert out.returncode == 0, out.stderr
    for needle in ("reused the finished run", "2021-05-19 crash:", "breaker trips:", "blocked signals:", "equity:",
                   "today", "all_time", "database:", "candles: 10 files"):
        assert needle in out.stdout, needle
    with connect(demo_db_url) as c:
        assert c.execute("SELECT count(*) AS n FROM engine_runs").fetchone()["n"] == 1


def test_demo_fresh_starts_a_new_run_cleanly(engine_db, shared_data):
    a = prepare_demo(engine_db, data_dir=shared_data, progress=False, start="2021-05-15", end="2021-05-22")
    b = prepare_demo(engine_db, data_dir=shared_data, progress=False, start="2021-05-15", end="2021-05-22")
    c_ = prepare_demo(engine_db, data_dir=shared_data, progress=False, start="2021-05-15", end="2021-05-22", fresh=True)
    assert a["state"] == "new" and b["state"] == "completed" and b["run_id"] == a["run_id"]
    assert c_["state"] == "new" and c_["run_id"] != a["run_id"] and c_["trades"] == a["trades"]
    assert a["crash_day_trips"] and c_["crash_day_trips"]
    with connect(engine_db) as c:
        per_run = c.execute("SELECT run_id, count(*) AS n FROM order_executions GROUP BY 1").fetchall()
        assert len(per_run) == 2 and per_run[0]["n"] == per_run[1]["n"]


class FakeBybitHTTP:
    """Stands in for pybit.unified_trading.HTTP: get_kline answers from the shared Binance files with the exact
    Bybit v5 payload shape (strings, newest first, at most `limit` rows in [start, end])."""

    def __init__(self, offline: bool = False):
        self.offline = offline
        self.calls = 0
        self.rows = {}

    def get_kline(self, *, category, symbol, interval, start, end, limit=200):
        self.calls += 1
        if self.offline:
            import requests

            raise requests.exceptions.ConnectionError("Failed to resolve 'api.bybit.com'")
        assert interval == "60" and category == "linear"
        if symbol not in self.rows:
            self.rows[symbol] = raw_rows(symbol.replace("USDT", ""))
        sel = [tuple(r) for r in self.rows[symbol] if start <= r[0] <= end]
        sel = sel[-limit:]
        return bybit_kline_response(symbol, sel, category=category)


def test_demo_without_local_files_backfills_from_bybit(fresh_db_url, tmp_path, shared_data):
    fake = FakeBybitHTTP()
    s = prepare_demo(fresh_db_url, data_dir=tmp_path / "nothing-here", progress=False, start="2021-05-12",
                     end="2021-05-22", backfill_options={"client": fake, "sleep": lambda _s: None})
    assert s["candles"]["source"] == "bybit" and len(s["candles"]["symbols"]) == 10 and fake.calls >= 10
    assert s["crash_day_trips"] and s["state"] == "new"
    with connect(fresh_db_url) as c:
        src = c.execute("SELECT DISTINCT source FROM candles").fetchall()
        assert [r["source"] for r in src] == ["bybit"]


def test_demo_offline_without_files_says_what_to_do(fresh_db_url, tmp_path):
    with pytest.raises(AtsError, match="Bybit public API is not reachable.*--data-dir"):
        prepare_demo(fresh_db_url, data_dir=tmp_path, progress=False,
                     backfill_options={"client": FakeBybitHTTP(offline=True), "sleep": lambda _s: None, "retries": 1})
    out = run_cli("demo", "--data-dir", str(tmp_path), "--json", env={"ATS_DATABASE_URL": fresh_db_url,
                                                                      "HTTPS_PROXY": "http://127.0.0.1:9",
                                                                      "HTTP_PROXY": "http://127.0.0.1:9"},
                  timeout=120)
    assert out.returncode == 1 and "--data-dir" in out.stderr and "Bybit" in out.stderr
    assert out.stdout == ""  # --json prints nothing on failure
