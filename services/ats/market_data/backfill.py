"""Live backfill from Bybit (pybit) and Alpaca (alpaca-py) into ``candles``.

Bybit: ``pybit.unified_trading.HTTP().get_kline(category, symbol, interval, start, end, limit=1000)`` (public
market data, no key). The window ``[start, end)`` is walked forward in pages of ``limit`` bars (each request
``start=<page start ms>``, ``end=<page end ms - 1>``; Bybit returns at most ``limit`` rows, newest first).
Alpaca: ``StockHistoricalDataClient.get_stock_bars`` (keys from ``ALPACA_API_KEY`` / ``ALPACA_SECRET_KEY`` or
``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``; required) or ``CryptoHistoricalDataClient.get_crypto_bars`` for
symbols such as ``BTC/USD`` (keys optional); alpaca-py pages internally. Optional ``ALPACA_DATA_FEED`` (``iex``
or ``sip``) selects the stock feed.

Incremental: without ``start`` the backfill starts right after the newest stored candle of the symbol and
timeframe (any source); with nothing stored it goes back ``DEFAULT_LOOKBACK_BARS`` bars. ``end`` defaults to
now; only closed candles (``open_time + timeframe <= end``) are stored, so the still-forming candle is never
written. Every page is fetched and validated first and all of them are written in ONE transaction: a failure
on any page (after retries) writes nothing. Network errors are retried ``retries`` times with exponential
backoff (``backoff`` x 2^attempt seconds), then AtsError with one line naming vendor, symbol and window.
Exchange outages are not filled in: a missing candle stays missing (the coverage grid reports it).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import psycopg

from ..db.config_store import setting_as_of
from ..db.events import record_event
from ..errors import AtsError, UsageError
from ..timeutil import TIMEFRAME_SECONDS, UTC, parse_ts, utcnow
from .loaders import (BYBIT_INTERVALS, CandleBatch, alpaca_bar_rows, parse_bybit_payload, store_batch,
                      _day_floor_eastern)
from .store import last_open_time, write_scope

log = logging.getLogger("ats.market_data.backfill")

BYBIT_PAGE_LIMIT = 1000
DEFAULT_LOOKBACK_BARS = 1000
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_S = 1.0
#: used by ``--all`` when the system setting 'watchlist' is not set (Bybit spot symbols)
DEFAULT_WATCHLIST = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "AVAXUSDT", "DOTUSDT", "LINKUSDT",
                     "LTCUSDT"]
_CRYPTO_SUFFIXES = ("USDT", "USDC", "USD", "BTC", "ETH")


@dataclass
class BackfillResult:
    """One backfill: the window asked for [start, end), pages fetched, rows fetched/inserted/updated."""

    symbol: str
    timeframe: str
    source: str
    start: datetime
    end: datetime
    pages: int
    rows_fetched: int
    rows_inserted: int
    rows_updated: int

    def line(self) -> str:
        """One human-readable summary line."""
        return (f"{self.symbol} {self.timeframe} from {self.source}: {self.start:%Y-%m-%d %H:%M} .. "
                f"{self.end:%Y-%m-%d %H:%M} UTC, {self.pages} page(s), {self.rows_fetched} fetched, "
                f"{self.rows_inserted} new, {self.rows_updated} revised")


def _ms(dt: datetime) -> int:
    return int(round(dt.timestamp() * 1000))


def _floor(dt: datetime, tf: str) -> datetime:
    secs = TIMEFRAME_SECONDS[tf]
    origin = 4 * 86400 if tf == "1w" else 0
    ts = int(dt.timestamp())
    return datetime.fromtimestamp(ts - ((ts - origin) % secs), tz=UTC)


def _retrying(call: Callable[[], Any], what: str, *, retries: int, backoff: float,
              sleep: Callable[[float], None], retryable: tuple, fatal: tuple = ()) -> Any:
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return call()
        except fatal as exc:  # the vendor refused the request: retrying will not help
            raise AtsError(f"{what} refused: {_one_line(exc)}; nothing was written") from exc
        except retryable as exc:
            last = exc
            if attempt < retries:
                delay = backoff * (2 ** attempt)
                log.warning("%s failed (%s), retry %d/%d in %.1fs", what, _one_line(exc), attempt + 1, retries, delay)
                sleep(delay)
    raise AtsError(f"{what} failed after {retries + 1} attempts: {_one_line(last)}; nothing was written") from last


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {str(msg).strip().splitlines()[0] if str(msg).strip() else ''}"


def _bybit_errors() -> tuple[tuple, tuple]:
    import requests
    from pybit.exceptions import FailedRequestError, InvalidRequestError

    return (requests.exceptions.RequestException, FailedRequestError, ConnectionError, TimeoutError,
            OSError), (InvalidRequestError,)


def resolve_window(conn: psycopg.Connection, symbol: str, timeframe: str, start=None, end=None,
                   now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) of a backfill: explicit bounds, else incremental after the last stored candle (any source),
    else DEFAULT_LOOKBACK_BARS back from ``end``. ``end`` defaults to now, floored to the timeframe grid (so
    only closed candles are fetched). Raises UsageError on an unknown timeframe or start >= end."""
    if timeframe not in TIMEFRAME_SECONDS:
        raise UsageError(f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}")
    step = timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    end_dt = _floor(parse_ts(end, what="end") if end is not None else (now or utcnow()), timeframe)
    if start is not None:
        start_dt = _floor(parse_ts(start, what="start"), timeframe)
    else:
        last = last_open_time(conn, symbol, timeframe)
        start_dt = last + step if last is not None else end_dt - DEFAULT_LOOKBACK_BARS * step
    return start_dt, end_dt


def fetch_bybit(symbol: str, timeframe: str, start: datetime, end: datetime, *, category: str = "spot",
                client: Any = None, retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S,
                sleep: Callable[[float], None] = time.sleep) -> tuple[list[tuple[list, str]], int]:
    """Fetch closed candles in [start, end) via ``HTTP.get_kline``; returns (rows oldest first with labels,
    pages). Rows are ``[open_time_ms, open, high, low, close, volume]`` with Bybit's exact strings.
    Raises AtsError after retries or when Bybit refuses the request."""
    if timeframe not in BYBIT_INTERVALS:
        raise UsageError(f"Bybit has no interval for timeframe {timeframe!r}")
    if category not in ("spot", "linear", "inverse"):
        raise UsageError(f"Bybit category must be spot, linear or inverse, not {category!r}")
    if client is None:
        from pybit.unified_trading import HTTP

        client = HTTP(testnet=False, timeout=10, max_retries=1)
    retryable, fatal = _bybit_errors()
    step_ms = TIMEFRAME_SECONDS[timeframe] * 1000
    start_ms, end_ms = _ms(start), _ms(end)
    rows: dict[int, tuple[list, str]] = {}
    pages = 0
    cur = start_ms
    while cur < end_ms:
        page_end = min(cur + BYBIT_PAGE_LIMIT * step_ms, end_ms)
        what = f"bybit get_kline {category} {symbol} {timeframe} page {pages + 1} ({_iso(cur)}..{_iso(page_end)})"
        payload = _retrying(lambda: client.get_kline(category=category, symbol=symbol,
                                                     interval=BYBIT_INTERVALS[timeframe], start=cur,
                                                     end=page_end - 1, limit=BYBIT_PAGE_LIMIT),
                            what, retries=retries, backoff=backoff, sleep=sleep, retryable=retryable, fatal=fatal)
        pages += 1
        _, page_rows = parse_bybit_payload(payload, f"bybit:{symbol}:{timeframe} page {pages}")
        for row, label in page_rows:
            t = int(row[0])
            if cur <= t < page_end and t + step_ms <= end_ms:
                rows[t] = (row, f"page {pages} {label}")
        cur = page_end
    return [rows[t] for t in sorted(rows)], pages


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _alpaca_keys() -> tuple[str | None, str | None]:
    key = os.environ.get("ALPACA_API_KEY") or os.environ.get("APCA_API_KEY_ID")
    secret = os.environ.get("ALPACA_SECRET_KEY") or os.environ.get("APCA_API_SECRET_KEY")
    return key, secret


def alpaca_symbol(symbol: str) -> tuple[str, bool]:
    """(Alpaca request symbol, is_crypto): 'BTC/USD' and 'BTCUSD' -> ('BTC/USD', True); 'SPY' -> ('SPY', False)."""
    s = symbol.upper()
    if "/" in s:
        return s, True
    for q in _CRYPTO_SUFFIXES:
        if s.endswith(q) and len(s) > len(q) + 1:
            return f"{s[:-len(q)]}/{q}", True
    return s, False


def _alpaca_timeframe(tf: str):
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

    return {"5m": TimeFrame(5, TimeFrameUnit.Minute), "15m": TimeFrame(15, TimeFrameUnit.Minute),
            "1h": TimeFrame(1, TimeFrameUnit.Hour), "4h": TimeFrame(4, TimeFrameUnit.Hour),
            "1d": TimeFrame(1, TimeFrameUnit.Day), "1w": TimeFrame(1, TimeFrameUnit.Week)}[tf]


def fetch_alpaca(symbol: str, timeframe: str, start: datetime, end: datetime, *, client: Any = None,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[list[tuple[list, str]], int]:
    """Fetch closed bars in [start, end) via alpaca-py; returns (rows oldest first with labels, 1). Daily and
    weekly bars are re-stamped to 00:00 UTC of their exchange date. Raises AtsError (missing keys for stocks,
    vendor refusal, network failure after retries)."""
    import requests
    from alpaca.common.exceptions import APIError

    req_sym, crypto = alpaca_symbol(symbol)
    key, secret = _alpaca_keys()
    if client is None:
        if crypto:
            from alpaca.data.historical import CryptoHistoricalDataClient

            client = CryptoHistoricalDataClient(api_key=key, secret_key=secret)
        else:
            if not key or not secret:
                raise AtsError("alpaca: set ALPACA_API_KEY and ALPACA_SECRET_KEY (or APCA_API_KEY_ID and "
                               "APCA_API_SECRET_KEY) in the environment to backfill stock bars")
            from alpaca.data.historical import StockHistoricalDataClient

            client = StockHistoricalDataClient(api_key=key, secret_key=secret)
    tf = _alpaca_timeframe(timeframe)
    if crypto:
        from alpaca.data.requests import CryptoBarsRequest

        req = CryptoBarsRequest(symbol_or_symbols=req_sym, timeframe=tf, start=start, end=end)
        call = lambda: client.get_crypto_bars(req)  # noqa: E731
    else:
        from alpaca.data.requests import StockBarsRequest

        kw = {}
        feed = os.environ.get("ALPACA_DATA_FEED")
        if feed:
            from alpaca.data.enums import DataFeed

            kw["feed"] = DataFeed(feed.lower())
        req = StockBarsRequest(symbol_or_symbols=req_sym, timeframe=tf, start=start, end=end, **kw)
        call = lambda: client.get_stock_bars(req)  # noqa: E731

    def is_retryable(exc: APIError) -> bool:
        code = exc.status_code
        return code is None or code == 429 or code >= 500

    def guarded():
        try:
            return call()
        except APIError as exc:
            if is_retryable(exc):
                raise ConnectionError(str(exc)) from exc
            raise

    what = f"alpaca bars {req_sym} {timeframe} ({start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} UTC)"
    barset = _retrying(guarded, what, retries=retries, backoff=backoff, sleep=sleep,
                       retryable=(requests.exceptions.RequestException, ConnectionError, TimeoutError, OSError),
                       fatal=(APIError,))
    step_ms = TIMEFRAME_SECONDS[timeframe] * 1000
    out = []
    for sym, rows in alpaca_bar_rows(barset).items():
        for row, label in rows:
            t = row[0]
            if timeframe in ("1d", "1w"):
                t = _day_floor_eastern(t)
            if _ms(start) <= t and t + step_ms <= _ms(end):
                out.append(([t] + row[1:], label))
    out.sort(key=lambda r: r[0][0])
    return out, 1


def backfill(conn: psycopg.Connection, symbol: str, timeframe: str, start=None, end=None, *,
             source: str = "bybit", category: str = "spot", client: Any = None, retries: int = DEFAULT_RETRIES,
             backoff: float = DEFAULT_BACKOFF_S, sleep: Callable[[float], None] = time.sleep,
             now: datetime | None = None) -> BackfillResult:
    """Fetch ``symbol``/``timeframe`` candles from ``source`` ('bybit' | 'alpaca') for [start, end) and store
    them (source column = 'bybit' / 'alpaca') in one transaction; returns a BackfillResult.

    Window rules and failure behaviour: module docstring. ``client``: a pybit ``HTTP`` / alpaca-py data client
    (default: constructed here). Commits when ``conn`` had no transaction open on entry (else the caller
    commits). Also used by the demo to fetch real candles when no local files exist.
    """
    with write_scope(conn):
        return _backfill(conn, symbol, timeframe, start, end, source=source, category=category, client=client,
                         retries=retries, backoff=backoff, sleep=sleep, now=now)


def _backfill(conn, symbol, timeframe, start, end, *, source, category, client, retries, backoff, sleep,
              now) -> BackfillResult:
    symbol = symbol.upper().replace("/", "")
    start_dt, end_dt = resolve_window(conn, symbol, timeframe, start, end, now=now)
    if start_dt >= end_dt:
        return BackfillResult(symbol, timeframe, source, start_dt, end_dt, 0, 0, 0, 0)
    if source == "bybit":
        rows, pages = fetch_bybit(symbol, timeframe, start_dt, end_dt, category=category, client=client,
                                  retries=retries, backoff=backoff, sleep=sleep)
    elif source == "alpaca":
        rows, pages = fetch_alpaca(symbol, timeframe, start_dt, end_dt, client=client, retries=retries,
                                   backoff=backoff, sleep=sleep)
    else:
        raise UsageError(f"unknown backfill source {source!r}; expected bybit or alpaca")
    if not rows:
        return BackfillResult(symbol, timeframe, source, start_dt, end_dt, pages, 0, 0, 0)
    batch = CandleBatch(f"{source}:{symbol}:{timeframe}", symbol, timeframe, source, [r for r, _ in rows],
                        [lab for _, lab in rows])
    with conn.transaction():
        res = store_batch(conn, batch)
        record_event(conn, "market_data", "backfill", symbol=symbol,
                     payload={"timeframe": timeframe, "source": source, "start": start_dt.isoformat(),
                              "end": end_dt.isoformat(), "pages": pages, "rows_fetched": len(rows),
                              "rows_inserted": res.rows_inserted, "rows_updated": res.rows_updated})
    return BackfillResult(symbol, timeframe, source, start_dt, end_dt, pages, len(rows), res.rows_inserted,
                          res.rows_updated)


def watchlist(conn: psycopg.Connection, as_of: datetime | None = None) -> list[dict]:
    """The backfill watchlist: system setting 'watchlist' (a list of symbols, or of {symbol, timeframe,
    source} objects), else DEFAULT_WATCHLIST. Each entry -> {symbol, timeframe or None, source or None}."""
    val = setting_as_of(conn, "watchlist", as_of, default=None)
    if not val:
        val = DEFAULT_WATCHLIST
    if not isinstance(val, list):
        raise AtsError(f"system setting 'watchlist' must be a list of symbols, got {type(val).__name__}")
    out = []
    for item in val:
        if isinstance(item, str):
            out.append({"symbol": item.upper(), "timeframe": None, "source": None})
        elif isinstance(item, dict) and item.get("symbol"):
            out.append({"symbol": str(item["symbol"]).upper(), "timeframe": item.get("timeframe"),
                        "source": item.get("source")})
        else:
            raise AtsError(f"system setting 'watchlist': bad entry {item!r} (expected a symbol or {{symbol, ...}})")
    return out


def backfill_watchlist(conn: psycopg.Connection, *, timeframe: str | None = None, source: str | None = None,
                       start=None, end=None, **kw) -> tuple[list[BackfillResult], list[str]]:
    """Backfill every watchlist entry; returns (results, error lines). An entry's own timeframe/source win,
    then the arguments, then defaults: crypto symbols -> bybit 1h, others -> alpaca 1d. One failing symbol
    does not stop the others."""
    results, errors = [], []
    for e in watchlist(conn):
        _, crypto = alpaca_symbol(e["symbol"])
        src = e["source"] or source or ("bybit" if crypto else "alpaca")
        tf = e["timeframe"] or timeframe or ("1h" if crypto else "1d")
        try:
            results.append(backfill(conn, e["symbol"], tf, start, end, source=src, **kw))
        except AtsError as exc:
            errors.append(f"{e['symbol']} {tf} {src}: {exc}")
    return results, errors
