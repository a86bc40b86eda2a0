"""Feed anomalies: gaps, stale feeds, spikes, suspected splits, bad ticks, cross-source disagreement.

Detected by ``detect_anomalies`` (``ats data anomalies --scan``) over every stored series that has a native
(non-resampled) source, stored in ``feed_anomalies`` (migration 0002; unique per symbol/timeframe/open_time/
kind, so re-scanning adds nothing new), and each NEW anomaly is also a ``system_events`` row (component
``market_data``, event_type ``feed_anomaly``, ``ts`` = open_time + timeframe: the moment the anomalous candle
closed, i.e. when a live engine could first have seen it). The engine's feed-anomaly circuit breaker reads them
with ``anomalies_between``.

Rules (constants below; returns are natural-log returns of close prices, in fractions, not percent):

* gap: each run of missing bars from the coverage grid (``coverage.py``: 24/7 grid for crypto, NYSE trading
  days for equities); open_time = first missing bar; detail {bars, calendar}.
* stale: the last candle is ``>= coverage.STALE_AMBER_BARS`` bars behind ``as_of`` (default now); open_time =
  the first bar that should exist but does not; detail {last, behind, as_of}; critical from
  ``coverage.STALE_RED_BARS``.
* spike: close-to-close return r_t with |r_t| > SPIKE_K (5) x sigma_t, where sigma_t is the standard deviation of
  the previous SPIKE_WINDOW (48) returns (at least 24), and |r_t| >= SPIKE_MIN_MOVE[timeframe]; or an intrabar
  wick (low or high against the previous close) beyond SPIKE_WICK_K (8) x sigma_t and 2 x the minimum move.
  Returns flagged as splits or bad ticks are excluded from sigma and never reported as spikes.
* split (suspected): the overnight jump ``previous close / open`` is within SPLIT_TOLERANCE (3 %) of a clean
  ratio in SPLIT_RATIOS (2:1, 3:1, 4:1, 5:1, 7:1, 8:1, 10:1, ... and the reverse 1:N), open, high, low and close
  of that bar all sit at the new level and the next SPLIT_PERSIST_BARS (2) closes stay there, and the reference
  index (SPY for equities, BTCUSDT for crypto; same timeframe) moved less than SPLIT_REFERENCE_MAX_MOVE (10 %)
  over the same interval; detail {ratio, clean_ratio, prev_close, open, persisted_bars, volume_ratio,
  reference, reference_move}. The 3 % tolerance keeps AAPL's real 2000-09-29 crash (-52 %, ratio 1.90) a spike
  while its 2014 7:1 (6.96) and 2020 4:1 (3.91) splits are splits. The last bar of a series cannot be
  confirmed yet: until the next bar arrives it is judged as a spike.
* bad_tick: a single-bar print in one or more of open/high/low/close that is away from both neighbours (the
  previous close and the next open) in the same direction by at least max(BAD_TICK_MIN_MOVE[timeframe],
  BAD_TICK_K (10) x a robust sigma of recent returns), uncorroborated by volume (< BAD_TICK_VOLUME_CONFIRM (3)
  x the median of the previous 48 bars) or by the reference index (its same field moved less than
  BAD_TICK_REFERENCE_SHARE (25 %) of it); detail {fields, values, move, prev_close, next_open, sigma,
  threshold, volume_ratio, reference, reference_move}. A bad tick is confirmed only once the next bar exists.
  Its bar is never a split or a spike (a bad close also spares the next bar's return). Example in the real
  data: AAPL 2009-09-21, low 10.59 between closes of 185.02 and an open of 185.10.
* cross_source: two sources hold the same candle and their open/high/low/close differ by more than
  CROSS_SOURCE_TOLERANCE (0.5 %) relative; detail {sources: {name: {open, high, low, close}}, field, rel_diff}.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from ..db.events import record_event
from ..errors import UsageError
from ..timeutil import TIMEFRAME_SECONDS, UTC, parse_ts, utcnow
from . import coverage as cov
from .calendar import is_nyse_trading_day
from .resample import RESAMPLE_SOURCE
from .store import read_candles, series_filter, write_scope

KINDS = ("gap", "stale", "spike", "split", "bad_tick", "cross_source")
FIELDS = ("open", "high", "low", "close")
SPIKE_K = 5.0
SPIKE_WICK_K = 8.0
SPIKE_WINDOW = 48
SPIKE_MIN_PERIODS = 24
SPIKE_MIN_MOVE = {"5m": 0.01, "15m": 0.015, "1h": 0.02, "4h": 0.03, "1d": 0.03, "1w": 0.05}
SPLIT_RATIOS = (2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50)
SPLIT_TOLERANCE = 0.03
SPLIT_REFERENCE_MAX_MOVE = 0.10
SPLIT_PERSIST_BARS = 2
BAD_TICK_K = 10.0
BAD_TICK_MIN_MOVE = {"5m": 0.05, "15m": 0.06, "1h": 0.08, "4h": 0.10, "1d": 0.10, "1w": 0.15}
BAD_TICK_VOLUME_CONFIRM = 3.0
BAD_TICK_REFERENCE_SHARE = 0.25
EQUITY_REFERENCE = "SPY"
CRYPTO_REFERENCE = "BTCUSDT"
CROSS_SOURCE_TOLERANCE = 0.005


def _iso(t) -> str:
    return cov.iso(pd.Timestamp(t).to_pydatetime())


def _prev(a: np.ndarray) -> np.ndarray:
    return np.concatenate(([np.nan], a[:-1]))


def _next(a: np.ndarray) -> np.ndarray:
    return np.concatenate((a[1:], [np.nan]))


def _robust_sigma(r: np.ndarray) -> np.ndarray:
    """Per bar: 1.4826 x the median |log return| of the previous SPIKE_WINDOW bars (at least SPIKE_MIN_PERIODS):
    a scale estimate that one bad print or one split does not inflate (median absolute deviation around 0)."""
    med = pd.Series(np.abs(r)).rolling(SPIKE_WINDOW, min_periods=SPIKE_MIN_PERIODS).median().shift(1)
    return (1.4826 * med).to_numpy()


def _ref_field_moves(df: pd.DataFrame, ref: pd.DataFrame | None) -> dict[str, np.ndarray] | None:
    """Log move of each reference field against the reference's previous close, aligned on ``df``'s index."""
    if ref is None or len(ref) < 2:
        return None
    pc = ref["close"].shift(1)
    return {f: np.log((ref[f] / pc).reindex(df.index).to_numpy(dtype=float)) for f in FIELDS}


def detect_bad_ticks(df: pd.DataFrame, timeframe: str, ref: pd.DataFrame | None = None,
                     ref_symbol: str | None = None) -> list[dict]:
    """Bad ticks: single-bar outliers in one or more OHLC fields that revert at the next bar.

    A field f of bar i is a bad print when it is away from both its neighbours in the same direction (the
    previous close and the next open), by ``dev = min(|log(f / prev_close)|, |log(f / next_open)|)`` of at
    least ``max(BAD_TICK_MIN_MOVE[timeframe], BAD_TICK_K x sigma)`` (sigma: robust scale of the previous
    SPIKE_WINDOW close-to-close log returns, see ``_robust_sigma``), and nothing corroborates the move: the
    bar's volume is below BAD_TICK_VOLUME_CONFIRM x the median volume of the previous SPIKE_WINDOW bars and the
    reference index's same field moved less than BAD_TICK_REFERENCE_SHARE of ``dev`` the same way. A real
    wick (the 2021-05-19 crypto crash, the 2010-05-06 flash crash) comes with heavy volume and a market-wide
    move; a print like AAPL's 2009-09-21 low of 10.59 (previous close 185.02) does not. The first and last bar
    cannot be judged (no neighbour on one side).

    Parameters
    ----------
    df : pandas.DataFrame
        ``read_candles`` shape: open/high/low/close/volume (float), index open_time (UTC), oldest first.
    timeframe : str
        The candles' timeframe ('5m' .. '1w'), for BAD_TICK_MIN_MOVE.
    ref, ref_symbol : pandas.DataFrame or None, str or None
        The reference index (same timeframe) and its symbol, or None.

    Returns
    -------
    list of dict
        ``{open_time (Timestamp), kind: 'bad_tick', severity, detail}``; detail: fields (names of the bad
        fields, OHLC order), values {field: printed price}, move {field: relative move against the nearer
        neighbour, fraction, signed}, prev_close, next_open, sigma, threshold (log), volume_ratio, reference,
        reference_move {field: fraction}.
    """
    out: list[dict] = []
    if len(df) < 3:
        return out
    close, opens = df["close"].to_numpy(dtype=float), df["open"].to_numpy(dtype=float)
    pc, no = _prev(close), _next(opens)
    sigma = _robust_sigma(np.log(close / pc))
    thr = np.maximum(BAD_TICK_MIN_MOVE.get(timeframe, 0.10), BAD_TICK_K * np.nan_to_num(sigma))
    vol = df["volume"].to_numpy(dtype=float) if "volume" in df else np.full(len(df), np.nan)
    vmed = pd.Series(vol).rolling(SPIKE_WINDOW, min_periods=SPIKE_MIN_PERIODS).median().shift(1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        vratio = vol / vmed
    ref_moves = _ref_field_moves(df, ref)
    devs: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for f in FIELDS:
            v = df[f].to_numpy(dtype=float)
            a, b = np.log(v / pc), np.log(v / no)
            same = np.sign(a) == np.sign(b)
            dev = np.where(same, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)
            bad = np.isfinite(dev) & (np.abs(dev) >= thr)
            bad &= ~(np.nan_to_num(vratio) >= BAD_TICK_VOLUME_CONFIRM)
            if ref_moves is not None:
                rm = np.nan_to_num(ref_moves[f])
                bad &= ~((np.sign(rm) == np.sign(dev)) & (np.abs(rm) >= BAD_TICK_REFERENCE_SHARE * np.abs(dev)))
            devs[f] = np.where(bad, dev, np.nan)
    flagged = np.zeros(len(df), dtype=bool)
    for f in FIELDS:
        flagged |= np.isfinite(devs[f])
    for i in np.flatnonzero(flagged):
        fields = [f for f in FIELDS if np.isfinite(devs[f][i])]
        out.append({"open_time": df.index[i], "kind": "bad_tick", "severity": "warning",
                    "detail": {"fields": fields,
                               "values": {f: float(df[f].iloc[i]) for f in fields},
                               "move": {f: round(float(math.expm1(devs[f][i])), 6) for f in fields},
                               "prev_close": float(pc[i]), "next_open": float(no[i]),
                               "sigma": None if not np.isfinite(sigma[i]) else round(float(sigma[i]), 6),
                               "threshold": round(float(thr[i]), 6),
                               "volume_ratio": None if not np.isfinite(vratio[i]) else round(float(vratio[i]), 3),
                               "reference": ref_symbol if ref_moves is not None else None,
                               "reference_move": None if ref_moves is None else {
                                   f: (None if not np.isfinite(ref_moves[f][i])
                                       else round(float(math.expm1(ref_moves[f][i])), 6)) for f in fields}}})
    return out


def _split_confirmed(df: pd.DataFrame, i: int, clean_log: float) -> tuple[bool, int]:
    """Whether bar i's open/high/low/close all sit at the new price level (nearer, in log terms, to
    ``prev_close x exp(clean_log)`` than to ``prev_close``) and the closes of the next SPLIT_PERSIST_BARS bars
    (at least one must exist) stay there. Returns (confirmed, bars checked after i)."""
    pc = float(df["close"].iloc[i - 1])

    def at_new_level(price: float) -> bool:
        x = math.log(price / pc)
        return abs(x - clean_log) < abs(x)

    if not all(at_new_level(float(df[f].iloc[i])) for f in FIELDS):
        return False, 0
    after = df["close"].iloc[i + 1:i + 1 + SPLIT_PERSIST_BARS].to_numpy(dtype=float)
    return len(after) > 0 and all(at_new_level(float(c)) for c in after), len(after)


def detect_splits(df: pd.DataFrame, ref: pd.DataFrame | None = None, ref_symbol: str | None = None,
                  skip: np.ndarray | None = None) -> list[dict]:
    """Suspected splits: open, high, low and close move together by a clean ratio and the level persists.

    Bar i is a split when ``prev_close / open`` is within SPLIT_TOLERANCE of a clean ratio N (or 1/N) of
    SPLIT_RATIOS, all four prices of bar i sit at the new level and the next SPLIT_PERSIST_BARS closes stay
    there (``_split_confirmed``), and the reference index moved less than SPLIT_REFERENCE_MAX_MOVE over the
    same interval. A bar with a bad tick (``skip``) is never a split; the last bar cannot be confirmed yet
    (it is judged as a spike until the next bar arrives).

    Parameters
    ----------
    df : pandas.DataFrame
        ``read_candles`` shape, oldest first.
    ref, ref_symbol : pandas.DataFrame or None, str or None
        The reference index (same timeframe) and its symbol, or None.
    skip : numpy.ndarray of bool, optional
        Per bar: True where a bad tick was found.

    Returns
    -------
    list of dict
        ``{open_time, kind: 'split', severity, detail}``; detail: ratio (prev_close / open), clean_ratio
        ('N:1' forward, '1:N' reverse), prev_close, open, persisted_bars, volume_ratio (volume / previous
        bar's volume; usually about N for an N:1 split), reference, reference_move (fraction).
    """
    out: list[dict] = []
    if len(df) < 2:
        return out
    close, opens = df["close"].to_numpy(dtype=float), df["open"].to_numpy(dtype=float)
    pc = _prev(close)
    jump = pc / opens  # > 1: price fell overnight (a forward split); < 1: reverse split
    ref_open_ret = None
    if ref is not None and len(ref) > 1:
        ref_jump = (ref["close"].shift(1) / ref["open"]).reindex(df.index)
        ref_open_ret = np.abs(np.log(ref_jump.to_numpy(dtype=float)))
    vol = df["volume"].to_numpy(dtype=float) if "volume" in df else np.full(len(df), np.nan)
    for i in np.flatnonzero(np.isfinite(jump) & ((jump > 1.4) | (jump < 1 / 1.4))):
        if skip is not None and skip[i]:
            continue
        j = jump[i]
        big = j if j >= 1 else 1 / j
        clean = min(SPLIT_RATIOS, key=lambda r: abs(big / r - 1))
        if abs(big / clean - 1) > SPLIT_TOLERANCE:
            continue
        ok, persisted = _split_confirmed(df, i, -math.log(clean) if j >= 1 else math.log(clean))
        if not ok:
            continue
        ref_move = None
        if ref_open_ret is not None and np.isfinite(ref_open_ret[i]):
            ref_move = float(math.expm1(ref_open_ret[i]))
            if ref_open_ret[i] >= math.log1p(SPLIT_REFERENCE_MAX_MOVE):
                continue  # the whole market moved: not a split
        vr = vol[i] / vol[i - 1] if vol[i - 1] > 0 else float("nan")
        out.append({"open_time": df.index[i], "kind": "split", "severity": "warning",
                    "detail": {"ratio": round(float(j), 4),
                               "clean_ratio": f"{clean}:1" if j >= 1 else f"1:{clean}",
                               "prev_close": float(pc[i]), "open": float(opens[i]),
                               "persisted_bars": persisted,
                               "volume_ratio": round(float(vr), 3) if np.isfinite(vr) else None,
                               "reference": ref_symbol if ref is not None else None,
                               "reference_move": None if ref_move is None else round(ref_move, 6)}})
    return out


def detect_spikes(df: pd.DataFrame, timeframe: str, exclude: np.ndarray | None = None) -> list[dict]:
    """Spikes: close-to-close or intrabar-wick moves far beyond recent volatility (rules in the module docstring).

    Parameters
    ----------
    df : pandas.DataFrame
        ``read_candles`` shape, oldest first.
    timeframe : str
        For SPIKE_MIN_MOVE.
    exclude : numpy.ndarray of bool, optional
        Per bar: True where the return is an artefact (a split, a bad tick, or the bar after a bad close):
        left out of sigma and never reported as a spike.

    Returns
    -------
    list of dict
        ``{open_time, kind: 'spike', severity, detail}``; detail: basis ('close' | 'wick'), return (log,
        fraction), sigma, z, prev_close, close, low, high.
    """
    out: list[dict] = []
    if len(df) < 2:
        return out
    excl = np.zeros(len(df), dtype=bool) if exclude is None else exclude
    close = df["close"].to_numpy(dtype=float)
    prev_close = _prev(close)
    r = np.log(close / prev_close)
    sigma = pd.Series(np.where(excl, np.nan, r)).rolling(SPIKE_WINDOW, min_periods=SPIKE_MIN_PERIODS).std()
    sigma = sigma.shift(1).to_numpy()
    lo = np.log(df["low"].to_numpy(dtype=float) / prev_close)
    hi = np.log(df["high"].to_numpy(dtype=float) / prev_close)
    wick = np.where(np.abs(lo) > np.abs(hi), lo, hi)
    min_move = SPIKE_MIN_MOVE.get(timeframe, 0.02)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = r / sigma
        zw = wick / sigma
        close_spike = (np.abs(z) > SPIKE_K) & (np.abs(r) >= min_move)
        wick_spike = (np.abs(zw) > SPIKE_WICK_K) & (np.abs(wick) >= 2 * min_move)
    for i in np.flatnonzero((close_spike | wick_spike) & ~excl & np.isfinite(sigma)):
        basis = "close" if close_spike[i] else "wick"
        ret = r[i] if basis == "close" else wick[i]
        zz = z[i] if basis == "close" else zw[i]
        out.append({"open_time": df.index[i], "kind": "spike",
                    "severity": "critical" if abs(zz) > 2 * SPIKE_K else "warning",
                    "detail": {"basis": basis, "return": round(float(ret), 6), "sigma": round(float(sigma[i]), 6),
                               "z": round(float(zz), 2), "prev_close": float(prev_close[i]),
                               "close": float(close[i]), "low": float(df["low"].iloc[i]),
                               "high": float(df["high"].iloc[i])}})
    return out


def detect_spikes_and_splits(df: pd.DataFrame, timeframe: str, ref: pd.DataFrame | None = None,
                             ref_symbol: str | None = None) -> list[dict]:
    """Bad-tick, split and spike anomalies of one candle frame, in that order of precedence.

    A bar with a bad tick is neither a split nor a spike (and, when its close is bad, neither is the next
    bar's return); a split's return is not a spike and stays out of the spike sigma.

    Parameters
    ----------
    df : pandas.DataFrame
        ``read_candles`` shape: open/high/low/close/volume, index open_time (UTC), oldest first.
    timeframe : str
        The candles' timeframe.
    ref, ref_symbol : pandas.DataFrame or None, str or None
        The reference index frame (same timeframe) and its symbol, for splits and bad ticks.

    Returns
    -------
    list of dict
        ``{open_time (Timestamp), kind ('bad_tick' | 'split' | 'spike'), severity, detail}``, by open_time.
    """
    n = len(df)
    bad = detect_bad_ticks(df, timeframe, ref, ref_symbol)
    bad_at = np.zeros(n, dtype=bool)
    artefact = np.zeros(n, dtype=bool)
    pos = {t: k for k, t in enumerate(df.index)}
    for a in bad:
        k = pos[a["open_time"]]
        bad_at[k] = artefact[k] = True
        if "close" in a["detail"]["fields"] and k + 1 < n:
            artefact[k + 1] = True
    splits = detect_splits(df, ref, ref_symbol, skip=bad_at)
    for a in splits:
        artefact[pos[a["open_time"]]] = True
    out = bad + splits + detect_spikes(df, timeframe, exclude=artefact)
    out.sort(key=lambda a: a["open_time"])
    return out


def _cross_source(conn: psycopg.Connection, symbols: list[str] | None, timeframes: list[str] | None,
                  as_of: datetime) -> list[dict]:
    conds = ["a.source < b.source", f"a.source <> '{RESAMPLE_SOURCE}'", f"b.source <> '{RESAMPLE_SOURCE}'",
             "a.open_time <= %(as_of)s"]
    params: dict = {"tol": CROSS_SOURCE_TOLERANCE, "as_of": as_of}
    series_filter(conds, params, symbols, timeframes, alias="a.")
    diff = "greatest(abs(a.{c} - b.{c}) / nullif(least(a.{c}, b.{c}), 0), 0)"
    sql = f"""
        SELECT a.symbol, a.timeframe, a.open_time, a.source AS sa, b.source AS sb,
               a.open::float8 AS ao, a.high::float8 AS ah, a.low::float8 AS al, a.close::float8 AS ac,
               b.open::float8 AS bo, b.high::float8 AS bh, b.low::float8 AS bl, b.close::float8 AS bc,
               {diff.format(c='open')}::float8 AS d_open, {diff.format(c='high')}::float8 AS d_high,
               {diff.format(c='low')}::float8 AS d_low, {diff.format(c='close')}::float8 AS d_close
          FROM candles a JOIN candles b USING (symbol, timeframe, open_time)
         WHERE {' AND '.join(conds)}
           AND greatest({diff.format(c='open')}, {diff.format(c='high')}, {diff.format(c='low')},
                        {diff.format(c='close')}) > %(tol)s
         ORDER BY a.symbol, a.timeframe, a.open_time"""
    out: dict[tuple, dict] = {}
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for row in cur.execute(sql, params).fetchall():
            key = (row["symbol"], row["timeframe"], row["open_time"])
            field, rel = max(((f, row[f"d_{f}"] or 0.0) for f in ("open", "high", "low", "close")), key=lambda x: x[1])
            item = out.get(key)
            srcs = {row["sa"]: {"open": row["ao"], "high": row["ah"], "low": row["al"], "close": row["ac"]},
                    row["sb"]: {"open": row["bo"], "high": row["bh"], "low": row["bl"], "close": row["bc"]}}
            if item is None or rel > item["detail"]["rel_diff"]:
                merged = dict(item["detail"]["sources"]) if item else {}
                merged.update(srcs)
                out[key] = {"symbol": key[0], "timeframe": key[1], "open_time": key[2], "kind": "cross_source",
                            "severity": "warning",
                            "detail": {"sources": merged, "field": field, "rel_diff": round(float(rel), 6),
                                       "tolerance": CROSS_SOURCE_TOLERANCE}}
            else:
                item["detail"]["sources"].update(srcs)
    return list(out.values())


def _native_series(conn: psycopg.Connection, symbols, timeframes) -> list[tuple[str, str]]:
    conds = ["source <> %(rs)s"]
    params: dict = {"rs": RESAMPLE_SOURCE}
    series_filter(conds, params, symbols, timeframes)
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute(f"SELECT DISTINCT symbol, timeframe FROM candles WHERE {' AND '.join(conds)}",
                           params).fetchall()
    return sorted(rows, key=lambda r: (r[0], TIMEFRAME_SECONDS.get(r[1], 0)))


def _next_expected(last: datetime, timeframe: str, calendar: str) -> datetime:
    if calendar == "24/7":
        return last + timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    d = last.date() + timedelta(days=1)
    while not is_nyse_trading_day(d):
        d += timedelta(days=1)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def find_anomalies(conn: psycopg.Connection, *, symbols: list[str] | None = None,
                   timeframes: list[str] | None = None, as_of=None, kinds=KINDS) -> list[dict]:
    """Detect anomalies without storing them. Returns dicts {symbol, timeframe, open_time (aware UTC datetime),
    kind, severity, detail}. Only candles closed by ``as_of`` (default now) are considered."""
    bad = set(kinds) - set(KINDS)
    if bad:
        raise UsageError(f"unknown anomaly kind(s) {sorted(bad)}; expected {', '.join(KINDS)}")
    as_of_dt = utcnow() if as_of is None else parse_ts(as_of, what="as_of")
    found: list[dict] = []
    series = _native_series(conn, symbols, timeframes)
    if {"gap", "stale"} & set(kinds) and series:
        grid = cov.coverage(conn, as_of_dt, symbols=sorted({s for s, _ in series}),
                            timeframes=sorted({t for _, t in series}))
        wanted = set(series)
        for row in grid:
            if (row["symbol"], row["timeframe"]) not in wanted or row["last"] is None:
                continue
            if "gap" in kinds:
                for g in row["gaps"]:
                    found.append({"symbol": row["symbol"], "timeframe": row["timeframe"],
                                  "open_time": parse_ts(g["start"]), "kind": "gap", "severity": "warning",
                                  "detail": {"bars": g["bars"], "calendar": row["calendar"]}})
            behind = row["freshness"]["behind"]
            if "stale" in kinds and behind >= cov.STALE_AMBER_BARS:
                found.append({"symbol": row["symbol"], "timeframe": row["timeframe"],
                              "open_time": _next_expected(parse_ts(row["last"]), row["timeframe"], row["calendar"]),
                              "kind": "stale", "severity": "critical" if behind >= cov.STALE_RED_BARS else "warning",
                              "detail": {"last": row["last"], "behind": behind, "as_of": cov.iso(as_of_dt),
                                         "calendar": row["calendar"]}})
    if {"spike", "split", "bad_tick"} & set(kinds):
        ref_cache: dict[tuple[str, str], pd.DataFrame] = {}
        for sym, tf in series:
            step = timedelta(seconds=TIMEFRAME_SECONDS[tf])
            df = read_candles(conn, sym, tf, end=as_of_dt - step + timedelta(microseconds=1))
            if df.empty:
                continue
            times = (df.index.asi8 // 10**9).astype(np.int64)
            calendar = cov.series_calendar(sym, tf, times)
            ref_sym = CRYPTO_REFERENCE if calendar == "24/7" else EQUITY_REFERENCE
            ref = None
            if ref_sym != sym:
                if (ref_sym, tf) not in ref_cache:
                    ref_cache[(ref_sym, tf)] = read_candles(conn, ref_sym, tf, end=as_of_dt)
                ref = ref_cache[(ref_sym, tf)]
                if ref.empty:
                    ref = None
            for a in detect_spikes_and_splits(df, tf, ref, ref_sym if ref is not None else None):
                if a["kind"] in kinds:
                    found.append({"symbol": sym, "timeframe": tf, "open_time": a["open_time"].to_pydatetime(),
                                  "kind": a["kind"], "severity": a["severity"], "detail": a["detail"]})
    if "cross_source" in kinds:
        found.extend(_cross_source(conn, symbols, timeframes, as_of_dt))
    found.sort(key=lambda a: (a["open_time"], a["symbol"], a["timeframe"], a["kind"]))
    return found


def record_anomalies(conn: psycopg.Connection, anomalies: list[dict]) -> list[dict]:
    """Insert anomalies into ``feed_anomalies`` (existing ones are left alone) and write one ``system_events``
    row per NEW anomaly; one transaction. Returns the new anomalies (with anomaly_id)."""
    new: list[dict] = []
    with conn.transaction():
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            for a in anomalies:
                row = cur.execute(
                    """INSERT INTO feed_anomalies (symbol, timeframe, open_time, kind, severity, detail)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (symbol, timeframe, open_time, kind) DO NOTHING RETURNING anomaly_id""",
                    (a["symbol"], a["timeframe"], a["open_time"], a["kind"], a.get("severity", "warning"),
                     Jsonb(a.get("detail") or {}))).fetchone()
                if row is None:
                    continue
                item = dict(a, anomaly_id=row["anomaly_id"])
                new.append(item)
                step = timedelta(seconds=TIMEFRAME_SECONDS[a["timeframe"]])
                record_event(conn, "market_data", "feed_anomaly",
                             severity="critical" if a.get("severity") == "critical" else "warning",
                             symbol=a["symbol"], ts=a["open_time"] + step,
                             payload={"anomaly_id": row["anomaly_id"], "timeframe": a["timeframe"],
                                      "open_time": cov.iso(a["open_time"]), "kind": a["kind"],
                                      "detail": a.get("detail") or {}})
    return new


def detect_anomalies(conn: psycopg.Connection, *, symbols: list[str] | None = None,
                     timeframes: list[str] | None = None, as_of=None, kinds=KINDS) -> list[dict]:
    """Find and store anomalies (see module docstring); returns only the NEW ones (each also a system_events
    row). Safe to re-run: known anomalies are not duplicated. Commits when ``conn`` had no transaction open on
    entry (else the caller commits)."""
    with write_scope(conn):
        return record_anomalies(conn, find_anomalies(conn, symbols=symbols, timeframes=timeframes, as_of=as_of,
                                                     kinds=kinds))


def _rows(conn: psycopg.Connection, sql: str, params) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    out = []
    for r in rows:
        step = timedelta(seconds=TIMEFRAME_SECONDS.get(r["timeframe"], 0))
        out.append({"symbol": r["symbol"], "timeframe": r["timeframe"], "open_time": r["open_time"],
                    "kind": r["kind"], "detail": r["detail"], "severity": r["severity"],
                    "observed_at": r["open_time"] + step, "anomaly_id": r["anomaly_id"]})
    return out


def anomalies_between(conn: psycopg.Connection, start, end, symbols: list[str] | None = None, *,
                      kinds=None, timeframes: list[str] | None = None) -> list[dict]:
    """Stored anomalies with ``start <= open_time < end`` (UTC), oldest first.

    Each dict: symbol, timeframe, open_time (aware UTC datetime, the anomalous candle's open), kind
    ('gap'|'stale'|'spike'|'split'|'bad_tick'|'cross_source'), detail (dict), severity, observed_at (open_time +
    timeframe: when the candle closed), anomaly_id. ``symbols`` / ``kinds`` / ``timeframes`` filter.
    """
    conds = ["open_time >= %(start)s", "open_time < %(end)s"]
    params: dict = {"start": parse_ts(start, what="start"), "end": parse_ts(end, what="end")}
    if symbols:
        conds.append("symbol = ANY(%(symbols)s)")
        params["symbols"] = [s.upper() for s in symbols]
    if kinds:
        conds.append("kind = ANY(%(kinds)s)")
        params["kinds"] = list(kinds)
    if timeframes:
        conds.append("timeframe = ANY(%(tfs)s)")
        params["tfs"] = list(timeframes)
    return _rows(conn, f"""SELECT * FROM feed_anomalies WHERE {' AND '.join(conds)}
                           ORDER BY open_time, symbol, timeframe, kind""", params)


def list_anomalies(conn: psycopg.Connection, *, symbol: str | None = None, kind: str | None = None,
                   timeframe: str | None = None, since=None, until=None, limit: int | None = None) -> list[dict]:
    """Stored anomalies (same dict shape as anomalies_between), oldest first, optionally filtered."""
    conds = ["true"]
    params: dict = {}
    if symbol:
        conds.append("symbol = %(symbol)s")
        params["symbol"] = symbol.upper()
    if kind:
        if kind not in KINDS:
            raise UsageError(f"unknown anomaly kind {kind!r}; expected {', '.join(KINDS)}")
        conds.append("kind = %(kind)s")
        params["kind"] = kind
    if timeframe:
        conds.append("timeframe = %(tf)s")
        params["tf"] = timeframe
    if since is not None:
        conds.append("open_time >= %(since)s")
        params["since"] = parse_ts(since, what="since")
    if until is not None:
        conds.append("open_time < %(until)s")
        params["until"] = parse_ts(until, what="until")
    sql = f"SELECT * FROM feed_anomalies WHERE {' AND '.join(conds)} ORDER BY open_time, symbol, timeframe, kind"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return _rows(conn, sql, params)


def to_json(a: dict) -> dict:
    """An anomaly dict with ISO-8601 UTC strings instead of datetimes (for --json output)."""
    return {k: (cov.iso(v) if isinstance(v, datetime) else v) for k, v in a.items()}
