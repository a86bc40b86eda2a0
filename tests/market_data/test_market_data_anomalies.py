"""Feed anomalies (issue 3): splits vs crashes, spikes in the 2021-05-19 crash, gaps, stale, cross-source."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from ats.market_data.anomalies import (anomalies_between, detect_anomalies, detect_spikes_and_splits,
                                       find_anomalies, list_anomalies)
from ats.market_data.loaders import load_bybit_kline, load_file

from _market_data_helpers import bybit_kline_response, md_conn, md_url, ms  # noqa: F401

UTC = timezone.utc


@pytest.fixture(scope="module")
def scanned(md_url, shared_data):
    """AAPL, SPY and BTC 1h loaded and scanned once (as of just after the last BTC candle closed)."""
    with psycopg.connect(md_url, row_factory=dict_row) as c:
        for f in ("equities/AAPL_1d.csv", "equities/SPY_1d.csv", "binance/BTC_USDT-1h.json"):
            load_file(c, shared_data / f)
        new = detect_anomalies(c, as_of="2021-07-17T21:00:00Z")
    return new


def _at(rows, symbol, day):
    return [a for a in rows if a["symbol"] == symbol and a["open_time"].date().isoformat() == day]


def test_aapl_splits_are_suspected_splits_and_spy_is_quiet(md_conn, scanned):
    aapl_splits = {a["open_time"].date().isoformat(): a["detail"]["clean_ratio"]
                   for a in list_anomalies(md_conn, symbol="AAPL", kind="split")}
    assert aapl_splits == {"2000-06-21": "2:1", "2005-02-28": "2:1", "2014-06-09": "7:1", "2020-08-31": "4:1"}
    rows = list_anomalies(md_conn, symbol="AAPL")
    for day in ("2014-06-09", "2020-08-31"):
        kinds = [a["kind"] for a in _at(rows, "AAPL", day)]
        assert kinds == ["split"]  # a split is not also reported as a spike
        split = _at(rows, "AAPL", day)[0]
        assert split["detail"]["reference"] == "SPY" and abs(split["detail"]["reference_move"]) < 0.01
    spy = list_anomalies(md_conn, symbol="SPY")
    assert _at(spy, "SPY", "2014-06-09") == [] and _at(spy, "SPY", "2020-08-31") == []
    assert not [a for a in spy if a["kind"] == "split"]


def test_a_crash_is_a_spike_not_a_split(md_conn, scanned):
    # AAPL lost 52 % overnight on 2000-09-29 (profit warning): close to 2:1 by ratio, but it is a crash
    crash = _at(list_anomalies(md_conn, symbol="AAPL"), "AAPL", "2000-09-29")
    assert [a["kind"] for a in crash] == ["spike"]
    assert crash[0]["detail"]["return"] < -0.5


def test_btc_crash_of_2021_05_19_produces_spikes(md_conn, scanned):
    day = anomalies_between(md_conn, "2021-05-19", "2021-05-20", symbols=["BTCUSDT"])
    assert day, "the 2021-05-19 crash must produce feed anomalies"
    assert {a["kind"] for a in day} == {"spike"}
    hours = [a["open_time"].hour for a in day if a["timeframe"] == "1h"]
    assert 12 in hours  # the -9.4 % hour
    first = [a for a in day if a["open_time"].hour == 12][0]
    assert first["detail"]["return"] < -0.09 and first["detail"]["z"] < -5
    assert set(first) >= {"symbol", "timeframe", "open_time", "kind", "detail", "observed_at"}
    assert first["observed_at"] == datetime(2021, 5, 19, 13, tzinfo=UTC)
    assert not list_anomalies(md_conn, symbol="BTCUSDT", kind="split")


def test_gaps_match_coverage_and_every_new_anomaly_is_an_event(md_conn, scanned):
    gaps = list_anomalies(md_conn, symbol="BTCUSDT", kind="gap")
    assert [(a["open_time"].isoformat(), a["detail"]["bars"]) for a in gaps] == [
        ("2020-12-21T15:00:00+00:00", 3), ("2020-12-25T02:00:00+00:00", 1), ("2021-02-11T04:00:00+00:00", 1),
        ("2021-03-06T02:00:00+00:00", 1), ("2021-04-20T02:00:00+00:00", 2), ("2021-04-25T05:00:00+00:00", 3)]
    n_anom = md_conn.execute("SELECT count(*) AS n FROM feed_anomalies").fetchone()["n"]
    ev = md_conn.execute("SELECT count(*) AS n, count(DISTINCT (payload->>'anomaly_id')) AS d FROM system_events "
                         "WHERE component='market_data' AND event_type='feed_anomaly'").fetchone()
    assert n_anom == len(scanned) == ev["n"] == ev["d"]
    e = md_conn.execute("SELECT ts, symbol, payload FROM system_events WHERE event_type='feed_anomaly' "
                        "AND payload->>'kind'='split' AND symbol='AAPL' ORDER BY ts DESC LIMIT 1").fetchone()
    assert e["ts"] == datetime(2020, 9, 1, tzinfo=UTC) and e["payload"]["open_time"] == "2020-08-31T00:00:00Z"
    # re-scanning finds the same anomalies and records nothing new
    assert detect_anomalies(md_conn, as_of="2021-07-17T21:00:00Z") == []
    assert md_conn.execute("SELECT count(*) AS n FROM system_events WHERE event_type='feed_anomaly'"
                           ).fetchone()["n"] == ev["n"]


def test_stale_feed(md_conn, scanned):
    found = find_anomalies(md_conn, symbols=["BTCUSDT"], as_of="2021-07-18T03:00:00Z", kinds=["stale"])
    assert len(found) == 1
    a = found[0]
    assert a["open_time"] == datetime(2021, 7, 17, 21, tzinfo=UTC) and a["detail"]["behind"] == 6
    assert a["severity"] == "critical"
    assert find_anomalies(md_conn, symbols=["BTCUSDT"], as_of="2021-07-17T22:00:00Z", kinds=["stale"]) == []
    # SPY after a long weekend (Good Friday 2021-04-02) is not stale
    assert find_anomalies(md_conn, symbols=["SPY"], as_of="2021-04-05T12:00:00Z", kinds=["stale"]) == []


def test_cross_source_disagreement(md_conn, scanned):
    t = ms("2021-05-19T00:00")
    H = 3600_000
    # Bybit's view of three hours: first two within 0.1 % of Binance, the third 2 % off on the close
    rows = [(t, "42850.1", "43590", "42495.5", "42612", "100"),                 # Binance: 42849.78 43584.9 42500 42610.25
            (t + H, "42612", "42701", "40510", "40850", "100"),                   # Binance: ... 40500.15 40843.52
            (t + 2 * H, "40850", "41720", "40280", "41660", "100")]               # Binance close 40325.01: 3.3 % off
    load_bybit_kline(md_conn, bybit_kline_response("BTCUSDT", rows), timeframe="1h")
    found = find_anomalies(md_conn, symbols=["BTCUSDT"], timeframes=["1h"], kinds=["cross_source"],
                           as_of="2021-07-18")
    assert [a["open_time"] for a in found] == [datetime(2021, 5, 19, 2, tzinfo=UTC)]
    d = found[0]["detail"]
    assert set(d["sources"]) == {"binance", "bybit"} and d["field"] == "close" and d["rel_diff"] > 0.01


def _frame(closes, opens=None):
    idx = pd.date_range("2021-01-04", periods=len(closes), freq="D", tz="UTC", name="open_time")
    c = np.array(closes, dtype=float)
    o = np.array(opens if opens is not None else np.r_[c[0], c[:-1]], dtype=float)
    return pd.DataFrame({"open": o, "high": np.maximum(o, c) * 1.001, "low": np.minimum(o, c) * 0.999,
                         "close": c, "volume": 1.0, "complete": True}, index=idx)


def test_split_needs_a_quiet_reference_index():
    rng = np.random.default_rng(7)
    base = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    closes = base.copy()
    closes[40:] /= 3.0
    opens = np.r_[closes[0], closes[:-1]]
    opens[40] = closes[40]
    stock = _frame(closes, opens)
    quiet = _frame(100 * np.exp(np.cumsum(rng.normal(0, 0.005, 60))))
    found = detect_spikes_and_splits(stock, "1d", quiet, "SPY")
    assert [(a["kind"], a["open_time"].day, a["detail"]["clean_ratio"]) for a in found] == [("split", 13, "3:1")]
    ref_closes = quiet["close"].to_numpy().copy()
    ref_closes[40:] /= 3.0
    ref_opens = np.r_[ref_closes[0], ref_closes[:-1]]
    ref_opens[40] = ref_closes[40]
    moved = _frame(ref_closes, ref_opens)
    kinds = [a["kind"] for a in detect_spikes_and_splits(stock, "1d", moved, "SPY")]
    assert "split" not in kinds and kinds == ["spike"]  # the whole market moved: a crash, not a split
