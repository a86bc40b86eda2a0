"""Resampling candles to longer timeframes, in SQL on the exact NUMERIC values.

Rules (``RESAMPLE_FROM``): 15m from 5m; 4h, 1d and 1w from 1h. Buckets are UTC: 15m / 4h / 1d buckets start at
multiples of their length since 1970-01-01 00:00 UTC (4h: 00, 04, 08, ... UTC); weeks start Monday 00:00 UTC.
Aggregation: open = first open, high = max high, low = min low, close = last close, volume = sum (exact decimal
arithmetic). Per open_time the preferred source is used (``store.SOURCE_PREFERENCE``).

Never invented: a bucket with no source candle produces nothing; a bucket with some source candles missing (an
exchange outage, or the still-running current interval) is written with ``complete = false`` and
``detail``-free; re-running after the gap is filled updates it to ``complete = true``. Resampled rows carry
``source = 'resample'``; readers prefer any native source for the same candle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from ..errors import UsageError
from ..timeutil import TIMEFRAME_SECONDS, parse_ts
from .store import candle_upsert_sql, source_rank_sql

#: target timeframe -> source timeframe
RESAMPLE_FROM = {"15m": "5m", "4h": "1h", "1d": "1h", "1w": "1h"}
RESAMPLE_SOURCE = "resample"
_MONDAY_ORIGIN = "1970-01-05 00:00:00+00"  # a Monday: week buckets are aligned on it


@dataclass
class ResampleResult:
    """One resample run: buckets written (inserted + updated), how many of them are incomplete."""

    symbol: str
    source_timeframe: str
    timeframe: str
    buckets: int
    inserted: int
    updated: int
    incomplete: int


def _bucket_sql(tf: str) -> str:
    secs = TIMEFRAME_SECONDS[tf]
    origin = _MONDAY_ORIGIN if tf == "1w" else "1970-01-01 00:00:00+00"
    return f"date_bin(interval '{secs} seconds', open_time, timestamptz '{origin}')"


def floor_time(t: datetime, tf: str) -> datetime:
    """The start of the ``tf`` bucket containing ``t`` (UTC; weeks start Monday)."""
    secs = TIMEFRAME_SECONDS[tf]
    origin = 4 * 86400 if tf == "1w" else 0  # 1970-01-05 is 4 days after the epoch
    ts = int(t.timestamp())
    return datetime.fromtimestamp(ts - ((ts - origin) % secs), tz=t.tzinfo)


def resample(conn: psycopg.Connection, symbol: str, timeframe: str, start=None, end=None, *,
             source_timeframe: str | None = None) -> ResampleResult:
    """Build ``timeframe`` candles of ``symbol`` from its stored source-timeframe candles and upsert them.

    ``start`` / ``end`` (optional, widened to whole buckets) limit the source window ``[start, end)``. One
    transaction (a savepoint inside an open one). Raises UsageError for a pair not in RESAMPLE_FROM.
    """
    src_tf = source_timeframe or RESAMPLE_FROM.get(timeframe)
    if timeframe not in TIMEFRAME_SECONDS or src_tf is None or src_tf not in TIMEFRAME_SECONDS:
        raise UsageError(f"cannot resample to {timeframe!r}; supported: "
                         + ", ".join(f"{t} from {s}" for t, s in RESAMPLE_FROM.items()))
    if TIMEFRAME_SECONDS[timeframe] % TIMEFRAME_SECONDS[src_tf] or TIMEFRAME_SECONDS[timeframe] <= TIMEFRAME_SECONDS[src_tf]:
        raise UsageError(f"cannot resample {src_tf} to {timeframe}: not a whole multiple")
    per_bucket = TIMEFRAME_SECONDS[timeframe] // TIMEFRAME_SECONDS[src_tf]
    conds = ["symbol = %(symbol)s", "timeframe = %(src_tf)s", f"source <> '{RESAMPLE_SOURCE}'"]
    params = {"symbol": symbol.upper(), "src_tf": src_tf, "tf": timeframe, "n": per_bucket,
              "src": RESAMPLE_SOURCE}
    if start is not None:
        params["start"] = floor_time(parse_ts(start, what="start"), timeframe)
        conds.append("open_time >= %(start)s")
    if end is not None:
        e = parse_ts(end, what="end")
        fe = floor_time(e, timeframe)
        params["end"] = fe if fe == e else datetime.fromtimestamp(fe.timestamp() + TIMEFRAME_SECONDS[timeframe],
                                                                  tz=fe.tzinfo)
        conds.append("open_time < %(end)s")
    sql = f"""
    WITH src AS (
        SELECT DISTINCT ON (open_time) open_time, open, high, low, close, volume
          FROM candles WHERE {' AND '.join(conds)}
         ORDER BY open_time, {source_rank_sql()}, source),
    agg AS (
        SELECT {_bucket_sql(timeframe)} AS bucket,
               (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
               (array_agg(close ORDER BY open_time DESC))[1] AS close, sum(volume) AS volume,
               count(*) AS n
          FROM src GROUP BY 1),
    ins AS (
        {candle_upsert_sql("SELECT %(symbol)s, %(tf)s, bucket, open, high, low, close, volume, %(src)s, n = %(n)s "
                           "FROM agg")})
    SELECT (SELECT count(*) FROM agg) AS buckets, (SELECT count(*) FROM agg WHERE n <> %(n)s) AS incomplete,
           (SELECT count(*) FROM ins WHERE inserted) AS inserted,
           (SELECT count(*) FROM ins WHERE NOT inserted) AS updated"""
    with conn.transaction():
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            r = cur.execute(sql, params).fetchone()
    return ResampleResult(symbol.upper(), src_tf, timeframe, r["buckets"], r["inserted"], r["updated"],
                          r["incomplete"])


def resample_all(conn: psycopg.Connection, symbols: list[str] | None = None,
                 timeframes: list[str] | None = None) -> list[ResampleResult]:
    """Resample every stored symbol that has the needed source timeframe to every target in ``timeframes``
    (default all of RESAMPLE_FROM). Returns one ResampleResult per (symbol, target)."""
    targets = timeframes or list(RESAMPLE_FROM)
    bad = [t for t in targets if t not in RESAMPLE_FROM]
    if bad:
        raise UsageError(f"cannot resample to {bad}; supported targets: {', '.join(RESAMPLE_FROM)}")
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        have = set(cur.execute("SELECT DISTINCT symbol, timeframe FROM candles WHERE source <> %s",
                               (RESAMPLE_SOURCE,)).fetchall())
    out = []
    for sym in sorted({s for s, _ in have} if symbols is None else {s.upper() for s in symbols}):
        for tf in targets:
            if (sym, RESAMPLE_FROM[tf]) in have:
                out.append(resample(conn, sym, tf))
    return out
