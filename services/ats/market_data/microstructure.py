"""Microstructure data (open interest, funding rates, long/short ratio, taker volume): parse, validate, store.

Payloads are accepted exactly as pybit's ``unified_trading.HTTP`` returns them -- the whole response
(``{"retCode": 0, "result": {...}}``) or its ``result`` -- from:

==========  =====================================  ==================================================
kind        pybit call                             rows (``result.list``)
==========  =====================================  ==================================================
oi          ``get_open_interest``                  ``{"openInterest": "...", "timestamp": "<ms>"}``
funding     ``get_funding_rate_history``           ``{"symbol", "fundingRate", "fundingRateTimestamp"}``
ls_ratio    ``get_long_short_ratio``               ``{"symbol", "buyRatio", "sellRatio", "timestamp"}``
taker       ``get_public_trade_history``           ``{"execId", "symbol", "price", "size", "side", "time"}``
==========  =====================================  ==================================================

Values are kept as the published decimal strings (NUMERIC columns); times are UTC milliseconds. A malformed
payload is refused with ``<where> row N: <problem>`` and nothing is written; each load is one transaction
(``write_scope``) and reloading is idempotent (``ON CONFLICT DO NOTHING`` on the natural key).
Taker volume is aggregated from trades into buckets of ``timeframe``: a trade's ``side`` is the taker's side.

Backfill (:func:`backfill`, :func:`backfill_many`; ``ats data backfill --kind ...``) goes through pybit's ``HTTP``
(endpoint ``ATS_BYBIT_BASE_URL`` when set, :func:`session_from_env`): cursor paging for oi / ls_ratio, time paging
back from ``endTime`` for funding (Bybit refuses ``startTime`` alone), the newest 1,000 public trades for taker
volume (Bybit keeps no older ones online; a full page's oldest, possibly cut bucket is dropped). Incremental: after
the newest stored row, else 7 days back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import AtsError
from .store import write_scope

KINDS = ("oi", "funding", "ls_ratio", "taker")
PERIODS = ("5min", "15min", "30min", "1h", "4h", "1d")
TAKER_TF = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
_NUM = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class MicroLoad:
    """Result of one load: kind, symbol, rows in the payload, rows new in the table."""

    kind: str
    symbol: str
    rows: int
    inserted: int


def _fail(where: str, n: int | None, msg: str) -> AtsError:
    return AtsError(f"{where}{f' row {n}' if n is not None else ''}: {msg}")


def _rows(payload: Any, where: str) -> tuple[dict, list]:
    if not isinstance(payload, dict):
        raise _fail(where, None, "payload is not a JSON object")
    if "retCode" in payload:
        if payload.get("retCode") != 0:
            raise _fail(where, None, f"venue error retCode {payload.get('retCode')}: {payload.get('retMsg')}")
        payload = payload.get("result")
        if not isinstance(payload, dict):
            raise _fail(where, None, "result is not an object")
    rows = payload.get("list")
    if not isinstance(rows, list):
        raise _fail(where, None, "result.list is missing or not a list")
    return payload, rows


def _dec(v: Any, where: str, n: int, col: str, *, lo: Decimal | None = None, hi: Decimal | None = None) -> str:
    s = v.strip() if isinstance(v, str) else (str(v) if isinstance(v, int) and not isinstance(v, bool) else None)
    if s is None or not _NUM.match(s):
        raise _fail(where, n, f"{col} is not a decimal string: {json.dumps(v)}")
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise _fail(where, n, f"{col} is not a decimal: {s!r}") from None
    if (lo is not None and d < lo) or (hi is not None and d > hi):
        raise _fail(where, n, f"{col} {s} is out of range [{lo}, {hi}]")
    return s


def _ms(v: Any, where: str, n: int, col: str) -> int:
    s = str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else ""
    if not s.isdigit():
        raise _fail(where, n, f"{col} is not a UTC millisecond timestamp: {json.dumps(v)}")
    ms = int(s)
    if not (946684800000 <= ms <= 4102444800000):  # 2000-01-01 .. 2100-01-01
        raise _fail(where, n, f"{col} {ms} is outside 2000..2100 (milliseconds expected)")
    return ms


def _sym(row: dict, default: str | None, where: str, n: int) -> str:
    s = row.get("symbol", default)
    if not isinstance(s, str) or not re.fullmatch(r"[A-Z0-9]{2,30}", s or ""):
        raise _fail(where, n, f"symbol missing or malformed: {json.dumps(s)}")
    return s


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def parse(kind: str, payload: Any, *, symbol: str | None = None, period: str | None = None,
          timeframe: str = "1h", where: str = "payload") -> tuple[str, list[tuple]]:
    """Validate one payload of ``kind``; returns (symbol, rows ready for the table in column order).

    Raises
    ------
    AtsError
        ``<where> row N: <problem>`` for the first bad row (numbering from 1), or a payload-level problem.
    """
    if kind not in KINDS:
        raise AtsError(f"unknown microstructure kind {kind!r}; expected one of {', '.join(KINDS)}")
    result, rows = _rows(payload, where)
    sym = symbol or result.get("symbol")
    out: list[tuple] = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise _fail(where, n, "row is not an object")
        if kind == "oi":
            per = period or result.get("interval") or r.get("interval") or "1h"
            if per not in PERIODS:
                raise _fail(where, n, f"interval {per!r} is not one of {', '.join(PERIODS)}")
            s = _sym(r, sym, where, n)
            out.append((s, per, _utc(_ms(r.get("timestamp"), where, n, "timestamp")),
                        _dec(r.get("openInterest"), where, n, "openInterest", lo=Decimal(0))))
        elif kind == "funding":
            s = _sym(r, sym, where, n)
            out.append((s, _utc(_ms(r.get("fundingRateTimestamp"), where, n, "fundingRateTimestamp")),
                        _dec(r.get("fundingRate"), where, n, "fundingRate", lo=Decimal("-1"), hi=Decimal("1"))))
        elif kind == "ls_ratio":
            per = period or result.get("period") or "1h"
            if per not in PERIODS:
                raise _fail(where, n, f"period {per!r} is not one of {', '.join(PERIODS)}")
            s = _sym(r, sym, where, n)
            b = _dec(r.get("buyRatio"), where, n, "buyRatio", lo=Decimal(0), hi=Decimal(1))
            se = _dec(r.get("sellRatio"), where, n, "sellRatio", lo=Decimal(0), hi=Decimal(1))
            if abs(Decimal(b) + Decimal(se) - 1) > Decimal("0.0002"):
                raise _fail(where, n, f"buyRatio {b} + sellRatio {se} is not 1")
            out.append((s, per, _utc(_ms(r.get("timestamp"), where, n, "timestamp")), b, se))
        else:
            s = _sym(r, sym, where, n)
            side = r.get("side")
            if side not in ("Buy", "Sell"):
                raise _fail(where, n, f"side {json.dumps(side)} is not Buy or Sell")
            out.append((s, side, _ms(r.get("time"), where, n, "time"), _dec(r.get("size"), where, n, "size",
                                                                            lo=Decimal(0)),
                        _dec(r.get("price"), where, n, "price", lo=Decimal(0))))
    if not out:
        return (sym or "?"), []
    syms = {r[0] for r in out}
    if len(syms) > 1:
        raise _fail(where, None, f"rows of several symbols in one payload: {sorted(syms)}")
    if kind == "taker":
        out = _buckets(out, timeframe, where)
    return out[0][0], out


def _buckets(trades: list[tuple], timeframe: str, where: str) -> list[tuple]:
    if timeframe not in TAKER_TF:
        raise _fail(where, None, f"taker timeframe {timeframe!r} is not one of {', '.join(TAKER_TF)}")
    step = TAKER_TF[timeframe] * 1000
    agg: dict[int, list] = {}
    for sym, side, ms, size, _price in trades:
        b = agg.setdefault(ms - ms % step, [Decimal(0), Decimal(0), 0])
        b[0 if side == "Buy" else 1] += Decimal(size)
        b[2] += 1
    return [(trades[0][0], timeframe, _utc(k), str(v[0]), str(v[1]), v[2]) for k, v in sorted(agg.items())]


_SQL = {
    "oi": ("INSERT INTO open_interest (symbol, interval, ts, open_interest, source) VALUES (%s, %s, %s, %s, %s) "
           "ON CONFLICT DO NOTHING"),
    "funding": ("INSERT INTO funding_rates (symbol, ts, funding_rate, source) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING"),
    "ls_ratio": ("INSERT INTO long_short_ratios (symbol, period, ts, buy_ratio, sell_ratio, source) "
                 "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"),
    # a bucket re-aggregated from a fuller page replaces the earlier, partial one
    "taker": ("INSERT INTO taker_volume (symbol, timeframe, bucket_start, buy_volume, sell_volume, trades, source) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (symbol, timeframe, bucket_start, source) DO UPDATE "
              "SET buy_volume = EXCLUDED.buy_volume, sell_volume = EXCLUDED.sell_volume, trades = EXCLUDED.trades "
              "WHERE (taker_volume.buy_volume, taker_volume.sell_volume, taker_volume.trades) IS DISTINCT FROM "
              "(EXCLUDED.buy_volume, EXCLUDED.sell_volume, EXCLUDED.trades)"),
}


def load_payload(conn, kind: str, payload: Any, *, symbol: str | None = None, period: str | None = None,
                 timeframe: str = "1h", source: str = "bybit", where: str = "payload") -> MicroLoad:
    """Validate then store one payload in ONE transaction (nothing written when any row is bad)."""
    sym, rows = parse(kind, payload, symbol=symbol, period=period, timeframe=timeframe, where=where)
    inserted = 0
    with write_scope(conn):
        with conn.cursor() as cur:
            for r in rows:
                cur.execute(_SQL[kind], (*r, source))
                inserted += cur.rowcount
    return MicroLoad(kind, sym, len(rows), inserted)


def load_file(conn, kind: str, path: str | Path, **kw) -> MicroLoad:
    """Load a JSON file holding one pybit response (see :func:`load_payload`); errors name the file."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AtsError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise AtsError(f"{p}: not JSON (line {exc.lineno} column {exc.colno})") from None
    return load_payload(conn, kind, obj, where=str(p), **kw)


_PERIOD_S = {"5min": 300, "15min": 900, "30min": 1800, "1h": 3600, "4h": 14400, "1d": 86400, **TAKER_TF}


def coverage(conn, symbols=None) -> list[dict]:
    """Per kind x symbol x period: first, last, rows, expected, missing (what ``ats data coverage`` adds).

    ``expected`` = rows a complete series between first and last would have: (last - first) / period + 1 for oi,
    ls_ratio and taker (period = interval / period / timeframe); for funding the period is the series' most common
    spacing (Bybit's interval differs by symbol: 8 h, 4 h, 1 h). ``missing`` = expected - rows (>= 0).
    Times ISO-8601 UTC. ``symbols``: only these (upper-cased).
    """
    out = []
    want = [s.upper() for s in symbols] if symbols else None
    for kind, table, col, per in (("oi", "open_interest", "ts", "interval"), ("funding", "funding_rates", "ts", None),
                                  ("ls_ratio", "long_short_ratios", "ts", "period"),
                                  ("taker", "taker_volume", "bucket_start", "timeframe")):
        per_sql = per or "NULL::text"
        step_sql = ("(SELECT mode() WITHIN GROUP (ORDER BY d) FROM (SELECT extract(epoch FROM "
                    f"{col} - lag({col}) OVER (ORDER BY {col})) AS d FROM {table} x WHERE x.symbol = t.symbol) g)"
                    if per is None else "NULL::numeric")
        rows = conn.execute(
            f"SELECT symbol, {per_sql} AS period, min({col}) AS first, max({col}) AS last, count(*) AS rows, "
            f"{step_sql} AS step_s FROM {table} t WHERE (%(syms)s::text[] IS NULL OR symbol = ANY(%(syms)s)) "
            f"GROUP BY symbol, {per_sql} ORDER BY symbol, 2", {"syms": want}).fetchall()
        for r in rows:
            step = _PERIOD_S.get(r["period"]) if per else (float(r["step_s"]) if r["step_s"] else None)
            span = (r["last"] - r["first"]).total_seconds()
            expected = int(round(span / step)) + 1 if step else r["rows"]
            out.append({"kind": kind, "symbol": r["symbol"], "period": r["period"] or
                        (f"{int(step // 3600)}h" if step and step % 3600 == 0 else None),
                        "first": r["first"].isoformat(), "last": r["last"].isoformat(), "rows": r["rows"],
                        "expected": expected, "missing": max(0, expected - r["rows"])})
    return out


def format_coverage(rows: list[dict]) -> str:
    """The microstructure coverage rows as a text grid."""
    head = f"{'kind':<9} {'symbol':<10} {'period':<6} {'first':<26} {'last':<26} {'rows':>7} {'expected':>8} {'missing':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['kind']:<9} {r['symbol']:<10} {r['period'] or '-':<6} {r['first']:<26} {r['last']:<26} "
                     f"{r['rows']:>7} {r['expected']:>8} {r['missing']:>7}")
    return "\n".join(lines)


#: incremental backfill with nothing stored yet starts this far back (ms)
DEFAULT_LOOKBACK_MS = 7 * 86400 * 1000
_LAST = {"oi": ("open_interest", "ts", "interval"), "funding": ("funding_rates", "ts", None),
         "ls_ratio": ("long_short_ratios", "ts", "period"), "taker": ("taker_volume", "bucket_start", "timeframe")}


def session_from_env(*, timeout: int = 10):
    """A pybit ``unified_trading.HTTP`` for public market data; its ``endpoint`` is ``ATS_BYBIT_BASE_URL`` when
    set (a testnet or the local simulator ``ats venue-sim bybit``), else Bybit mainnet. No key is needed."""
    import os

    from pybit.unified_trading import HTTP

    s = HTTP(testnet=False, timeout=timeout, max_retries=1)
    url = os.environ.get("ATS_BYBIT_BASE_URL")
    if url:
        s.endpoint = url.rstrip("/")
    return s


def last_stored_ms(conn, kind: str, symbol: str, *, period: str = "1h", timeframe: str = "1h",
                   source: str = "bybit") -> int | None:
    """UTC ms of the newest stored row of ``kind`` for ``symbol`` (and its period/timeframe), None when none."""
    table, col, per_col = _LAST[kind]
    sql = f"SELECT max({col}) AS t FROM {table} WHERE symbol = %s AND source = %s"
    args: list = [symbol, source]
    if per_col:
        sql += f" AND {per_col} = %s"
        args.append(timeframe if kind == "taker" else period)
    row = conn.execute(sql, args).fetchone()
    t = row["t"] if isinstance(row, dict) else row[0]
    return None if t is None else int(t.timestamp() * 1000)


def _pages(session, kind: str, symbol: str, start_ms: int | None, end_ms: int | None, period: str,
           max_pages: int, fetch) -> tuple[list[dict], int]:
    """Every row of [start_ms, end_ms] through the paging Bybit uses for ``kind``; returns (rows, pages)."""
    base: dict = {"category": "linear", "symbol": symbol}
    rows: list[dict] = []
    if kind in ("oi", "ls_ratio"):  # cursor paging, newest first
        if start_ms is not None:
            base["startTime"] = start_ms
        if end_ms is not None:
            base["endTime"] = end_ms
        if kind == "oi":
            base.update(intervalTime=period, limit=200)
            call = session.get_open_interest
        else:
            base.update(period=period, limit=500)
            call = session.get_long_short_ratio
        cursor, pages = None, 0
        while pages < max_pages:
            resp = fetch(lambda: call(**base, **({"cursor": cursor} if cursor else {})), pages + 1)
            pages += 1
            rows += _rows(resp, f"bybit {kind} {symbol} page {pages}")[1]
            cursor = (resp.get("result") or {}).get("nextPageCursor")
            if not cursor:
                break
        return rows, pages
    if kind == "funding":  # time paging: Bybit refuses startTime alone; pages of 200 back from endTime
        end = end_ms
        if start_ms is not None and end is None:
            end = int(datetime.now(timezone.utc).timestamp() * 1000)
        pages = 0
        while pages < max_pages:
            args = {**base, "limit": 200, **({"startTime": start_ms} if start_ms is not None else {}),
                    **({"endTime": end} if end is not None else {})}
            resp = fetch(lambda: session.get_funding_rate_history(**args), pages + 1)
            pages += 1
            page = _rows(resp, f"bybit funding {symbol} page {pages}")[1]
            rows += page
            if len(page) < 200 or start_ms is None:
                break
            oldest = min(_ms(r.get("fundingRateTimestamp"), f"bybit funding {symbol} page {pages}", n + 1,
                             "fundingRateTimestamp") for n, r in enumerate(page))
            end = oldest - 1
            if end < start_ms:
                break
        return rows, pages
    resp = fetch(lambda: session.get_public_trade_history(category="linear", symbol=symbol, limit=1000), 1)
    return list(_rows(resp, f"bybit taker {symbol}")[1]), 1


def _trim_cut_bucket(trades: list[dict], timeframe: str, limit: int = 1000) -> list[dict]:
    """A full page of trades (``limit`` rows) may start in the middle of its oldest bucket: drop that bucket's
    trades so a partial sum never replaces a complete one (the upsert keeps the latest aggregate)."""
    if len(trades) < limit or timeframe not in TAKER_TF:
        return trades
    step = TAKER_TF[timeframe] * 1000
    times = [_row_ms("taker", r) for r in trades]
    if any(t is None for t in times):
        return trades  # malformed: parse names the row
    first = min(times) - min(times) % step
    return [r for r, t in zip(trades, times) if t - t % step != first]


def _row_ms(kind: str, r: dict) -> int | None:
    v = r.get({"oi": "timestamp", "funding": "fundingRateTimestamp", "ls_ratio": "timestamp",
               "taker": "time"}[kind]) if isinstance(r, dict) else None
    return int(v) if isinstance(v, (str, int)) and str(v).isdigit() else None


def backfill(conn, session, kind: str, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None,
             period: str = "1h", timeframe: str = "1h", max_pages: int = 50, retries: int = 4,
             backoff: float = 1.0, sleep=None) -> MicroLoad:
    """Page a pybit ``HTTP`` session for ``kind`` of ``symbol`` (linear) and store every page in ONE transaction.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    session : pybit.unified_trading.HTTP
        Its ``endpoint`` may point at a testnet or the local simulator (:func:`session_from_env`).
    kind : {'oi', 'funding', 'ls_ratio', 'taker'}
        What to fetch (module docstring).
    symbol : str
        Linear perpetual symbol, e.g. ``BTCUSDT``.
    start_ms, end_ms : int, optional
        Window in UTC ms (inclusive). Rows outside it are dropped. Without ``start_ms`` the venue's newest pages
        are fetched (Bybit's default); see :func:`backfill_many` for the incremental start.
    period : str
        oi ``intervalTime`` / ls_ratio ``period`` (5min .. 1d).
    timeframe : str
        Taker buckets (5m .. 1d).
    max_pages : int
        Stop after this many requests (cursor paging for oi / ls_ratio, time paging for funding); taker volume
        comes from the newest public trades only (Bybit serves no older ones), one request.
    retries, backoff, sleep
        Network errors are retried ``retries`` times with exponential backoff (``ats.market_data.backfill``).

    Returns
    -------
    MicroLoad
        Rows fetched (taker: buckets) and rows new in the table.

    Raises
    ------
    AtsError
        A venue error (retCode != 0), a malformed row (``bybit <kind> <symbol> row N: ...``) or a network failure
        after the retries; nothing is written then.
    """
    import time as _time

    from .backfill import _bybit_errors, _retrying

    retryable, fatal = _bybit_errors()
    sleep = sleep or _time.sleep

    def fetch(call, page: int):
        return _retrying(call, f"bybit {kind} {symbol} page {page}", retries=retries, backoff=backoff,
                         sleep=sleep, retryable=retryable, fatal=fatal)

    rows, pages = _pages(session, kind, symbol, start_ms, end_ms, period, max_pages, fetch)
    if kind == "taker":
        rows = _trim_cut_bucket(rows, timeframe)
    if start_ms is not None or end_ms is not None:
        lo, hi = start_ms if start_ms is not None else 0, end_ms if end_ms is not None else 2 ** 62
        rows = [r for r in rows if (t := _row_ms(kind, r)) is None or lo <= t <= hi]  # malformed: parse refuses
    merged = {"retCode": 0, "result": {"symbol": symbol, "list": rows}}
    from ..db.events import record_event

    with write_scope(conn):
        res = load_payload(conn, kind, merged, symbol=symbol, period=period, timeframe=timeframe,
                           where=f"bybit {kind} {symbol}")
        record_event(conn, "market_data", "microstructure_backfill", symbol=symbol, account_id=None,
                     payload={"kind": kind, "period": period if kind in ("oi", "ls_ratio") else None,
                              "timeframe": timeframe if kind == "taker" else None, "pages": pages,
                              "rows": res.rows, "inserted": res.inserted, "start_ms": start_ms, "end_ms": end_ms})
    return res


def backfill_many(conn, session, kinds, symbols, *, since_ms: int | None = None, until_ms: int | None = None,
                  period: str = "1h", timeframe: str = "1h", now_ms: int | None = None,
                  **kw) -> tuple[list[MicroLoad], list[str]]:
    """Backfill each kind x symbol; one transaction each, one failure does not stop the others.

    Incremental without ``since_ms``: from just after the newest stored row of that kind and symbol, else
    :data:`DEFAULT_LOOKBACK_MS` before ``until_ms`` (default now). Returns (loads, error lines
    ``<kind> <symbol>: <error>``).
    """
    now = now_ms if now_ms is not None else int(datetime.now(timezone.utc).timestamp() * 1000)
    end = until_ms if until_ms is not None else now
    out, errors = [], []
    for sym in symbols:
        for kind in kinds:
            if kind not in KINDS:
                raise AtsError(f"unknown microstructure kind {kind!r}; expected one of {', '.join(KINDS)}")
            start = since_ms
            if start is None:
                last = last_stored_ms(conn, kind, sym, period=period, timeframe=timeframe)
                start = last + 1 if last is not None else end - DEFAULT_LOOKBACK_MS
                if kind == "taker" and last is not None:
                    start = last  # the newest bucket may have been partial: re-aggregated (upsert)
            try:
                out.append(backfill(conn, session, kind, sym, start_ms=start,
                                    end_ms=until_ms if until_ms is not None else None,
                                    period=period, timeframe=timeframe, **kw))
            except AtsError as exc:
                errors.append(f"{kind} {sym}: {exc}")
    return out, errors
