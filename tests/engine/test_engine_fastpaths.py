"""The engine's fast paths give exactly what the reference paths give: candles read by binary COPY
(ats.engine.feed.read_bars) equal read_candles' frame, and the background writer restores the GIL switch
interval it lowers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

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


def _engine_rows(conn, strategies, symbols, start, end, *, timeframe, fast, commit_every, tag):
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import make_spec, resolve
    from ats.engine.sink import MemorySink

    spec = resolve(conn, make_spec("replay", strategies=strategies, symbols=symbols, timeframe=timeframe,
                                   start=start, end=end, tag=tag))
    feed = ReplayFeed.load(conn, spec.symbols, timeframe, spec.start, spec.end)
    sink = MemorySink(spec.run_id, spec.account_id)
    flushes = []
    eng = Engine(conn, spec, sink=sink, feed=feed, commit_every=commit_every, fast=fast)
    real_flush = sink.flush

    def flush(checkpoint=None, **kw):  # every checkpoint the sink is given, with the rows written so far
        flushes.append((checkpoint, kw, {t: len(v) for t, v in sink.rows.items()}))
        real_flush(checkpoint, **kw)

    sink.flush = flush
    eng.run()
    return eng, sink, flushes


@pytest.mark.parametrize("case", ["5m_sma_cross_defaults", "1h_all_strategies_with_changes"])
def test_quiet_spans_give_exactly_the_step_by_step_rows_and_checkpoints(engine_db, case):
    """The bulk path for quiet spans (Engine(fast=True), the default) against the one-step-at-a-time reference
    (fast=False): identical rows in identical order in every table, identical checkpoints at identical steps,
    identical breaker/regime state - on real candles with breakers tripping (default thresholds, the May 2021
    crash), several symbols and strategies, and a settings change and a buy gate switched off mid-window."""
    from ats.db import config_store as cs
    from ats.strategies import SEEDED

    with connect(engine_db) as conn:
        if case.startswith("5m"):
            cs.upsert_strategy(conn, "sma_cross", params={}, effective_from=utc("2000-01-01"), watchlist_enabled=True,
                               buy_enabled=True, sell_enabled=True)
            args = (["sma_cross", "mean_reversion"], ["BTCUSDT", "AVAXUSDT"], "2021-05-12", "2021-05-24")
            kw = {"timeframe": "5m", "commit_every": 500}
        else:
            cs.set_setting(conn, "breaker.velocity_pct", 6.0, effective_from=utc("2021-01-20"))
            cs.upsert_strategy(conn, "momentum", params={}, effective_from=utc("2021-02-05"), watchlist_enabled=True,
                               buy_enabled=False, sell_enabled=True)
            args = (list(SEEDED), ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "2020-12-01", "2021-03-01")
            kw = {"timeframe": "1h", "commit_every": 50}
        conn.commit()
        ref, ref_sink, ref_flushes = _engine_rows(conn, *args, fast=False, tag="ref", **kw)
        got, got_sink, got_flushes = _engine_rows(conn, *args, fast=True, tag="ref", **kw)
        conn.rollback()
    assert ref.steps_done == got.steps_done > 100
    # the book of eleven triggers entries (events) more often than the seven before it: ~13 % of the 1h steps are
    # quiet here (287 of 2155), ~21 % with the seven; either way the bulk path must really run
    assert ref.bulk_steps == 0 and got.bulk_steps > got.steps_done // 10, (got.bulk_steps, got.steps_done)
    assert sum(len(v) for v in ref_sink.rows.values()) > 1000
    assert ref_sink.rows["position_evaluations"], "no exit checks at all: the case tests nothing"
    for t in ref_sink.rows:
        assert got_sink.rows[t] == ref_sink.rows[t], t
    assert len(got_flushes) == len(ref_flushes)
    for a, b in zip(got_flushes, ref_flushes):
        assert a == b
    assert got.checkpoint() == ref.checkpoint()
    assert got_sink.breaker_states == ref_sink.breaker_states and got_sink.regime_state == ref_sink.regime_state
    assert {k: v.__dict__ for k, v in got_sink.positions.items()} == {k: v.__dict__ for k, v in ref_sink.positions.items()}
