"""Coverage grid (issue 3): the real gaps and nothing else, trading-day calendar for equities, thresholds."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from ats.market_data.calendar import is_nyse_trading_day, nyse_holidays
from ats.market_data.coverage import coverage, series_coverage

UTC = timezone.utc
CRYPTO_1H = ["ADAUSDT", "AVAXUSDT", "BTCUSDT", "DOTUSDT", "ETHUSDT", "LINKUSDT", "LTCUSDT", "MATICUSDT",
             "SOLUSDT", "XRPUSDT"]
# the 6 exchange outages of the shared Binance files, as first missing hour and missing hours
REAL_1H_GAPS = [{"start": "2020-12-21T15:00:00Z", "bars": 3}, {"start": "2020-12-25T02:00:00Z", "bars": 1},
                {"start": "2021-02-11T04:00:00Z", "bars": 1}, {"start": "2021-03-06T02:00:00Z", "bars": 1},
                {"start": "2021-04-20T02:00:00Z", "bars": 2}, {"start": "2021-04-25T05:00:00Z", "bars": 3}]


@pytest.fixture(scope="module")
def grid(candles_db_url):
    with psycopg.connect(candles_db_url, row_factory=dict_row) as c:
        at_end = {(r["symbol"], r["timeframe"]): r for r in coverage(c, as_of="2021-07-17T21:00:00Z")}
        equities = {(r["symbol"], r["timeframe"]): r for r in coverage(c, as_of="2021-04-01T00:00:00Z",
                                                                       timeframes=["1d"])}
    return at_end, equities


@pytest.mark.parametrize("symbol", CRYPTO_1H)
def test_every_1h_crypto_file_has_exactly_the_six_real_gaps(grid, symbol):
    r = grid[0][(symbol, "1h")]
    assert r["calendar"] == "24/7"
    assert r["gaps"] == REAL_1H_GAPS
    assert sum(g["bars"] for g in r["gaps"]) == 11 == r["missing"]
    assert (r["first"], r["last"], r["expected"], r["present"]) == \
        ("2020-12-01T00:00:00Z", "2021-07-17T20:00:00Z", 5493, 5482)
    assert r["status"] == "green" and r["freshness"]["behind"] == 0


@pytest.mark.parametrize("symbol", ["AVAXUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_5m_files_show_the_same_six_outages(grid, symbol):
    r = grid[0][(symbol, "5m")]
    assert len(r["gaps"]) == 6 and r["missing"] == 177
    hours = [g["start"][:13] for g in r["gaps"]]
    assert hours == ["2020-12-21T14", "2020-12-25T02", "2021-02-11T03", "2021-03-06T02", "2021-04-20T02",
                     "2021-04-25T04"]


@pytest.mark.parametrize("symbol", ["SPY", "AAPL", "IWM"])
def test_equity_daily_bars_follow_trading_days(grid, symbol):
    r = grid[1][(symbol, "1d")]
    assert r["calendar"] == "nyse"
    assert r["gaps"] == [] and r["missing"] == 0 and r["expected"] == r["present"]
    assert r["status"] == "green", r["reasons"]


def test_qqq_real_gap_is_reported(grid):
    # the Lean sample has no QQQ bars while the ETF traded as QQQQ (Dec 2004 - Mar 2011): a real, large gap
    r = grid[1][("QQQ", "1d")]
    assert r["gaps"] == [{"start": "2004-12-01T00:00:00Z", "bars": 1588}]
    assert r["status"] == "red"


def test_nyse_calendar_rules():
    assert sorted(nyse_holidays(2020)) == [date(2020, 1, 1), date(2020, 1, 20), date(2020, 2, 17), date(2020, 4, 10),
                                           date(2020, 5, 25), date(2020, 7, 3), date(2020, 9, 7), date(2020, 11, 26),
                                           date(2020, 12, 25)]
    assert is_nyse_trading_day(date(2021, 12, 31))  # New Year's Day on a Saturday: Friday stays open
    assert not is_nyse_trading_day(date(2022, 6, 20))  # Juneteenth (Sunday) observed Monday
    assert not is_nyse_trading_day(date(2001, 9, 12)) and not is_nyse_trading_day(date(2012, 10, 29))
    assert not is_nyse_trading_day(date(2021, 4, 3))  # Saturday


def test_as_of_only_counts_closed_candles(candles_db_url):
    with psycopg.connect(candles_db_url, row_factory=dict_row) as c:
        r = coverage(c, as_of="2021-01-01T00:30:00Z", symbols=["BTCUSDT"], timeframes=["1h"])[0]
    assert r["last"] == "2020-12-31T23:00:00Z" and r["gaps"] == REAL_1H_GAPS[:2]
    assert r["freshness"]["last_close"] == "2021-01-01T00:00:00Z" and r["freshness"]["behind"] == 0


H = 3600


def _series(n, drop=()):
    t0 = int(datetime(2021, 1, 4, tzinfo=UTC).timestamp())
    return np.array([t0 + i * H for i in range(n) if i not in set(drop)], dtype=np.int64)


@pytest.mark.parametrize("drop,behind_hours,status", [
    ((), 0, "green"),
    ((), 1, "green"),                          # one bar late: ingestion latency, still green
    ((), 2, "amber"),                          # 2 bars behind
    ((), 5, "red"),                            # 5 bars behind
    (tuple(range(10, 14)), 0, "green"),        # 4 of 1000 missing = 99.6 %
    (tuple(range(10, 16)), 0, "amber"),        # 6 of 1000 missing = 99.4 %
    (tuple(range(10, 31)), 0, "red"),          # 21 of 1000 missing = 97.9 %
])
def test_status_thresholds(drop, behind_hours, status):
    t = _series(1000, drop)
    as_of = datetime.fromtimestamp(int(t[-1]) + H + behind_hours * H, tz=UTC)
    r = series_coverage("XYZUSDT", "1h", t, as_of)
    assert r["status"] == status, r["reasons"]
    assert r["freshness"]["behind"] == behind_hours
    assert r["missing"] == len(drop)


def test_holiday_is_not_a_gap_but_a_missing_trading_day_is():
    days = [date(2020, 12, 21), date(2020, 12, 22), date(2020, 12, 23), date(2020, 12, 24),
            date(2020, 12, 28), date(2020, 12, 30), date(2020, 12, 31)]  # 25th holiday, 29th missing
    t = np.array([int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in days], dtype=np.int64)
    r = series_coverage("SPY", "1d", t, datetime(2021, 1, 1, tzinfo=UTC))
    assert r["calendar"] == "nyse" and r["expected"] == 8
    assert r["gaps"] == [{"start": "2020-12-29T00:00:00Z", "bars": 1}]
    # the 2021-01-01 holiday is not a late bar
    r2 = series_coverage("SPY", "1d", t, datetime(2021, 1, 4, 12, tzinfo=UTC))
    assert r2["freshness"]["behind"] == 0


def test_empty_grid_and_unknown_series(conn):
    assert coverage(conn, symbols=["NOSUCH"]) == []
