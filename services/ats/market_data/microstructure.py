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


def coverage(conn) -> list[dict]:
    """Per kind x symbol: first, last, rows (what ``ats data coverage`` adds for microstructure)."""
    out = []
    for kind, table, col in (("oi", "open_interest", "ts"), ("funding", "funding_rates", "ts"),
                             ("ls_ratio", "long_short_ratios", "ts"), ("taker", "taker_volume", "bucket_start")):
        for r in conn.execute(f"SELECT symbol, min({col}) AS first, max({col}) AS last, count(*) AS rows "
                              f"FROM {table} GROUP BY symbol ORDER BY symbol").fetchall():
            out.append({"kind": kind, "symbol": r["symbol"], "first": r["first"].isoformat(),
                        "last": r["last"].isoformat(), "rows": r["rows"]})
    return out


def backfill(conn, session, kind: str, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None,
             period: str = "1h", timeframe: str = "1h", max_pages: int = 50) -> MicroLoad:
    """Page a pybit ``HTTP`` session for ``kind`` of ``symbol`` (linear) and store every page in ONE transaction.

    ``session`` is a ``pybit.unified_trading.HTTP`` (its ``endpoint`` may point at a testnet or a local
    simulator). Cursor paging (``nextPageCursor``) for oi / ls_ratio, time paging for funding; taker volume comes
    from the latest public trades (Bybit serves only recent ones).
    """
    pages: list[dict] = []
    args: dict = {"category": "linear", "symbol": symbol}
    if start_ms is not None:
        args["startTime"] = start_ms
    if end_ms is not None:
        args["endTime"] = end_ms
    call = {"oi": lambda **a: session.get_open_interest(intervalTime=period, limit=200, **a),
            "funding": lambda **a: session.get_funding_rate_history(limit=200, **a),
            "ls_ratio": lambda **a: session.get_long_short_ratio(period=period, limit=500, **a),
            "taker": lambda **a: session.get_public_trade_history(
                limit=1000, **{k: v for k, v in a.items() if k in ("category", "symbol")})}[kind]
    cursor = None
    for _ in range(max_pages):
        resp = call(**args, **({"cursor": cursor} if cursor else {}))
        pages.append(resp)
        cursor = (resp.get("result") or {}).get("nextPageCursor")
        if not cursor or kind in ("funding", "taker"):
            break
    rows = [r for p in pages for r in p["result"]["list"]]
    merged = {"retCode": 0, "result": {"symbol": symbol, "list": rows}}
    return load_payload(conn, kind, merged, symbol=symbol, period=period, timeframe=timeframe,
                        where=f"bybit {kind} {symbol}")
