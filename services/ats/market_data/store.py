"""Reading and writing the candle store.

``candles`` holds one row per (symbol, timeframe, open_time, source); prices/volumes are NUMERIC (exact). Readers
get one candle per open_time: when several sources hold the same candle, the first source in
``SOURCE_PREFERENCE`` wins (exchange-native feeds first, then vendor/file sources, then any other source in
alphabetical order, and ``resample`` last, so a native candle always beats one derived by resampling).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Iterator

import numpy as np
import pandas as pd
import psycopg

from ..timeutil import TIMEFRAME_SECONDS, parse_ts
from ..errors import UsageError

#: source preference for read_candles (earlier wins); sources not listed rank after these, 'resample' last
SOURCE_PREFERENCE = ("binance", "bybit", "alpaca", "lean", "csv", "freqtrade")
COLUMNS = ["open", "high", "low", "close", "volume", "complete"]


def source_rank_sql(col: str = "source") -> str:
    """SQL expression ranking ``col`` by SOURCE_PREFERENCE (lower = preferred; unknown 100; 'resample' 1000)."""
    arr = ",".join(f"'{s}'" for s in SOURCE_PREFERENCE)
    return (f"CASE WHEN {col} = 'resample' THEN 1000 "
            f"ELSE coalesce(array_position(ARRAY[{arr}]::text[], {col}), 100) END")


def candle_upsert_sql(select_sql: str) -> str:
    """The one candle upsert: ``INSERT INTO candles ... <select_sql> ON CONFLICT ... DO UPDATE ... RETURNING``.

    Used by the file/venue loaders (rows staged with COPY) and by resampling (rows aggregated in SQL). A candle
    that already exists for the same (symbol, timeframe, open_time, source) is updated only when one of its
    values differs, and then gets a new ``loaded_at``; identical rows are left alone, so re-loading a file
    writes nothing.

    Parameters
    ----------
    select_sql : str
        A ``SELECT`` producing, in order: symbol, timeframe, open_time (timestamptz), open, high, low, close,
        volume (NUMERIC), source, complete (bool). It may use ``%(name)s`` parameters of the caller.

    Returns
    -------
    str
        The statement, usable as a CTE (``WITH ins AS (...)``); each written row returns ``inserted``
        (true for a new candle, false for a revised one).
    """
    return f"""INSERT INTO candles AS c (symbol, timeframe, open_time, open, high, low, close, volume, source, complete)
    {select_sql}
    ON CONFLICT (symbol, timeframe, open_time, source) DO UPDATE
       SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
           volume = EXCLUDED.volume, complete = EXCLUDED.complete, loaded_at = now()
     WHERE (c.open, c.high, c.low, c.close, c.volume, c.complete)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
                             EXCLUDED.complete)
    RETURNING (xmax = 0) AS inserted"""


def _ts(v, what: str) -> datetime | None:
    return None if v is None else parse_ts(v, what=what)


def read_candles(conn: psycopg.Connection, symbol: str, timeframe: str, start=None, end=None, *,
                 source: str | None = None) -> pd.DataFrame:
    """Candles of one symbol/timeframe as a DataFrame indexed by ``open_time`` (tz-aware UTC, ascending).

    Columns: open, high, low, close, volume (float64; prices in the quote currency, volume in base units or
    shares), complete (bool; False = a resampled candle whose source interval had gaps). Window: ``start <=
    open_time < end`` (either bound optional; datetimes, ISO strings or Unix ms). One row per open_time: the
    preferred source (SOURCE_PREFERENCE) unless ``source`` picks one. Empty frame (same columns) when nothing
    matches. Raises UsageError on an unknown timeframe.
    """
    if timeframe not in TIMEFRAME_SECONDS:
        raise UsageError(f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}")
    conds = ["symbol = %(symbol)s", "timeframe = %(tf)s"]
    params = {"symbol": symbol.upper(), "tf": timeframe, "start": _ts(start, "start"), "end": _ts(end, "end"),
              "source": source}
    if start is not None:
        conds.append("open_time >= %(start)s")
    if end is not None:
        conds.append("open_time < %(end)s")
    if source is not None:
        conds.append("source = %(source)s")
    sql = f"""SELECT DISTINCT ON (open_time) open_time, open::float8 AS open, high::float8 AS high,
                     low::float8 AS low, close::float8 AS close, volume::float8 AS volume, complete
                FROM candles WHERE {' AND '.join(conds)}
               ORDER BY open_time, {source_rank_sql()}, source"""
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    return candles_frame(rows)


def candles_frame(rows: list[tuple]) -> pd.DataFrame:
    """DataFrame from tuples (open_time, open, high, low, close, volume, complete) in read_candles' shape."""
    if not rows:
        idx = pd.DatetimeIndex([], tz="UTC", name="open_time")
        df = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in COLUMNS[:5]}, index=idx)
        df["complete"] = pd.Series(dtype=bool)
        return df
    times, o, h, lo, c, v, comp = zip(*rows)
    idx = pd.DatetimeIndex(pd.to_datetime(list(times), utc=True), name="open_time")
    return pd.DataFrame({"open": np.asarray(o, dtype=np.float64), "high": np.asarray(h, dtype=np.float64),
                         "low": np.asarray(lo, dtype=np.float64), "close": np.asarray(c, dtype=np.float64),
                         "volume": np.asarray(v, dtype=np.float64), "complete": np.asarray(comp, dtype=bool)},
                        index=idx)


def last_open_time(conn: psycopg.Connection, symbol: str, timeframe: str, source: str | None = None) -> datetime | None:
    """open_time of the newest stored candle (any source, or ``source``), or None."""
    sql = "SELECT max(open_time) AS t FROM candles WHERE symbol = %s AND timeframe = %s"
    params: list = [symbol.upper(), timeframe]
    if source:
        sql += " AND source = %s"
        params.append(source)
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        return cur.execute(sql, params).fetchone()[0]


def series_list(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """All (symbol, timeframe) pairs present in ``candles``, sorted by symbol then timeframe length."""
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute("SELECT DISTINCT symbol, timeframe FROM candles").fetchall()
    return sorted(((s, t) for s, t in rows), key=lambda r: (r[0], TIMEFRAME_SECONDS.get(r[1], 0)))


@contextmanager
def write_scope(conn: psycopg.Connection) -> Iterator[None]:
    """Commit (or roll back on error) at the end when ``conn`` had no transaction open on entry, i.e. this call
    owns the transaction; inside a caller's open transaction nothing is committed (the caller decides)."""
    from psycopg.pq import TransactionStatus

    owned = not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    try:
        yield
    except BaseException:
        if owned:
            conn.rollback()
        raise
    if owned:
        conn.commit()


def series_filter(conds: list[str], params: dict, symbols=None, timeframes=None, *, alias: str = "") -> None:
    """Append ``symbol = ANY(...)`` / ``timeframe = ANY(...)`` conditions (symbols upper-cased) to ``conds``
    and their values to ``params`` (keys ``symbols``, ``tfs``); ``alias`` prefixes the columns (e.g. "a.")."""
    if symbols:
        conds.append(f"{alias}symbol = ANY(%(symbols)s)")
        params["symbols"] = [s.upper() for s in symbols]
    if timeframes:
        conds.append(f"{alias}timeframe = ANY(%(tfs)s)")
        params["tfs"] = list(timeframes)
