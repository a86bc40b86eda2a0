"""Resampling (issue 3): UTC buckets, Monday weeks, incomplete intervals flagged, nothing invented."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from ats.errors import UsageError
from ats.market_data.loaders import load_file
from ats.market_data.resample import resample, resample_all
from ats.market_data.store import read_candles

from _market_data_helpers import md_conn, md_url, ms  # noqa: F401

UTC = timezone.utc


@pytest.fixture(scope="module")
def btc_loaded(md_url, shared_data):
    import psycopg

    with psycopg.connect(md_url) as c:
        load_file(c, shared_data / "binance" / "BTC_USDT-1h.json")
        load_file(c, shared_data / "binance" / "BTC_USDT-5m.json")
        res = resample_all(c, symbols=["BTCUSDT"])
    return {r.timeframe: r for r in res}


def _expected(src: pd.DataFrame, rule: str, n: int) -> pd.DataFrame:
    g = src.resample(rule, label="left", closed="left")
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last(), "volume": g["volume"].sum(), "n": g["close"].count()})
    out = out[out["n"] > 0]
    out["complete"] = out["n"] == n
    return out


@pytest.mark.parametrize("tf,rule,src_tf,n", [("4h", "4h", "1h", 4), ("1d", "1D", "1h", 24),
                                              ("1w", None, "1h", 168), ("15m", "15min", "5m", 3)])
def test_resampled_candles_match_independent_pandas_aggregation(md_conn, btc_loaded, tf, rule, src_tf, n):
    src = read_candles(md_conn, "BTCUSDT", src_tf)
    got = read_candles(md_conn, "BTCUSDT", tf)
    if tf == "1w":  # pandas weekly periods ending Sunday start on Monday 00:00
        key = src.index.tz_convert(None).to_period("W-SUN").start_time.tz_localize("UTC")
        g = src.groupby(key)
        exp = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                            "close": g["close"].last(), "volume": g["volume"].sum(), "n": g["close"].count()})
        exp["complete"] = exp["n"] == n
    else:
        exp = _expected(src, rule, n)
    assert list(got.index) == list(exp.index)
    for col in ("open", "high", "low", "close"):
        assert (got[col].values == exp[col].values).all(), col
    assert abs(got["volume"] - exp["volume"]).max() < 1e-6
    assert (got["complete"].values == exp["complete"].values).all()
    assert btc_loaded[tf].buckets == len(got) and btc_loaded[tf].incomplete == int((~got["complete"]).sum())


def test_gap_buckets_are_incomplete_and_weeks_start_monday(md_conn, btc_loaded):
    h4 = read_candles(md_conn, "BTCUSDT", "4h", "2020-12-21", "2020-12-22")
    # the 2020-12-21 14:00 outage (4 missing hours) touches the 12:00 and 16:00 buckets only
    assert h4["complete"].tolist() == [True, True, True, False, False, True]
    wk = read_candles(md_conn, "BTCUSDT", "1w")
    assert all(t.weekday() == 0 and t.hour == 0 for t in wk.index)
    assert wk.index[0] == datetime(2020, 11, 30, tzinfo=UTC) and not wk["complete"].iloc[0]  # data starts Tuesday
    d1 = read_candles(md_conn, "BTCUSDT", "1d")
    assert d1.index[0] == datetime(2020, 12, 1, tzinfo=UTC) and len(d1) == btc_loaded["1d"].buckets
    # rerun changes nothing
    again = resample(md_conn, "BTCUSDT", "4h")
    assert (again.inserted, again.updated) == (0, 0)


def test_missing_interval_is_never_invented_and_filling_completes(md_conn, tmp_path):
    t0 = ms("2021-03-01T00:00")
    H = 3600_000
    rows = [[t0 + i * H, 10 + i, 11 + i, 9 + i, 10.5 + i, 1] for i in range(12) if not 4 <= i < 8 or i == 6]
    p = tmp_path / "SYN_USDT-1h.json"
    p.write_text(json.dumps(rows))
    load_file(md_conn, p)
    r = resample(md_conn, "SYNUSDT", "4h")
    got = read_candles(md_conn, "SYNUSDT", "4h")
    assert list(got.index.hour) == [0, 4, 8] and got["complete"].tolist() == [True, False, True]
    assert got.loc[datetime(2021, 3, 1, 4, tzinfo=UTC), "open"] == 16  # only the real 06:00 candle
    assert (r.buckets, r.incomplete) == (3, 1)
    p.write_text(json.dumps([[t0 + i * H, 10 + i, 11 + i, 9 + i, 10.5 + i, 1] for i in range(4, 8)]))
    load_file(md_conn, p)
    r2 = resample(md_conn, "SYNUSDT", "4h")
    assert (r2.inserted, r2.updated, r2.incomplete) == (0, 1, 0)
    got = read_candles(md_conn, "SYNUSDT", "4h")
    assert got["complete"].all() and got.loc[datetime(2021, 3, 1, 4, tzinfo=UTC), "volume"] == 4
    # nothing at all for hours with no source candles
    assert read_candles(md_conn, "SYNUSDT", "1d")["open"].tolist() == []
    resample(md_conn, "SYNUSDT", "1d")
    d = read_candles(md_conn, "SYNUSDT", "1d")
    assert len(d) == 1 and not d["complete"].iloc[0]  # 12 of 24 hours


def test_native_candle_preferred_over_resampled(md_conn, btc_loaded, tmp_path):
    t = ms("2021-01-04T00:00")
    p = tmp_path / "binance" / "BTC_USDT-4h.json"
    p.parent.mkdir()
    p.write_text(json.dumps([[t, 1, 2, 0.5, 1.5, 3]]))
    load_file(md_conn, p)
    got = read_candles(md_conn, "BTCUSDT", "4h", "2021-01-04T00:00", "2021-01-04T08:00")
    assert got["close"].tolist()[0] == 1.5 and got["close"].tolist()[1] != 1.5
    md_conn.execute("DELETE FROM candles WHERE symbol='BTCUSDT' AND timeframe='4h' AND source='binance'")
    md_conn.commit()


def test_unsupported_resample_is_a_usage_error(md_conn):
    with pytest.raises(UsageError, match="cannot resample to '5m'"):
        resample(md_conn, "BTCUSDT", "5m")
    with pytest.raises(UsageError):
        resample_all(md_conn, timeframes=["2h"])
