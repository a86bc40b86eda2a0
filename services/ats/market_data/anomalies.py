"""Feed anomalies: gaps, stale feeds, spikes, suspected splits, cross-source disagreement.

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
  Returns flagged as splits are excluded from sigma and never reported as spikes.
* split (suspected): the overnight jump ``previous close / open`` is within SPLIT_TOLERANCE (3 %) of a clean
  ratio in SPLIT_RATIOS (2:1, 3:1, 4:1, 5:1, 7:1, 8:1, 10:1, ... and the reverse 1:N), and the reference index
  (SPY for equities, BTCUSDT for crypto; same timeframe) moved less than SPLIT_REFERENCE_MAX_MOVE (10 %) over the
  same interval; detail {ratio, clean_ratio, prev_close, open, reference, reference_move}. The 3 % tolerance
  keeps AAPL's real 2000-09-29 crash (-52 %, ratio 1.90) a spike while its 2014 7:1 (6.96) and 2020 4:1 (3.91)
  splits are splits.
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

KINDS = ("gap", "stale", "spike", "split", "cross_source")
SPIKE_K = 5.0
SPIKE_WICK_K = 8.0
SPIKE_WINDOW = 48
SPIKE_MIN_PERIODS = 24
SPIKE_MIN_MOVE = {"5m": 0.01, "15m": 0.015, "1h": 0.02, "4h": 0.03, "1d": 0.03, "1w": 0.05}
SPLIT_RATIOS = (2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50)
SPLIT_TOLERANCE = 0.03
SPLIT_REFERENCE_MAX_MOVE = 0.10
EQUITY_REFERENCE = "SPY"
CRYPTO_REFERENCE = "BTCUSDT"
CROSS_SOURCE_TOLERANCE = 0.005


def _iso(t) -> str:
    return cov.iso(pd.Timestamp(t).to_pydatetime())


def detect_spikes_and_splits(df: pd.DataFrame, timeframe: str, ref: pd.DataFrame | None = None,
                             ref_symbol: str | None = None) -> list[dict]:
    """Spike and split anomalies of one candle frame (read_candles shape). Returns dicts with keys open_time
    (Timestamp), kind, severity, detail. ``ref``: the reference index frame (same timeframe) for splits."""
    out: list[dict] = []
    if len(df) < 2:
        return out
    close = df["close"].to_numpy()
    prev_close = np.concatenate(([np.nan], close[:-1]))
    opens = df["open"].to_numpy()
    jump = prev_close / opens  # > 1: price fell overnight (a forward split); < 1: reverse split
    split_mask = np.zeros(len(df), dtype=bool)
    ref_open_ret = None
    if ref is not None and len(ref) > 1:
        rc = ref["close"]
        ref_jump = (rc.shift(1) / ref["open"]).reindex(df.index)
        ref_open_ret = np.abs(np.log(ref_jump.to_numpy()))
    for i in np.flatnonzero(np.isfinite(jump) & ((jump > 1.4) | (jump < 1 / 1.4))):
        j = jump[i]
        big = j if j >= 1 else 1 / j
        clean = min(SPLIT_RATIOS, key=lambda r: abs(big / r - 1))
        if abs(big / clean - 1) > SPLIT_TOLERANCE:
            continue
        ref_move = None
        if ref_open_ret is not None and np.isfinite(ref_open_ret[i]):
            ref_move = float(math.expm1(ref_open_ret[i]))
            if ref_open_ret[i] >= math.log1p(SPLIT_REFERENCE_MAX_MOVE):
                continue  # the whole market moved: not a split
        split_mask[i] = True
        out.append({"open_time": df.index[i], "kind": "split", "severity": "warning",
                    "detail": {"ratio": round(float(j), 4),
                               "clean_ratio": f"{clean}:1" if j >= 1 else f"1:{clean}",
                               "prev_close": float(prev_close[i]), "open": float(opens[i]),
                               "reference": ref_symbol if ref is not None else None,
                               "reference_move": None if ref_move is None else round(ref_move, 6)}})
    r = np.log(close / prev_close)
    r_sigma_input = pd.Series(np.where(split_mask, np.nan, r))
    sigma = r_sigma_input.rolling(SPIKE_WINDOW, min_periods=SPIKE_MIN_PERIODS).std().shift(1).to_numpy()
    lo = np.log(df["low"].to_numpy() / prev_close)
    hi = np.log(df["high"].to_numpy() / prev_close)
    wick = np.where(np.abs(lo) > np.abs(hi), lo, hi)
    min_move = SPIKE_MIN_MOVE.get(timeframe, 0.02)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = r / sigma
        zw = wick / sigma
        close_spike = (np.abs(z) > SPIKE_K) & (np.abs(r) >= min_move)
        wick_spike = (np.abs(zw) > SPIKE_WICK_K) & (np.abs(wick) >= 2 * min_move)
    for i in np.flatnonzero((close_spike | wick_spike) & ~split_mask & np.isfinite(sigma)):
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
    if {"spike", "split"} & set(kinds):
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
    ('gap'|'stale'|'spike'|'split'|'cross_source'), detail (dict), severity, observed_at (open_time +
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
