"""Coverage grid: per symbol x timeframe, first/last candle, expected vs present bars, gaps, freshness, status.

Expected bars follow the series' calendar:

* ``24/7`` (crypto; any series with a weekend candle or a crypto quote suffix such as USDT/USD/BTC, and every
  1w series): every open_time on the timeframe's UTC grid from the first to the last candle.
* ``nyse`` (a 1d series with no weekend candle): NYSE trading days between the first and last candle
  (weekdays minus NYSE holidays and special closures, see ``calendar``), so holidays are not gaps.
* ``session`` (an intraday series with no weekend candle, e.g. Alpaca equity bars): gaps are counted only
  inside each trading day (between that UTC date's first and last bar); trading days without any bar count
  as missing sessions in ``freshness`` only when they are after the last candle.

A gap is a run of consecutive expected-but-missing bars, reported as ``{start, bars}`` (the first missing
open_time and the number of missing bars). Only candles closed by ``as_of`` count (``open_time + timeframe <=
as_of``; default now). ``present`` counts distinct open_times over all sources.

Freshness: ``behind`` = bars that should have closed after the last candle by ``as_of`` (trading days for
``nyse``/``session`` calendars). Status thresholds (``completeness = (expected - missing) / expected``):

* red:   no candle, completeness < 98 %, or behind >= 5 bars
* amber: completeness < 99.5 %, or behind >= 2 bars
* green: otherwise (the shared crypto files, whose 6 real outages are 0.2 % of their bars, are green as of
  their last candle; a feed one bar late is still green so normal ingestion latency does not page)
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import numpy as np
import psycopg

from ..timeutil import TIMEFRAME_SECONDS, UTC, parse_ts, utcnow
from .calendar import is_nyse_trading_day, nyse_trading_days
from .store import series_filter

COMPLETENESS_GREEN = 0.995
COMPLETENESS_AMBER = 0.98
STALE_AMBER_BARS = 2
STALE_RED_BARS = 5
_CRYPTO_QUOTE = re.compile(r"^[A-Z0-9]{2,}(USDT|USDC|BUSD|TUSD|FDUSD|USD|BTC|ETH|EUR)$")


def iso(dt: datetime | None) -> str | None:
    """Aware UTC datetime -> ``YYYY-MM-DDTHH:MM:SSZ`` (None stays None)."""
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dt(sec: int | float) -> datetime:
    return datetime.fromtimestamp(int(sec), tz=UTC)


def series_calendar(symbol: str, timeframe: str, times: np.ndarray) -> str:
    """'24/7', 'nyse' or 'session' for a series (see module docstring); ``times`` = open_times in epoch s."""
    if timeframe == "1w" or _CRYPTO_QUOTE.match(symbol.upper()):
        return "24/7"
    weekday = ((times // 86400) + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    if times.size and (weekday >= 5).any():
        return "24/7"
    return "nyse" if timeframe == "1d" else "session"


def _runs(missing_idx: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs in a sorted index array -> [(first index, length)]."""
    if missing_idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missing_idx) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [missing_idx.size - 1]))
    return [(int(missing_idx[s]), int(e - s + 1)) for s, e in zip(starts, ends)]


def series_coverage(symbol: str, timeframe: str, times: np.ndarray, as_of: datetime) -> dict:
    """Coverage of one series; ``times`` = sorted distinct open_times (epoch seconds) closed by ``as_of``."""
    tf = TIMEFRAME_SECONDS[timeframe]
    cal = series_calendar(symbol, timeframe, times)
    out = {"symbol": symbol, "timeframe": timeframe, "calendar": cal, "first": None, "last": None,
           "expected": 0, "present": int(times.size), "missing": 0, "completeness": None, "gaps": [],
           "freshness": {"as_of": iso(as_of), "last_close": None, "age_seconds": None, "behind": None}}
    if times.size == 0:
        out.update(status="red", reasons=["no candles"])
        return out
    first, last = int(times[0]), int(times[-1])
    gaps: list[dict] = []
    off_calendar = 0
    if cal == "24/7":
        expected = (last - first) // tf + 1
        d = np.diff(times)
        for i in np.flatnonzero(d > tf):
            gaps.append({"start": iso(_dt(times[i] + tf)), "bars": int(d[i] // tf - 1)})
        missing = int(expected - times.size)
    elif cal == "nyse":
        days = nyse_trading_days(_dt(first).date(), _dt(last).date())
        day_secs = np.array([(dd - date(1970, 1, 1)).days * 86400 for dd in days], dtype=np.int64)
        present_mask = np.isin(day_secs, times)
        expected = len(days)
        miss_idx = np.flatnonzero(~present_mask)
        for start, n in _runs(miss_idx):
            gaps.append({"start": iso(_dt(day_secs[start])), "bars": n})
        missing = int(miss_idx.size)
        off_calendar = int(np.isin(times, day_secs, invert=True).sum())
    else:  # session: gaps inside each UTC date only
        day = times // 86400
        expected = 0
        missing = 0
        for dd in np.unique(day):
            t = times[day == dd]
            expected += int((t[-1] - t[0]) // tf + 1)
            dif = np.diff(t)
            for i in np.flatnonzero(dif > tf):
                gaps.append({"start": iso(_dt(t[i] + tf)), "bars": int(dif[i] // tf - 1)})
                missing += int(dif[i] // tf - 1)
    last_close = _dt(last + tf)
    age = (as_of - last_close).total_seconds()
    if cal == "24/7":
        behind = max(0, int(age // tf))
    else:
        start_day = _dt(last).date() + timedelta(days=1)
        # a trading day's bar is due once its UTC date has ended
        behind = sum(1 for dd in _days(start_day, as_of.date() - timedelta(days=1)) if is_nyse_trading_day(dd))
    completeness = (expected - missing) / expected if expected else 0.0
    reasons = []
    if completeness < COMPLETENESS_AMBER:
        reasons.append(f"completeness {completeness:.2%} < {COMPLETENESS_AMBER:.0%}")
        status = "red"
    elif completeness < COMPLETENESS_GREEN:
        reasons.append(f"completeness {completeness:.2%} < {COMPLETENESS_GREEN:.1%}")
        status = "amber"
    else:
        status = "green"
    if behind >= STALE_RED_BARS:
        reasons.append(f"stale: {behind} bars behind as of {iso(as_of)}")
        status = "red"
    elif behind >= STALE_AMBER_BARS:
        reasons.append(f"late: {behind} bars behind as of {iso(as_of)}")
        status = "red" if status == "red" else "amber"
    out.update(first=iso(_dt(first)), last=iso(_dt(last)), expected=int(expected), missing=int(missing),
               completeness=round(completeness, 6), gaps=gaps, status=status, reasons=reasons,
               freshness={"as_of": iso(as_of), "last_close": iso(last_close), "age_seconds": int(age),
                          "behind": int(behind)})
    if off_calendar:
        out["off_calendar"] = off_calendar
    return out


def _days(first: date, last: date):
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)


def series_times(conn: psycopg.Connection, as_of: datetime, symbols: list[str] | None = None,
                 timeframes: list[str] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """{(symbol, timeframe): sorted distinct open_times (epoch s, int64)} of candles closed by ``as_of``."""
    conds = ["open_time + (CASE timeframe " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in TIMEFRAME_SECONDS.items())
             + " END) * interval '1 second' <= %(as_of)s"]
    params: dict = {"as_of": as_of}
    series_filter(conds, params, symbols, timeframes)
    sql = f"""SELECT symbol, timeframe, array_agg(DISTINCT extract(epoch FROM open_time)::bigint) AS ts
                FROM candles WHERE {' AND '.join(conds)} GROUP BY symbol, timeframe"""
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        rows = cur.execute(sql, params).fetchall()
    out = {}
    for sym, tf, ts in rows:
        a = np.array(ts, dtype=np.int64)
        a.sort()
        out[(sym, tf)] = a
    return out


def coverage(conn: psycopg.Connection, as_of=None, *, symbols: list[str] | None = None,
             timeframes: list[str] | None = None) -> list[dict]:
    """The coverage grid as JSON-ready dicts, sorted by symbol then timeframe length.

    Keys: symbol, timeframe, calendar, first, last (ISO UTC), expected, present, missing, completeness
    (fraction 0..1), gaps [{start (ISO UTC), bars}], freshness {as_of, last_close, age_seconds, behind},
    status ('green' | 'amber' | 'red'), reasons [str]; ``off_calendar`` (bars on non-trading days) when > 0.
    ``as_of``: datetime / ISO string / None (= now). Thresholds in the module docstring.
    """
    as_of_dt = utcnow() if as_of is None else parse_ts(as_of, what="as_of")
    data = series_times(conn, as_of_dt, symbols, timeframes)
    keys = sorted(data, key=lambda k: (k[0], TIMEFRAME_SECONDS.get(k[1], 0)))
    return [series_coverage(s, t, data[(s, t)], as_of_dt) for s, t in keys]


def format_table(rows: list[dict]) -> str:
    """Human-readable grid (one line per series, gaps summarised)."""
    head = f"{'symbol':<10} {'tf':<4} {'cal':<7} {'first':<20} {'last':<20} {'expected':>8} {'present':>8} " \
           f"{'missing':>7} {'gaps':>4} {'behind':>7} status"
    lines = [head, "-" * len(head)]
    for r in rows:
        beh = r["freshness"]["behind"]
        lines.append(f"{r['symbol']:<10} {r['timeframe']:<4} {r['calendar']:<7} {r['first'] or '-':<20} "
                     f"{r['last'] or '-':<20} {r['expected']:>8} {r['present']:>8} {r['missing']:>7} "
                     f"{len(r['gaps']):>4} {'-' if beh is None else beh:>7} {r['status']}"
                     + (f"  ({'; '.join(r['reasons'])})" if r.get("reasons") else ""))
    return "\n".join(lines)
