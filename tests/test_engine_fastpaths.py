"""The engine's fast paths give exactly what the reference paths give: candles read by binary COPY
(ats.engine.feed.read_bars) equal read_candles' frame, and the background writer restores the GIL switch
interval it lowers."""

from __future__ import annotations

import sys

import numpy as np

from _engine_helpers import connect, engine_db, engine_template, utc  # noqa: F401
from ats.engine.feed import read_bars
from ats.market_data.store import read_candles
from ats.strategies import Bars


def _same_bars(a: Bars, b: Bars) -> None:
    assert (a.symbol, a.timeframe, len(a)) == (b.symbol, b.timeframe, len(b))
    for f in ("t", "open", "high", "low", "close", "volume"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f


def test_read_bars_equals_read_candles_frame_with_source_preference(engine_db):
    lo, hi = utc("2021-05-01"), utc("2021-06-01")
    with connect(engine_db) as conn:
        for sym, tf in (("BTCUSDT", "5m"), ("ETHUSDT", "1h"), ("AVAXUSDT", "5m")):
            got = read_bars(conn, sym, tf, lo, hi)
            assert len(got) > 100
            _same_bars(got, Bars.from_frame(sym, tf, read_candles(conn, sym, tf, lo, hi)))
        # a second source for some candles: the preferred one (binance) must win in both readers, and a candle
        # only the other source has must appear in both
        conn.execute("""INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume, source)
                        SELECT symbol, timeframe, open_time, open * 2, high * 2, low * 2, close * 2, volume, 'bybit'
                          FROM candles WHERE symbol='ETHUSDT' AND timeframe='1h' AND open_time >= %s AND open_time < %s""",
                     (utc("2021-05-10"), utc("2021-05-11")))
        conn.execute("DELETE FROM candles WHERE symbol='ETHUSDT' AND timeframe='1h' AND source='binance' AND open_time = %s",
                     (utc("2021-05-10T05:00"),))
        got = read_bars(conn, "ETHUSDT", "1h", lo, hi)
        ref = Bars.from_frame("ETHUSDT", "1h", read_candles(conn, "ETHUSDT", "1h", lo, hi))
        _same_bars(got, ref)
        only_bybit = int(utc("2021-05-10T05:00").timestamp())
        k = int(np.searchsorted(got.t, only_bybit))
        assert got.t[k] == only_bybit  # only the other source has it: it is read
        raw = conn.execute("SELECT close::float8 AS c FROM candles WHERE symbol='ETHUSDT' AND timeframe='1h' "
                           "AND source='bybit' AND open_time=%s", (utc("2021-05-10T05:00"),)).fetchone()
        assert got.close[k] == raw["c"]
        k6 = int(np.searchsorted(got.t, only_bybit + 3600))  # both sources: binance wins
        raw6 = conn.execute("SELECT close::float8 AS c FROM candles WHERE symbol='ETHUSDT' AND timeframe='1h' "
                            "AND source='binance' AND open_time=%s", (utc("2021-05-10T06:00"),)).fetchone()
        assert got.close[k6] == raw6["c"]
        empty = read_bars(conn, "NOSUCH", "1h", lo, hi)
        assert len(empty) == 0 and empty.t.dtype == np.int64 and empty.close.dtype == np.float64
        conn.rollback()


def test_background_writer_restores_switch_interval(engine_db):
    from ats.engine.replay import run_replay
    from ats.engine.runs import make_spec

    before = sys.getswitchinterval()
    spec = make_spec("replay", strategies=["momentum"], symbols=["ETHUSDT"], timeframe="1h",
                     start="2021-05-01", end="2021-05-08")
    res = run_replay(spec, url=engine_db, commit_every=24)
    assert res["status"] == "completed"
    assert sys.getswitchinterval() == before
