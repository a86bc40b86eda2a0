"""Market data loaders (issue 3): real files, reloads, every malformed case, Bybit and Alpaca payloads."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.errors import AtsError
from ats.market_data.loaders import (LoadResult, load_alpaca_bars, load_bybit_kline, load_file, load_paths,
                                     names_from_filename)
from ats.market_data.store import read_candles

from _market_data_helpers import bybit_kline_response, db_fingerprint, md_conn, md_url, ms  # noqa: F401

UTC = timezone.utc


# ------------------------------------------------------------------------------------------- real files

def test_every_shared_file_loads(candles_db_url, shared_data):
    files = sorted(p for p in shared_data.rglob("*") if p.is_file())
    assert len(files) >= 18
    with psycopg.connect(candles_db_url, row_factory=dict_row) as c:
        rows = c.execute("SELECT symbol, timeframe, source, count(*) AS n, min(open_time) AS first, "
                         "max(open_time) AS last FROM candles GROUP BY 1, 2, 3").fetchall()
    got = {(r["symbol"], r["timeframe"]): r for r in rows}
    assert got[("BTCUSDT", "1h")]["n"] == 5482 and got[("BTCUSDT", "1h")]["source"] == "binance"
    assert got[("BTCUSDT", "1h")]["first"] == datetime(2020, 12, 1, tzinfo=UTC)
    assert got[("BTCUSDT", "5m")]["n"] == 65741
    assert got[("SPY", "1d")]["n"] == 5849 and got[("SPY", "1d")]["source"] == "csv"
    assert got[("SPY", "1d")]["first"] == datetime(1998, 1, 2, tzinfo=UTC)
    assert len(got) >= 18  # 10 crypto 1h + 4 crypto 5m + 4 equities 1d, one source each
    assert {s for s, t in got if t == "1h"} >= {"ADAUSDT", "AVAXUSDT", "BTCUSDT", "DOTUSDT", "ETHUSDT", "LINKUSDT",
                                               "LTCUSDT", "MATICUSDT", "SOLUSDT", "XRPUSDT"}
    assert {s for s, t in got if t == "1d"} >= {"SPY", "QQQ", "IWM", "AAPL"}


def test_names_from_filename():
    assert names_from_filename("binance/BTC_USDT-1h.json") == ("BTCUSDT", "1h")
    assert names_from_filename("BTC_USDT_USDT-1h-futures.json") == ("BTCUSDT", "1h")
    assert names_from_filename("equities/SPY_1d.csv") == ("SPY", "1d")
    assert names_from_filename("prices.csv") == (None, None)


def test_reload_changes_nothing_and_values_are_exact(md_conn, shared_data):
    path = shared_data / "binance" / "BTC_USDT-1h.json"
    first = load_file(md_conn, path)
    assert isinstance(first, LoadResult)
    assert (first.symbol, first.timeframe, first.source, first.rows_in, first.rows_inserted) == \
        ("BTCUSDT", "1h", "binance", 5482, 5482)
    before = md_conn.execute("SELECT max(loaded_at) AS t, count(*) AS n FROM candles WHERE symbol='BTCUSDT'").fetchone()
    md_conn.rollback()
    fp = db_fingerprint(md_conn)
    again = load_file(md_conn, path)
    assert (again.rows_in, again.rows_inserted, again.rows_updated) == (5482, 0, 0)
    assert db_fingerprint(md_conn) == fp
    after = md_conn.execute("SELECT max(loaded_at) AS t, count(*) AS n FROM candles WHERE symbol='BTCUSDT'").fetchone()
    assert after == before  # not even loaded_at moved: no row was touched
    # NUMERIC keeps the published decimal text exactly
    row = md_conn.execute("SELECT open::text AS o, volume::text AS v FROM candles WHERE symbol='BTCUSDT' "
                          "AND timeframe='1h' AND open_time='2020-12-01T00:00Z'").fetchone()
    assert row == {"o": "19695.87", "v": "4570.361518"}
    df = read_candles(md_conn, "BTCUSDT", "1h", "2020-12-01", "2020-12-02")
    assert len(df) == 24 and str(df.index.tz) == "UTC" and df["close"].dtype == "float64"
    assert df.iloc[0]["open"] == 19695.87 and bool(df["complete"].all())


def test_corrected_value_is_updated_and_recorded(md_conn, tmp_path):
    p = tmp_path / "FIX_USDT-1h.json"
    p.write_text(json.dumps([[ms("2021-01-01T00:00"), 10, 11, 9, 10.5, 100],
                             [ms("2021-01-01T01:00"), 10.5, 12, 10, 11, 50]]))
    assert load_file(md_conn, p).rows_inserted == 2
    p.write_text(json.dumps([[ms("2021-01-01T00:00"), 10, 11, 9, 10.5, 100],
                             [ms("2021-01-01T01:00"), 10.5, 12, 10, 11.5, 55]]))
    res = load_file(md_conn, p)
    assert (res.rows_inserted, res.rows_updated) == (0, 1)
    ev = md_conn.execute("SELECT payload FROM system_events WHERE event_type='candles_revised' AND symbol='FIXUSDT'"
                         ).fetchone()
    assert ev["payload"]["rows_updated"] == 1
    assert read_candles(md_conn, "FIXUSDT", "1h")["close"].tolist() == [10.5, 11.5]


def test_identical_duplicate_rows_collapse(md_conn, tmp_path):
    p = tmp_path / "DUP_USDT-1h.json"
    row = [ms("2021-01-01T00:00"), 10, 11, 9, 10.5, 100]
    p.write_text(json.dumps([row, [ms("2021-01-01T01:00"), 10.5, 12, 10, 11, 50], list(row)]))
    res = load_file(md_conn, p)
    assert (res.rows_in, res.rows_inserted) == (3, 2)


def test_override_symbol_timeframe_source_and_unnamed_file(md_conn, tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("timestamp,open,high,low,close,volume\n2021-03-01,10,11,9,10.5,1000\n2021-03-02,10.5,11,10,10.8,900\n")
    with pytest.raises(AtsError, match=r"prices\.csv: cannot tell symbol/timeframe"):
        load_file(md_conn, p)
    res = load_file(md_conn, p, symbol="xyz", timeframe="1d", source="manual")
    assert (res.symbol, res.timeframe, res.source, res.rows_inserted) == ("XYZ", "1d", "manual", 2)
    t = md_conn.execute("SELECT min(open_time) AS t FROM candles WHERE symbol='XYZ'").fetchone()["t"]
    assert t == datetime(2021, 3, 1, tzinfo=UTC)  # a trading date opens at 00:00 UTC of that date


# ------------------------------------------------------------------------------------------- malformed input

T0 = ms("2021-01-01T00:00")
H = 3600_000
GOOD = [[T0, 10, 11, 9, 10.5, 100], [T0 + H, 10.5, 12, 10, 11, 50]]


def _json_rows(rows):
    return json.dumps(rows)


MALFORMED = [
    # (id, file name, content, expected message fragment)
    ("bad_json", "BAD_USDT-1h.json", _json_rows(GOOD)[:-3] + "},", r"bad JSON at line 1"),
    ("json_wrong_columns", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 1, 2, 0.5, 1]]),
     r"row 3: expected 6 columns .*got 5 columns"),
    ("json_not_array", "BAD_USDT-1h.json", '{"candles": []}', r"unrecognised JSON"),
    ("json_non_numeric", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 11, "abc", 10, 11, 5]]),
     r"row 3: high is not a number: 'abc'"),
    ("json_null_value", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 11, 12, None, 11, 5]]),
     r"row 3: low is not a number: null"),
    ("json_nan", "BAD_USDT-1h.json", _json_rows(GOOD)[:-1] + f", [{T0 + 2 * H}, 11, 12, 10, NaN, 5]]",
     r"row 3: close is not a number: 'NaN'"),
    ("high_below_low", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 11, 9.5, 10, 9.8, 5]]),
     r"row 3: high 9.5 < low 10"),
    ("negative_price", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, -11, 12, -12, 11, 5]]),
     r"row 3: non-positive price"),
    ("zero_price", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 0, 12, 0, 11, 5]]),
     r"row 3: non-positive price"),
    ("negative_volume", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 11, 12, 10, 11, -5]]),
     r"row 3: negative volume -5"),
    ("open_outside_range", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H, 13, 12, 10, 11, 5]]),
     r"row 3: open 13 outside \[low 10, high 12\]"),
    ("duplicate_timestamp_different_values", "BAD_USDT-1h.json",
     _json_rows(GOOD + [[T0, 10, 11, 9, 10.6, 100]]), r"row 3: duplicate open_time 2021-01-01T00:00:00Z .*row 1"),
    ("unknown_timeframe", "BAD_USDT-2h.json", _json_rows(GOOD), r"unknown timeframe '2h'"),
    ("misaligned_timestamp", "BAD_USDT-1h.json", _json_rows(GOOD + [[T0 + 2 * H + 60_000, 11, 12, 10, 11, 5]]),
     r"row 3: open_time 2021-01-01T02:01:00Z is not on the 1h UTC grid"),
    ("seconds_not_ms", "BAD_USDT-1h.json", _json_rows([[1609459200, 10, 11, 9, 10.5, 100]]),
     r"row 1: open_time 1609459200 is outside 1980..2100"),
    ("empty_array", "BAD_USDT-1h.json", "[]", r"no candles"),
    ("empty_file", "BAD_USDT-1h.json", "", r"empty file"),
    ("csv_wrong_header", "BAD_1d.csv", "date,open,high,low,close\n2021-01-04,1,2,0.5,1.5\n",
     r"line 1: wrong columns"),
    ("csv_wrong_column_count", "BAD_1d.csv",
     "timestamp,open,high,low,close,volume\n2021-01-04,1,2,0.5,1.5,10\n2021-01-05,1,2,0.5,1.5\n",
     r"line 3: expected 6 columns, got 5"),
    ("csv_non_numeric", "BAD_1d.csv",
     "timestamp,open,high,low,close,volume\n2021-01-04,1,2,0.5,1.5,10\n2021-01-05,1,2,0.5,1.5x,10\n",
     r"line 3: close is not a number: '1.5x'"),
    ("csv_bad_date", "BAD_1d.csv",
     "timestamp,open,high,low,close,volume\n2021-01-04,1,2,0.5,1.5,10\n2021-13-05,1,2,0.5,1.5,10\n",
     r"line 3: bad timestamp '2021-13-05'"),
    ("csv_high_below_low", "BAD_1d.csv",
     "timestamp,open,high,low,close,volume\n2021-01-04,1,2,0.5,1.5,10\n2021-01-05,1,0.4,0.5,0.45,10\n",
     r"line 3: high 0.4 < low 0.5"),
    ("csv_duplicate_date", "BAD_1d.csv",
     "timestamp,open,high,low,close,volume\n2021-01-04,1,2,0.5,1.5,10\n2021-01-04,1,2,0.5,1.6,10\n",
     r"line 3: duplicate open_time 2021-01-04T00:00:00Z .*line 2"),
]


@pytest.mark.parametrize("name,content,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_refused_naming_file_and_row(md_conn, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    before = db_fingerprint(md_conn)
    with pytest.raises(AtsError, match=message) as exc:
        load_file(md_conn, path)
    text = str(exc.value)
    assert text.startswith(str(path)) and "\n" not in text
    assert db_fingerprint(md_conn) == before


def test_load_paths_stops_at_bad_file_and_rolls_it_back(md_url, tmp_path):
    good = tmp_path / "GOOD_USDT-1h.json"
    good.write_text(json.dumps(GOOD))
    bad = tmp_path / "HALF_USDT-1h.json"
    bad.write_text(json.dumps(GOOD + [[T0 + 2 * H, 11, 9, 10, 9.5, 5]]))
    with pytest.raises(AtsError, match=r"HALF_USDT-1h\.json row 3"):
        load_paths(md_url, [good, bad])
    with psycopg.connect(md_url) as c:
        n = dict(c.execute("SELECT symbol, count(*) FROM candles WHERE symbol IN ('GOODUSDT','HALFUSDT') "
                           "GROUP BY 1").fetchall())
    assert n == {"GOODUSDT": 2}


def test_missing_path_is_named(md_url, tmp_path):
    with pytest.raises(AtsError, match="nope.json: no such file"):
        load_paths(md_url, [tmp_path / "nope.json"])


# ------------------------------------------------------------------------------------------- Bybit

def _bybit_rows():
    t = ms("2022-12-09T16:00")
    return [(t, "17071.5", "17073", "17027", "17055.5", "268611"),
            (t + H, "17055.5", "17071.5", "17061", "17071", "4177"),
            (t + 2 * H, "17071", "17080.25", "17050", "17060.125", "1234.5")]


def test_bybit_kline_payload_loads_oldest_first_exact(md_conn):
    rows = _bybit_rows()
    rows[1] = (rows[1][0], "17055.5", "17071.5", "17050", "17071", "4177")
    payload = bybit_kline_response("BTCUSDT", rows)
    assert payload["result"]["list"][0][0] == str(rows[-1][0])  # newest first, as Bybit sends it
    res = load_bybit_kline(md_conn, payload, timeframe="1h")
    assert (res.symbol, res.timeframe, res.source, res.rows_inserted) == ("BTCUSDT", "1h", "bybit", 3)
    got = md_conn.execute("SELECT open_time, close::text AS c FROM candles WHERE source='bybit' AND symbol='BTCUSDT' "
                          "ORDER BY open_time").fetchall()
    assert [g["c"] for g in got] == ["17055.5", "17071", "17060.125"]
    assert got[0]["open_time"] == datetime(2022, 12, 9, 16, tzinfo=UTC)
    assert load_bybit_kline(md_conn, payload, timeframe="1h").rows_inserted == 0


def test_bybit_payload_file_and_bad_payloads(md_conn, tmp_path):
    rows = _bybit_rows()
    rows = [(t, o, h, lo, c, v) for t, o, h, lo, c, v in rows]
    rows[1] = (rows[1][0], "17055.5", "17071.5", "17050", "17071", "4177")
    p = tmp_path / "ETHUSDT_1h.json"
    p.write_text(json.dumps(bybit_kline_response("ETHUSDT", rows)))
    res = load_file(md_conn, p)
    assert (res.symbol, res.timeframe, res.source, res.rows_inserted) == ("ETHUSDT", "1h", "bybit", 3)
    before = db_fingerprint(md_conn)
    err = {"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}, "retExtInfo": {}, "time": 1}
    with pytest.raises(AtsError, match="retCode 10001: params error"):
        load_bybit_kline(md_conn, err, timeframe="1h", symbol="NOPE")
    bad = bybit_kline_response("ETHUSDT", rows)
    bad["result"]["list"][1][2] = "oops"
    with pytest.raises(AtsError, match=r"bybit:ETHUSDT:1h result.list\[1\]: high is not a number: 'oops'"):
        load_bybit_kline(md_conn, bad, timeframe="1h")
    short = bybit_kline_response("ETHUSDT", rows)
    short["result"]["list"][0] = short["result"]["list"][0][:5]
    with pytest.raises(AtsError, match=r"result.list\[0\]: expected 7 columns"):
        load_bybit_kline(md_conn, short, timeframe="1h")
    assert db_fingerprint(md_conn) == before


# ------------------------------------------------------------------------------------------- Alpaca

def test_alpaca_stock_barset_daily(md_conn):
    from alpaca.data.models import BarSet
    from alpaca.data.timeframe import TimeFrame

    # the raw body alpaca-py's StockHistoricalDataClient.get_stock_bars wraps into a BarSet
    raw = {"SPY": [
        {"t": "2021-03-30T04:00:00Z", "o": 394.35, "h": 395.78, "l": 391.9, "c": 394.73, "v": 66174457,
         "n": 401234, "vw": 393.9},
        {"t": "2021-03-31T04:00:00Z", "o": 395.35, "h": 398.0, "l": 395.08, "c": 396.33, "v": 90673494,
         "n": 501234, "vw": 396.7},
    ]}
    barset = BarSet(raw)
    res = load_alpaca_bars(md_conn, barset, timeframe=TimeFrame.Day)
    assert [(r.symbol, r.timeframe, r.source, r.rows_inserted) for r in res] == [("SPY", "1d", "alpaca", 2)]
    df = read_candles(md_conn, "SPY", "1d", source="alpaca")
    assert list(df.index) == [datetime(2021, 3, 30, tzinfo=UTC), datetime(2021, 3, 31, tzinfo=UTC)]
    assert df["close"].tolist() == [394.73, 396.33]
    assert load_alpaca_bars(md_conn, barset, timeframe="1d")[0].rows_inserted == 0


def test_alpaca_crypto_bars_and_raw_data(md_conn):
    from alpaca.data.models import BarSet
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    raw = {"BTC/USD": [
        {"t": "2021-05-19T12:00:00Z", "o": 38000.5, "h": 39000.0, "l": 37000.25, "c": 38500.0, "v": 12.5,
         "n": 300, "vw": 38400.0},
        {"t": "2021-05-19T13:00:00Z", "o": 38500.0, "h": 38600.0, "l": 36000.0, "c": 36500.75, "v": 20.25,
         "n": 420, "vw": 37000.0},
    ]}
    res = load_alpaca_bars(md_conn, BarSet(raw), timeframe=TimeFrame(1, TimeFrameUnit.Hour))
    assert (res[0].symbol, res[0].timeframe, res[0].rows_inserted) == ("BTCUSD", "1h", 2)
    # use_raw_data=True returns the dict itself: same result, nothing new
    assert load_alpaca_bars(md_conn, raw, timeframe="1h")[0].rows_inserted == 0
    bad = {"BTC/USD": [dict(raw["BTC/USD"][0], h=1.0)]}
    before = db_fingerprint(md_conn)
    with pytest.raises(AtsError, match=r"alpaca:BTCUSD:1h bar 0 \(BTC/USD\): high 1.0 < low 37000.25"):
        load_alpaca_bars(md_conn, BarSet(bad), timeframe="1h")
    assert db_fingerprint(md_conn) == before


def test_alpaca_rest_body_file(md_conn, tmp_path):
    p = tmp_path / "QQQ_1d.json"
    p.write_text(json.dumps({"bars": {"QQQ": [
        {"t": "2021-03-31T04:00:00Z", "o": 316.0, "h": 320.0, "l": 315.5, "c": 319.13, "v": 50000000}]},
        "next_page_token": None}))
    res = load_file(md_conn, p)
    assert (res.symbol, res.timeframe, res.source, res.rows_inserted) == ("QQQ", "1d", "alpaca", 1)
    t = md_conn.execute("SELECT open_time FROM candles WHERE symbol='QQQ' AND source='alpaca'").fetchone()["open_time"]
    assert t == datetime(2021, 3, 31, tzinfo=UTC)
