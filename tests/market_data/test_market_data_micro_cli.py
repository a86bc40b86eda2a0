"""Microstructure from the command line (issue 17): `ats data backfill --kind ...` through pybit against the Bybit
venue simulator (Bybit v5 shapes and paging), `ats data micro load FILE...` (refused by file and row, nothing
partial), coverage rows per kind in `ats data coverage`."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.execution.venue_sim.bybit import BybitSim, MicroData, serve, load_candles
from conftest import run_cli

H = 3600_000
T0 = 1621382400000          # 2021-05-19 00:00 UTC
END = T0 + 20 * 24 * H      # the simulator's clock: 2021-06-08 00:00 UTC


def _series() -> MicroData:
    """Bybit-shaped microstructure series around the 2021-05-19 crash: 480 hourly open-interest and long/short
    rows (so oi needs 3 pages of 200 and ls_ratio 2 pages of 500 would be needed for more), 8-hourly funding over
    100 days (300 rows: two pages of 200 back from endTime), 1,500 public trades (more than the one page Bybit
    serves). Every value a decimal string as Bybit sends it."""
    oi = [(T0 + k * H, f"{50000 + 37 * k}.{k % 1000:03d}") for k in range(480)]
    ls = [(T0 + k * H, f"0.{4500 + k % 900:04d}", f"0.{5500 - k % 900:04d}") for k in range(480)]
    funding = [(END - 100 * 24 * H + k * 8 * H, f"{'-' if k % 7 == 0 else ''}0.000{100 + k}") for k in range(300)]
    trades = [(END - 1500 * 10_000 + k * 10_000, f"{36000 + k % 50}.5", f"0.{1 + k % 9:03d}", "Buy" if k % 3 else "Sell")
              for k in range(1500)]
    return MicroData(oi={"1h": oi}, funding=funding, ls_ratio={"1h": ls}, trades=trades)


@pytest.fixture
def sim(shared_data):
    candles = load_candles(str(shared_data / "binance" / "BTC_USDT-1h.json"))
    s = BybitSim(candles, symbol="BTCUSDT", start_ms=END, start_paused=True, micro=_series())
    srv = serve(s)
    yield s, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture
def db(fresh_db_url):
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    yield c
    c.close()


def _count(db, table, where="TRUE", args=()):
    return db.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}", args).fetchone()["n"]


def test_backfill_every_kind_pages_through_the_simulator(sim, db, fresh_db_url):
    s, url = sim
    env = {"ATS_BYBIT_BASE_URL": url, "ATS_DATABASE_URL": fresh_db_url}
    r = run_cli("data", "backfill", "--kind", "all", "--symbols", "BTCUSDT", "--since", "2021-05-19T00:00:00Z",
                "--until", "2021-06-08T00:00:00Z", env=env)
    assert r.returncode == 0, r.stderr
    # open interest and long/short: every hourly row of the window; funding: the window part of the 100 days
    assert _count(db, "open_interest") == 480
    assert _count(db, "long_short_ratios") == 480
    series = _series()
    want_funding = [v for t, v in series.funding if T0 <= t <= END]
    got = [x["v"] for x in db.execute("SELECT funding_rate::text AS v FROM funding_rates ORDER BY ts").fetchall()]
    assert got == want_funding and len(got) == 60
    # the published decimals, not floats
    first = db.execute("SELECT open_interest::text AS v FROM open_interest ORDER BY ts LIMIT 1").fetchone()["v"]
    assert first == "50000.000"
    # paging: 3 oi requests (200 + 200 + 80), 1 ls_ratio (limit 500), 1 funding, 1 recent-trade
    c = s.counts
    assert (c["/v5/market/open-interest"], c["/v5/market/account-ratio"], c["/v5/market/funding/history"],
            c["/v5/market/recent-trade"]) == (3, 1, 1, 1)
    # taker: the newest 1,000 trades (one page); the oldest bucket may be cut by the page, so it is dropped
    served = sorted(series.trades)[-1000:]
    buckets = {}
    for t, _p, size, side in served:
        b = buckets.setdefault(t - t % H, [Decimal(0), Decimal(0), 0])
        b[0 if side == "Buy" else 1] += Decimal(size)
        b[2] += 1
    oldest = min(buckets)
    want = {k: v for k, v in buckets.items() if k != oldest}
    rows = db.execute("SELECT (extract(epoch FROM bucket_start) * 1000)::bigint AS t, buy_volume, sell_volume, trades "
                      "FROM taker_volume ORDER BY bucket_start").fetchall()
    assert {r["t"]: [r["buy_volume"], r["sell_volume"], r["trades"]] for r in rows} == want
    ev = db.execute("SELECT payload FROM system_events WHERE event_type = 'microstructure_backfill'").fetchall()
    assert sorted(e["payload"]["kind"] for e in ev) == ["funding", "ls_ratio", "oi", "taker"]

    # incremental: nothing new after the newest stored row
    r = run_cli("data", "backfill", "--kind", "oi", "--symbols", "BTCUSDT", env=env)
    assert r.returncode == 0, r.stderr
    assert "0 new" in r.stdout and _count(db, "open_interest") == 480

    cov = run_cli("data", "coverage", "--micro", "--json", env=env)
    assert cov.returncode == 0, cov.stderr
    by = {(x["kind"], x["period"]): x for x in json.loads(cov.stdout)}
    assert by[("oi", "1h")]["rows"] == 480 and by[("oi", "1h")]["missing"] == 0
    assert by[("funding", "8h")]["expected"] == 60
    text = run_cli("data", "coverage", env=env).stdout
    assert "microstructure:" in text and "ls_ratio" in text


def test_a_malformed_venue_row_writes_nothing_of_that_kind(sim, db, fresh_db_url):
    s, url = sim
    s.micro.oi["1h"][100] = (s.micro.oi["1h"][100][0], "12,5")  # a comma: not a decimal string
    env = {"ATS_BYBIT_BASE_URL": url, "ATS_DATABASE_URL": fresh_db_url}
    r = run_cli("data", "backfill", "--kind", "all", "--symbols", "BTCUSDT", "--since", "2021-05-19T00:00:00Z",
                "--until", "2021-06-08T00:00:00Z", env=env)
    assert r.returncode == 1
    assert "oi BTCUSDT: bybit oi BTCUSDT row" in r.stderr and "openInterest is not a decimal string" in r.stderr
    assert _count(db, "open_interest") == 0          # one transaction per kind and symbol
    assert _count(db, "long_short_ratios") == 480    # the other kinds went through


def test_venue_refusal_is_one_line_and_nothing_is_written(sim, db, fresh_db_url):
    _s, url = sim
    r = run_cli("data", "backfill", "--kind", "funding", "--symbols", "ETHUSDT", "--since", "2021-05-19",
                env={"ATS_BYBIT_BASE_URL": url, "ATS_DATABASE_URL": fresh_db_url})
    assert r.returncode == 1 and "symbol invalid" in r.stderr and "Traceback" not in r.stderr
    assert _count(db, "funding_rates") == 0


def test_micro_load_refuses_a_bad_file_by_row_and_keeps_the_good_ones(db, fresh_db_url, tmp_path):
    good = tmp_path / "oi_good.json"
    good.write_text(json.dumps({"retCode": 0, "retMsg": "OK", "result": {"symbol": "BTCUSDT", "category": "linear",
                    "list": [{"openInterest": "52931.637", "timestamp": str(T0 + H)},
                             {"openInterest": "51211.104", "timestamp": str(T0)}], "nextPageCursor": ""}}))
    bad = tmp_path / "oi_bad.json"
    bad.write_text(json.dumps({"symbol": "BTCUSDT", "list": [  # the result object alone is accepted too
        {"openInterest": "1.5", "timestamp": str(T0 + 2 * H)}, {"openInterest": "2", "timestamp": "1621382400"}]}))
    env = {"ATS_DATABASE_URL": fresh_db_url}
    r = run_cli("data", "micro", "load", "--kind", "oi", "--period", "1h", str(good), env=env)
    assert r.returncode == 0, r.stderr
    assert "rows=2 new=2" in r.stdout
    r = run_cli("data", "micro", "load", "--kind", "oi", "--period", "1h", str(bad), env=env)
    assert r.returncode == 1
    assert f"{bad} row 2: timestamp 1621382400 is outside 2000..2100" in r.stderr
    assert _count(db, "open_interest") == 2          # nothing of the bad file (its row 1 was fine)
    r = run_cli("data", "micro", "load", "--kind", "oi", "--period", "1h", str(good), env=env)
    assert "new=0" in r.stdout                       # idempotent
    r = run_cli("data", "backfill", "--symbols", "BTCUSDT", env=env)
    assert r.returncode == 2 and "--symbols and --period need --kind" in r.stderr
