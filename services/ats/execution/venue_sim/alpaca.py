"""Local Alpaca simulator on 127.0.0.1: trading API v2 and market-data bars, with the JSON shapes alpaca-py parses.

alpaca-py clients point at it with ``url_override`` (``TradingClient(..., url_override="http://127.0.0.1:P")``,
``StockHistoricalDataClient(..., url_override=...)``). It serves real daily OHLCV files up to the simulated now,
and executes orders on those bars:

* The venue's clock (``GET /v2/clock``) starts at ``start_ms`` and runs ``speed`` times faster than the local
  monotonic clock; tests move it with :meth:`AlpacaSim.advance`.
* A market order fills at the OPEN of the bar in session when it arrives (an order sent at the decision bar's
  close lands in the next bar), or of the next bar to open while the market is closed, once the simulated clock
  has reached that open. A limit buy fills at the
  open when the open is at or below the limit, else at the limit once a closed bar's low reached it (sell
  symmetrically); it rests until then.
* Options: OCC symbols (``SPY261218P00450000``) priced by a deterministic model of the underlying's bar open
  (:func:`option_price`: intrinsic value + a time value ``0.02 x S x exp(-|K - S| / (0.05 x S)) x sqrt(dte / 30)``,
  USD per share, x100 per contract). A multi-leg order (``order_class = "mleg"``, 2-4 legs) fills all its legs at
  once or none, at the model price (the quotes' mid). The option chain (``GET /v2/options/contracts``, the
  monthly expirations - third Fridays - of the next ``option_months`` months, strikes every ``strike_step`` USD
  within 30 % of the spot) and the latest quotes (``GET /v1beta1/options/quotes/latest``: bid/ask = model price
  -/+ max(0.01, 2 %)) answer with Alpaca's shapes (alpaca-py's ``get_option_contracts`` /
  ``OptionHistoricalDataClient.get_option_latest_quote`` parse them). An order on an expired contract is refused
  (422); expired positions are not settled (strategies close before expiry).
* Account: cash starts at ``cash_usd``; equity = cash + market value of positions at the latest open.

Fault injection (one-shot flags in :class:`Faults`, set by tests): drop the response to the next accepted order
(the order exists, the client sees a connection reset), answer it with 500 after accepting it, answer it late
(after the client's timeout), answer 503 without accepting it (a resend is then right), fill the next order
partially, reject the next order (403), reject the next MLEG order after accepting it, answer the next N
requests with 429. Duplicate ``client_order_id`` -> 422 as Alpaca does. Every request is counted in
:attr:`AlpacaSim.calls` as ``(method, path)``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

OCC_RE = re.compile(r"^([A-Z]{1,6})(\d{6})([CP])(\d{8})$")
ORDER_WRITE = {("POST", "/v2/orders"), ("DELETE", "/v2/orders"), ("PATCH", "/v2/orders"),
               ("DELETE", "/v2/positions")}
_NS = uuid.UUID("6a1e0c2e-0000-4000-8000-a1aca0000000")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: str) -> int:
    """ISO date/datetime (``Z`` or offset) or Unix ms -> UTC ms."""
    s = s.strip()
    if s.isdigit():
        return int(s)
    d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


@dataclass
class Bars:
    """One symbol's OHLCV series: open times (UTC ms) and rows, oldest first; ``tf_ms`` the bar length."""

    symbol: str
    t: list[int]
    rows: list[tuple[float, float, float, float, float]]
    tf_ms: int

    def first_open_at_or_after(self, ms: int) -> int | None:
        """Index of the first bar opening at or after ``ms`` (bisect), or None."""
        lo, hi = 0, len(self.t)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.t[mid] < ms:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self.t) else None

    def fill_bar(self, submitted_ms: int) -> int | None:
        """The bar an order submitted at ``submitted_ms`` executes in: the bar in session at that moment, else the
        next bar to open (an order sent at a bar's close, or while the market is closed, fills at the next open)."""
        j = self.last_open_at_or_before(submitted_ms)
        if j is not None and submitted_ms < self.t[j] + self.tf_ms:
            return j
        return self.first_open_at_or_after(submitted_ms)

    def last_open_at_or_before(self, ms: int) -> int | None:
        i = self.first_open_at_or_after(ms + 1)
        i = len(self.t) if i is None else i
        return i - 1 if i > 0 else None


def load_bars(path: str | Path, symbol: str | None = None) -> Bars:
    """Read a ``timestamp,open,high,low,close,volume`` CSV (timestamp a date, ISO time or Unix ms).

    Parameters
    ----------
    path : str or Path
        The file; the symbol defaults to the part of the file name before ``_`` (``SPY_1d.csv`` -> ``SPY``).
    symbol : str, optional
        Overrides the symbol.

    Returns
    -------
    Bars
        Open times in UTC ms; ``tf_ms`` is the smallest spacing between consecutive bars.

    Raises
    ------
    ValueError
        The file has fewer than two rows or a malformed row (the message names the file and line).
    """
    p = Path(path)
    sym = symbol or p.name.split("_")[0].split(".")[0].upper()
    t, rows = [], []
    with p.open(newline="") as fh:
        for n, r in enumerate(csv.DictReader(fh), start=2):
            try:
                t.append(_parse_time(r["timestamp"]))
                rows.append((float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
                             float(r["volume"])))
            except (KeyError, ValueError) as e:
                raise ValueError(f"{p}:{n}: bad OHLCV row ({e})") from None
    if len(t) < 2:
        raise ValueError(f"{p}: fewer than two bars")
    tf = min(b - a for a, b in zip(t, t[1:]))
    return Bars(sym, t, rows, tf)


def occ_symbol(underlying: str, expiry: str, kind: str, strike: float) -> str:
    """OCC option symbol: root + YYMMDD + C/P + strike x 1000 in 8 digits (``SPY261218P00450000``)."""
    d = datetime.strptime(expiry, "%Y-%m-%d")
    return f"{underlying.upper()}{d:%y%m%d}{kind.upper()}{int(round(strike * 1000)):08d}"


EXPIRY_CLOSE_UTC_H = 20          # options expire at the 16:00 New York close (20:00 UTC in summer time; kept fixed)


def expiry_ms(occ: str) -> int:
    """The expiration instant of an OCC symbol: its date at 20:00 UTC, UTC ms."""
    m = OCC_RE.match(occ)
    d = datetime.strptime(m.group(2), "%y%m%d").replace(hour=EXPIRY_CLOSE_UTC_H, tzinfo=timezone.utc)
    return int(d.timestamp() * 1000)


def option_price(occ: str, spot: float, at_ms: int | None = None) -> float:
    """The simulator's option model, USD per share (x100 per contract), >= 0.01.

    ``intrinsic + 0.02 x S x exp(-|K - S| / (0.05 x S)) x sqrt(dte / 30)``: the time value peaks at the money and
    decays with the square root of the days to expiry ``dte`` (from ``at_ms`` to :func:`expiry_ms`, floored at 0);
    without ``at_ms`` the factor is 1 (30 days). Deterministic, no volatility input: a test fixture, not a pricer.
    """
    m = OCC_RE.match(occ)
    k = int(m.group(4)) / 1000.0
    intrinsic = max(spot - k, 0.0) if m.group(3) == "C" else max(k - spot, 0.0)
    decay = 1.0 if at_ms is None else math.sqrt(max(expiry_ms(occ) - at_ms, 0) / 86_400_000 / 30.0)
    return round(max(intrinsic + 0.02 * spot * math.exp(-abs(k - spot) / (0.05 * spot)) * decay, 0.01), 2)


def option_quote(occ: str, spot: float, at_ms: int) -> tuple[float, float]:
    """(bid, ask) USD per share around :func:`option_price` (the mid): -/+ max(0.01, 2 % of it), bid >= 0.01."""
    mid = option_price(occ, spot, at_ms)
    half = max(0.01, round(0.02 * mid, 2))
    return max(0.01, round(mid - half, 2)), round(mid + half, 2)


@dataclass
class Faults:
    """One-shot fault switches (each is consumed by the next order it applies to)."""

    drop_next_order_response: bool = False
    error500_next_order: bool = False
    partial_next_order: float | None = None     # fraction of qty to fill, rest stays open
    reject_next_order: str | None = None        # 403 with this message
    reject_next_mleg: str | None = None         # accepted, then status rejected at fill time
    rate_limit_next: int = 0                    # the next N requests answer 429
    unavailable_next_order: bool = False        # 503 WITHOUT accepting the next order (safe to resend)
    delay_next_order_response: float = 0.0      # accept the next order, answer after this many seconds


@dataclass
class SimOrder:
    id: str
    client_order_id: str
    symbol: str | None
    qty: float
    side: str | None
    type: str
    tif: str
    order_class: str
    submitted_ms: int
    limit_price: float | None = None
    status: str = "accepted"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    filled_ms: int | None = None
    updated_ms: int = 0
    legs: list["SimOrder"] = field(default_factory=list)
    ratio_qty: float | None = None
    position_intent: str | None = None
    fill_fraction: float = 1.0
    reject_at_fill: str | None = None
    source: str = "order"                       # order | close_position


class AlpacaSim:
    """The venue state and the HTTP server.

    Parameters
    ----------
    bars : list of Bars
        The served symbols (underlyings of any option traded must be among them).
    api_key, secret_key : str
        What the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers must carry (else 401).
    start_ms : int, optional
        The simulated clock at start (UTC ms); default the open of the 250th bar of the first symbol.
    speed : float
        Simulated seconds per local second (1 = real time).
    cash_usd, multiplier : float
        Starting cash (USD) and margin multiplier reported by ``/v2/account``.
    port : int
        0 picks a free port (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, bars: list[Bars], api_key: str, secret_key: str, *, start_ms: int | None = None,
                 speed: float = 1.0, cash_usd: float = 100_000.0, multiplier: float = 2.0, port: int = 0,
                 pattern_day_trader: bool = False, shorting_enabled: bool = True, status: str = "ACTIVE",
                 trading_blocked: bool = False, option_months: int = 4, strike_step: float = 1.0):
        self.bars = {b.symbol: b for b in bars}
        self._key, self._secret = api_key, secret_key
        first = bars[0]
        self._t0_ms = start_ms if start_ms is not None else first.t[min(249, len(first.t) - 1)]
        self._mono0 = time.monotonic()
        self._offset_ms = 0
        self.speed = float(speed)
        self.cash = float(cash_usd)
        self.multiplier = multiplier
        self.pattern_day_trader = pattern_day_trader
        self.shorting_enabled = shorting_enabled
        self.status = status
        self.trading_blocked = trading_blocked
        self.option_months, self.strike_step = int(option_months), float(strike_step)
        self.account_id = str(uuid.uuid5(_NS, "account"))
        self.positions: dict[str, dict] = {}     # symbol -> {"qty": signed float, "avg": float}
        self.orders: list[SimOrder] = []
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- clock
    def now_ms(self) -> int:
        """The simulated venue clock, UTC ms."""
        return int(self._t0_ms + (time.monotonic() - self._mono0) * 1000 * self.speed + self._offset_ms)

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward by ``seconds`` (tests)."""
        with self.lock:
            self._offset_ms += int(seconds * 1000)

    def pause(self) -> None:
        """Freeze the simulated clock where it is (tests comparing venue and database at one instant)."""
        with self.lock:
            self._t0_ms, self._mono0, self._offset_ms, self.speed = self.now_ms(), time.monotonic(), 0, 0.0

    def resume(self, speed: float) -> None:
        """Let the simulated clock run again from where it is, ``speed`` simulated seconds per local second
        (tests: a clock paused while the live process is dead does not move on without it)."""
        with self.lock:
            self._t0_ms, self._mono0, self._offset_ms, self.speed = self.now_ms(), time.monotonic(), 0, float(speed)

    def set_now(self, ms: int) -> None:
        """Set the simulated clock to ``ms`` (UTC ms; never backwards)."""
        with self.lock:
            self._offset_ms += max(0, ms - self.now_ms())

    # ---------------------------------------------------------------- server
    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "AlpacaSim":
        """Serve on 127.0.0.1 in a daemon thread; returns self."""
        sim = self

        class Handler(_Handler):
            pass

        Handler.sim = sim
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="alpaca-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def order_calls(self) -> list[tuple[str, str]]:
        """Requests that place, cancel or modify an order (POST/PATCH/DELETE /v2/orders*, DELETE /v2/positions*)."""
        return [(m, p) for m, p in self.calls
                if any(m == wm and (p == wp or p.startswith(wp + "/")) for wm, wp in ORDER_WRITE)]

    # ---------------------------------------------------------------- pricing
    def _underlying(self, symbol: str) -> str:
        m = OCC_RE.match(symbol)
        return m.group(1) if m else symbol

    def _spot(self, symbol: str, at_ms: int) -> float | None:
        b = self.bars.get(self._underlying(symbol))
        if b is None:
            return None
        i = b.last_open_at_or_before(at_ms)
        return None if i is None else b.rows[i][0]

    def _price(self, symbol: str, at_ms: int) -> float | None:
        s = self._spot(symbol, at_ms)
        if s is None or not OCC_RE.match(symbol):
            return s
        return option_price(symbol, s, at_ms)

    @staticmethod
    def _mult(symbol: str) -> float:
        return 100.0 if OCC_RE.match(symbol) else 1.0

    # ---------------------------------------------------------------- execution
    def tick(self) -> None:
        """Execute every open order whose fill bar the simulated clock has reached."""
        now = self.now_ms()
        for o in self.orders:
            if o.status in ("accepted", "new", "partially_filled"):
                self._try_fill(o, now)

    def _try_fill(self, o: SimOrder, now: int) -> None:
        und = self._underlying(o.symbol) if o.symbol else self._underlying(o.legs[0].symbol)
        b = self.bars[und]
        i = b.fill_bar(o.submitted_ms)
        if i is None or b.t[i] > now:
            if o.status == "accepted":
                o.status = "new"
            return
        if o.reject_at_fill:
            o.status, o.updated_ms = "rejected", now
            for leg in o.legs:
                leg.status = "rejected"
            return
        if o.order_class == "mleg":
            self._fill_mleg(o, b.t[i])
            return
        price = self._limit_price_reached(o, b, i, now)
        if price is None:
            o.status = "new"
            return
        want = o.qty * o.fill_fraction if o.filled_qty == 0 else 0.0
        qty = round(want, 6)
        if qty <= 0:
            return
        self._apply(o.symbol, o.side, qty, price)
        o.filled_avg_price = price
        o.filled_qty = qty
        o.filled_ms = o.updated_ms = b.t[i]
        o.status = "filled" if qty >= o.qty - 1e-9 else "partially_filled"

    def _limit_price_reached(self, o: SimOrder, b: Bars, i: int, now: int) -> float | None:
        px = self._price(o.symbol, b.t[i])
        if o.type != "limit":
            return px
        lim, buy = o.limit_price, o.side == "buy"
        if (buy and px <= lim) or (not buy and px >= lim):
            return px
        for j in range(i, len(b.t)):
            if b.t[j] + b.tf_ms > now:
                break
            lo, hi = b.rows[j][2], b.rows[j][1]
            if OCC_RE.match(o.symbol):
                lo = hi = option_price(o.symbol, b.rows[j][3], b.t[j] + b.tf_ms)
            if (buy and lo <= lim) or (not buy and hi >= lim):
                return lim
        return None

    def _fill_mleg(self, o: SimOrder, at_ms: int) -> None:
        net = 0.0
        for leg in o.legs:
            px = self._price(leg.symbol, at_ms)
            q = o.qty * (leg.ratio_qty or 1)
            self._apply(leg.symbol, leg.side, q, px)
            leg.filled_qty, leg.filled_avg_price, leg.filled_ms, leg.status = q, px, at_ms, "filled"
            net += px * (leg.ratio_qty or 1) * (1 if leg.side == "buy" else -1)
        o.filled_qty, o.filled_avg_price, o.filled_ms, o.updated_ms = o.qty, round(net, 4), at_ms, at_ms
        o.status = "filled"

    def _apply(self, symbol: str, side: str, qty: float, price: float) -> None:
        signed = qty if side == "buy" else -qty
        self.cash -= signed * price * self._mult(symbol)
        p = self.positions.get(symbol)
        if p is None:
            self.positions[symbol] = {"qty": signed, "avg": price}
            return
        new = p["qty"] + signed
        if abs(new) < 1e-9:
            del self.positions[symbol]
        elif p["qty"] * signed > 0:
            p["avg"] = (p["avg"] * abs(p["qty"]) + price * qty) / abs(new)
            p["qty"] = new
        else:
            if new * p["qty"] < 0:
                p["avg"] = price
            p["qty"] = new

    # ---------------------------------------------------------------- order creation
    def new_order(self, body: dict) -> tuple[int, dict | None, str]:
        """Validate and accept an order; returns ``(http_status, json, fault)`` where fault is '' | drop | 500."""
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if len(cid) > 48:
            return 422, {"code": 40010000, "message": "client_order_id must be no more than 48 characters"}, ""
        if any(o.client_order_id == cid for o in self.orders):
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}, ""
        f = self.faults
        if f.unavailable_next_order:
            f.unavailable_next_order = False
            return 503, {"code": 50310000, "message": "service unavailable"}, ""
        if f.reject_next_order:
            msg, f.reject_next_order = f.reject_next_order, None
            return 403, {"code": 40310000, "message": msg}, ""
        try:
            o = self._build(body, cid)
        except (KeyError, ValueError, TypeError) as e:
            return 422, {"code": 40010000, "message": f"invalid order: {e}"}, ""
        if f.partial_next_order is not None:
            o.fill_fraction, f.partial_next_order = f.partial_next_order, None
        if o.order_class == "mleg" and f.reject_next_mleg:
            o.reject_at_fill, f.reject_next_mleg = f.reject_next_mleg, None
        self.orders.append(o)
        self._try_fill(o, self.now_ms())
        fault = ""
        if f.drop_next_order_response:
            f.drop_next_order_response, fault = False, "drop"
        elif f.error500_next_order:
            f.error500_next_order, fault = False, "500"
        elif f.delay_next_order_response:
            fault, f.delay_next_order_response = f"delay:{f.delay_next_order_response}", 0.0
        return 200, self.order_json(o), fault

    def _build(self, body: dict, cid: str) -> SimOrder:
        now = self.now_ms()
        cls = body.get("order_class") or "simple"
        typ = body["type"]
        if typ not in ("market", "limit"):
            raise ValueError(f"type {typ} not supported by the simulator")
        lim = float(body["limit_price"]) if typ == "limit" else None
        qty = float(body["qty"])
        if qty <= 0:
            raise ValueError("qty must be > 0")
        oid = str(uuid.uuid4())
        if cls == "mleg":
            legs_in = body.get("legs") or []
            if not 2 <= len(legs_in) <= 4:
                raise ValueError("mleg needs 2 to 4 legs")
            legs = []
            for lg in legs_in:
                sym = lg["symbol"]
                if not OCC_RE.match(sym) or self._underlying(sym) not in self.bars:
                    raise ValueError(f"unknown option symbol {sym}")
                if expiry_ms(sym) <= now:
                    raise ValueError(f"option contract {sym} has expired")
                legs.append(SimOrder(str(uuid.uuid4()), str(uuid.uuid4()), sym, qty * float(lg["ratio_qty"]),
                                     lg["side"], typ, body["time_in_force"], "mleg", now,
                                     ratio_qty=float(lg["ratio_qty"]), position_intent=lg.get("position_intent")))
            return SimOrder(oid, cid, None, qty, None, typ, body["time_in_force"], "mleg", now, lim, legs=legs)
        sym = body["symbol"]
        if self._underlying(sym) not in self.bars:
            raise ValueError(f"asset {sym} not found")
        if OCC_RE.match(sym) and expiry_ms(sym) <= now:
            raise ValueError(f"option contract {sym} has expired")
        if body.get("legs"):
            raise ValueError("legs given without order_class mleg")
        return SimOrder(oid, cid, sym, qty, body["side"], typ, body["time_in_force"], cls, now, lim)

    def close_position(self, symbol: str, query: dict) -> tuple[int, dict]:
        """DELETE /v2/positions/{symbol}: a market order for the whole (or ``qty`` / ``percentage``) position."""
        p = self.positions.get(symbol)
        if p is None:
            return 404, {"code": 40410000, "message": "position does not exist"}
        qty = abs(p["qty"])
        if "qty" in query:
            qty = min(qty, float(query["qty"]))
        elif "percentage" in query:
            qty = qty * float(query["percentage"]) / 100.0
        o = SimOrder(str(uuid.uuid4()), str(uuid.uuid4()), symbol, qty, "sell" if p["qty"] > 0 else "buy",
                     "market", "day", "simple", self.now_ms(), source="close_position")
        self.orders.append(o)
        self._try_fill(o, self.now_ms())
        return 200, self.order_json(o)

    # ---------------------------------------------------------------- JSON shapes
    def order_json(self, o: SimOrder) -> dict:
        """The Alpaca v2 order object (alpaca.trading.models.Order validates it)."""
        ts = _iso(o.submitted_ms)
        opt = bool(o.symbol and OCC_RE.match(o.symbol))
        return {
            "id": o.id, "client_order_id": o.client_order_id,
            "created_at": ts, "updated_at": _iso(o.updated_ms or o.submitted_ms), "submitted_at": ts,
            "filled_at": _iso(o.filled_ms) if o.filled_ms is not None and o.status == "filled" else None,
            "expired_at": None, "canceled_at": _iso(o.updated_ms) if o.status == "canceled" else None,
            "failed_at": _iso(o.updated_ms) if o.status == "rejected" else None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": str(uuid.uuid5(_NS, o.symbol)) if o.symbol else None,
            "symbol": o.symbol or "", "asset_class": ("us_option" if opt or o.order_class == "mleg" else "us_equity"),
            "notional": None, "qty": _num(o.qty), "filled_qty": _num(o.filled_qty),
            "filled_avg_price": None if o.filled_avg_price is None else _num(o.filled_avg_price),
            "order_class": o.order_class, "order_type": o.type, "type": o.type, "side": o.side,
            "time_in_force": o.tif, "limit_price": None if o.limit_price is None else _num(o.limit_price),
            "stop_price": None, "status": o.status, "extended_hours": False,
            "legs": [self.order_json(lg) for lg in o.legs] or None,
            "trail_percent": None, "trail_price": None, "hwm": None,
            "position_intent": o.position_intent, "ratio_qty": None if o.ratio_qty is None else _num(o.ratio_qty),
        }

    def position_json(self, symbol: str) -> dict:
        p = self.positions[symbol]
        px = self._price(symbol, self.now_ms()) or p["avg"]
        m = self._mult(symbol)
        q = p["qty"]
        return {
            "asset_id": str(uuid.uuid5(_NS, symbol)), "symbol": symbol, "exchange": "" if m > 1 else "ARCA",
            "asset_class": "us_option" if m > 1 else "us_equity", "asset_marginable": m == 1,
            "avg_entry_price": _num(p["avg"]), "qty": _num(q), "side": "long" if q > 0 else "short",
            "market_value": _num(q * px * m), "cost_basis": _num(q * p["avg"] * m),
            "unrealized_pl": _num(q * (px - p["avg"]) * m), "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": _num(px),
            "lastday_price": _num(px), "change_today": "0", "qty_available": _num(q),
        }

    def account_json(self) -> dict:
        now = self.now_ms()
        mv = {s: p["qty"] * (self._price(s, now) or p["avg"]) * self._mult(s) for s, p in self.positions.items()}
        long_mv = sum(v for v in mv.values() if v > 0)
        short_mv = sum(v for v in mv.values() if v < 0)
        equity = self.cash + long_mv + short_mv
        return {
            "id": self.account_id, "account_number": "PA3SIMULATOR", "status": self.status,
            "crypto_status": "ACTIVE", "currency": "USD", "buying_power": _num(round(equity * self.multiplier, 2)),
            "regt_buying_power": _num(round(equity * min(self.multiplier, 2), 2)),
            "daytrading_buying_power": "0", "non_marginable_buying_power": _num(round(self.cash, 2)),
            "cash": _num(round(self.cash, 2)), "accrued_fees": "0", "pending_transfer_out": None,
            "pending_transfer_in": "0", "portfolio_value": _num(round(equity, 2)),
            "pattern_day_trader": self.pattern_day_trader, "trading_blocked": self.trading_blocked,
            "transfers_blocked": False,
            "account_blocked": False, "created_at": _iso(self._t0_ms), "trade_suspended_by_user": False,
            "multiplier": _num(self.multiplier), "shorting_enabled": self.shorting_enabled,
            "equity": _num(round(equity, 2)), "last_equity": _num(round(equity, 2)),
            "long_market_value": _num(round(long_mv, 2)), "short_market_value": _num(round(short_mv, 2)),
            "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
            "daytrade_count": 0, "options_buying_power": _num(round(self.cash, 2)), "options_approved_level": 3,
            "options_trading_level": 3,
        }

    # ---------------------------------------------------------------- options market data
    def _expirations(self, underlying: str, now: int) -> list[str]:
        """Monthly expirations (third Friday; the market day before it when the data has no bar that Friday) of
        the next ``option_months`` months that have not expired at ``now``, ``YYYY-MM-DD``."""
        from datetime import date, timedelta

        b = self.bars[underlying]
        days = {datetime.fromtimestamp(t / 1000, tz=timezone.utc).date() for t in b.t}
        last = datetime.fromtimestamp(b.t[-1] / 1000, tz=timezone.utc).date()
        d0 = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date()
        out = []
        for k in range(self.option_months + 1):
            y, m = d0.year + (d0.month - 1 + k) // 12, (d0.month - 1 + k) % 12 + 1
            first = date(y, m, 1)
            fri = first + timedelta(days=(4 - first.weekday()) % 7 + 14)
            while fri <= last and fri not in days and fri.day > 1:
                fri -= timedelta(days=1)
            iso = fri.isoformat()
            if expiry_ms(occ_symbol(underlying, iso, "C", 1.0)) > now:
                out.append(iso)
        return out[: self.option_months]

    def option_contracts(self, now: int) -> list[dict]:
        """Every listed contract at ``now`` (Alpaca ``OptionContract`` objects), by underlying, expiry, type,
        strike. Strikes: multiples of ``strike_step`` within 30 % of the underlying's price at ``now``."""
        out = []
        for und in sorted(self.bars):
            spot = self._spot(und, now)
            if spot is None:
                continue
            st = self.strike_step
            ks = [round(st * j, 4) for j in range(math.ceil(spot * 0.7 / st), math.floor(spot * 1.3 / st) + 1)]
            for exp in self._expirations(und, now):
                d = datetime.strptime(exp, "%Y-%m-%d")
                for kind in ("call", "put"):
                    for k in ks:
                        sym = occ_symbol(und, exp, kind[0], k)
                        out.append({
                            "id": str(uuid.uuid5(_NS, sym)), "symbol": sym,
                            "name": f"{und} {d:%b} {d.day} {d.year} {_num(k)} {kind.title()}",
                            "status": "active", "tradable": True, "expiration_date": exp, "root_symbol": und,
                            "underlying_symbol": und, "underlying_asset_id": str(uuid.uuid5(_NS, und)),
                            "type": kind, "style": "american", "strike_price": _num(k), "multiplier": "100",
                            "size": "100", "open_interest": None, "open_interest_date": None,
                            "close_price": None, "close_price_date": None})
        return out

    def option_contracts_json(self, q: dict) -> tuple[int, dict]:
        """``GET /v2/options/contracts``: ``{"option_contracts": [...], "next_page_token": ...}`` filtered by
        underlying_symbols, status, expiration_date(_gte/_lte) (no expiration filter: up to the next weekend, as
        Alpaca does), root_symbol, type, style, strike_price_gte/_lte; ``limit`` (default 100, max 10000)."""
        from datetime import date, timedelta

        now = self.now_ms()
        rows = self.option_contracts(now)
        unds = {x for x in (q.get("underlying_symbols") or "").split(",") if x}
        if unds:
            rows = [r for r in rows if r["underlying_symbol"] in unds]
        if q.get("status") and q["status"] != "active":
            rows = []
        exp, lo, hi = q.get("expiration_date"), q.get("expiration_date_gte"), q.get("expiration_date_lte")
        if not (exp or lo or hi):
            today = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date()
            hi = (today + timedelta(days=(6 - today.weekday()) % 7 or 7)).isoformat()
        for key, test in (("expiration_date", lambda r, v: r["expiration_date"] == v),
                          ("root_symbol", lambda r, v: r["root_symbol"] == v),
                          ("type", lambda r, v: r["type"] == v), ("style", lambda r, v: r["style"] == v)):
            if q.get(key):
                rows = [r for r in rows if test(r, q[key])]
        if lo:
            rows = [r for r in rows if r["expiration_date"] >= date.fromisoformat(lo).isoformat()]
        if hi:
            rows = [r for r in rows if r["expiration_date"] <= date.fromisoformat(hi).isoformat()]
        if q.get("strike_price_gte"):
            rows = [r for r in rows if float(r["strike_price"]) >= float(q["strike_price_gte"])]
        if q.get("strike_price_lte"):
            rows = [r for r in rows if float(r["strike_price"]) <= float(q["strike_price_lte"])]
        limit = min(int(q.get("limit") or 100), 10_000)
        skip = int(q.get("page_token") or 0)
        page = rows[skip: skip + limit]
        more = skip + limit < len(rows)
        return 200, {"option_contracts": page, "next_page_token": str(skip + limit) if more else None}

    def option_contract_json(self, symbol_or_id: str) -> tuple[int, dict]:
        """``GET /v2/options/contracts/{symbol_or_id}``: one listed contract, or 404."""
        for r in self.option_contracts(self.now_ms()):
            if symbol_or_id in (r["symbol"], r["id"]):
                return 200, r
        return 404, {"code": 40410000, "message": "option contract not found"}

    def option_quotes_json(self, symbols: list[str]) -> tuple[int, dict]:
        """``GET /v1beta1/options/quotes/latest``: ``{"quotes": {SYM: {ap, as, ax, bp, bs, bx, c, t}}}`` at now;
        unknown symbols are left out (as Alpaca does)."""
        now = self.now_ms()
        out = {}
        for sym in symbols:
            spot = self._spot(sym, now) if OCC_RE.match(sym) else None
            if spot is None or expiry_ms(sym) <= now:
                continue
            bid, ask = option_quote(sym, spot, now)
            out[sym] = {"ap": ask, "as": 10, "ax": "C", "bp": bid, "bs": 10, "bx": "C", "c": "A",
                        "t": _iso(now)}
        return 200, {"quotes": out}

    def clock_json(self) -> dict:
        now = self.now_ms()
        b = next(iter(self.bars.values()))
        i = b.last_open_at_or_before(now)
        is_open = i is not None and b.t[i] <= now < b.t[i] + b.tf_ms
        j = b.first_open_at_or_after(now + 1)
        nxt = b.t[j] if j is not None else now + 86_400_000
        close = (b.t[i] + b.tf_ms) if is_open else nxt + b.tf_ms
        return {"timestamp": _iso(now), "is_open": is_open, "next_open": _iso(nxt), "next_close": _iso(close)}

    def calendar_json(self, q: dict) -> list[dict]:
        """``GET /v2/calendar``: the market days (dates with a bar of the first symbol) in [start, end],
        09:30-16:00 exchange time as Alpaca publishes it."""
        b = next(iter(self.bars.values()))
        lo, hi = q.get("start") or "1970-01-01", q.get("end") or "2099-12-31"
        days = sorted({datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%d") for t in b.t})
        return [{"date": d, "open": "09:30", "close": "16:00", "session_open": "0400", "session_close": "2000",
                 "settlement_date": d} for d in days if lo <= d <= hi]

    def bars_json(self, symbols: list[str], q: dict) -> tuple[int, dict]:
        """``{"bars": {SYM: [{t,o,h,l,c,v,n,vw}]}, "next_page_token": ...}`` of CLOSED bars in [start, end]."""
        now = self.now_ms()
        start = _parse_time(q["start"]) if q.get("start") else 0
        end = _parse_time(q["end"]) if q.get("end") else now
        limit = int(q.get("limit") or 1000)
        skip = int(q.get("page_token") or 0)
        out, n, emitted, more = {}, 0, 0, False
        for sym in symbols:
            b = self.bars.get(sym)
            if b is None:
                continue
            tf = b.tf_ms
            want_tf = q.get("timeframe", "1Day")
            if _tf_ms(want_tf) != tf:
                return 422, {"code": 42210000, "message": f"timeframe {want_tf} not served (have {tf} ms bars)"}
            for t, (o, h, lo, c, v) in zip(b.t, b.rows):
                if t < start or t > end or t + tf > now:
                    continue
                n += 1
                if n <= skip:
                    continue
                if emitted >= limit:
                    more = True
                    break
                out.setdefault(sym, []).append({"t": _iso(t).replace(".000000", ""), "o": o, "h": h, "l": lo,
                                                "c": c, "v": v, "n": 0, "vw": round((h + lo + c) / 3, 4)})
                emitted += 1
        return 200, {"bars": out, "next_page_token": str(skip + emitted) if more else None}


def _tf_ms(tf: str) -> int:
    m = re.match(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W)$", tf)
    if not m:
        return -1
    unit = {"Min": 60, "T": 60, "Hour": 3600, "H": 3600, "Day": 86400, "D": 86400, "Week": 604800, "W": 604800}
    return int(m.group(1)) * unit[m.group(2)] * 1000


class _Handler(BaseHTTPRequestHandler):
    sim: AlpacaSim
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read sim.calls instead
        pass

    def _send(self, status: int, body) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        """Close the connection without an answer: the client sees a reset / remote disconnect."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _route(self, method: str) -> None:
        sim = self.sim
        u = urlparse(self.path)
        path = unquote(u.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        with sim.lock:
            sim.calls.append((method, path))
            if (self.headers.get("APCA-API-KEY-ID") != sim._key
                    or self.headers.get("APCA-API-SECRET-KEY") != sim._secret):
                return self._send(401, {"code": 40110000, "message": "request is not authorized"})
            if sim.faults.rate_limit_next > 0:
                sim.faults.rate_limit_next -= 1
                return self._send(429, {"code": 42910000, "message": "rate limit exceeded"})
            sim.tick()
            try:
                status, body, fault = self._dispatch(method, path, q, raw)
            except (KeyError, ValueError) as e:
                status, body, fault = 422, {"code": 40010000, "message": f"bad request: {e}"}, ""
        if fault == "drop":
            return self._drop()
        if fault == "500":
            return self._send(500, {"code": 50010000, "message": "internal server error"})
        if fault.startswith("delay:"):
            time.sleep(float(fault[6:]))            # outside the lock: the client times out meanwhile
        self._send(status, body)

    def _dispatch(self, method: str, path: str, q: dict, raw: bytes):
        sim = self.sim
        if method == "GET" and path == "/v2/account":
            return 200, sim.account_json(), ""
        if method == "GET" and path == "/v2/clock":
            return 200, sim.clock_json(), ""
        if method == "GET" and path == "/v2/calendar":
            return 200, sim.calendar_json(q), ""
        if path == "/v2/orders" and method == "POST":
            return sim.new_order(json.loads(raw or b"{}"))
        if path == "/v2/orders" and method == "GET":
            return 200, [sim.order_json(o) for o in _select_orders(sim, q)], ""
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            o = next((o for o in sim.orders if o.client_order_id == q.get("client_order_id")), None)
            return (404, {"code": 40410000, "message": "order not found"}, "") if o is None \
                else (200, sim.order_json(o), "")
        m = re.match(r"^/v2/orders/([0-9a-f-]{36})$", path)
        if m:
            o = next((o for o in sim.orders if o.id == m.group(1)), None)
            if o is None:
                return 404, {"code": 40410000, "message": "order not found"}, ""
            if method == "GET":
                return 200, sim.order_json(o), ""
            if method == "DELETE":
                if o.status in ("filled", "canceled", "rejected", "expired"):
                    return 422, {"code": 42210000, "message": f"order is already in \"{o.status}\" state"}, ""
                o.status, o.updated_ms = "canceled", sim.now_ms()
                return 204, None, ""
        if method == "GET" and path == "/v2/positions":
            return 200, [sim.position_json(s) for s in sorted(sim.positions)], ""
        m = re.match(r"^/v2/positions/([^/]+)$", path)
        if m and method == "DELETE":
            status, body = sim.close_position(m.group(1), q)
            return status, body, ""
        if m and method == "GET":
            if m.group(1) not in sim.positions:
                return 404, {"code": 40410000, "message": "position does not exist"}, ""
            return 200, sim.position_json(m.group(1)), ""
        if method == "GET" and path == "/v2/options/contracts":
            status, body = sim.option_contracts_json(q)
            return status, body, ""
        m = re.match(r"^/v2/options/contracts/([^/]+)$", path)
        if m and method == "GET":
            status, body = sim.option_contract_json(m.group(1))
            return status, body, ""
        if method == "GET" and path == "/v1beta1/options/quotes/latest":
            status, body = sim.option_quotes_json([s for s in q.get("symbols", "").split(",") if s])
            return status, body, ""
        if method == "GET" and path == "/v2/stocks/bars":
            status, body = sim.bars_json([s for s in q.get("symbols", "").split(",") if s], q)
            return status, body, ""
        m = re.match(r"^/v2/stocks/([A-Z.]+)/bars$", path)
        if m and method == "GET":
            status, body = sim.bars_json([m.group(1)], q)
            return status, body, ""
        return 404, {"code": 40410000, "message": f"endpoint not found: {method} {path}"}, ""

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PATCH(self):
        self._route("PATCH")


def _select_orders(sim: AlpacaSim, q: dict) -> list[SimOrder]:
    status = q.get("status", "open")
    final = {"filled", "canceled", "rejected", "expired"}
    out = [o for o in sim.orders
           if status == "all" or (status == "open") == (o.status not in final)]
    if q.get("after"):
        a = _parse_time(q["after"])
        out = [o for o in out if o.submitted_ms > a]
    if q.get("until"):
        u = _parse_time(q["until"])
        out = [o for o in out if o.submitted_ms < u]
    if q.get("symbols"):
        syms = set(q["symbols"].split(","))
        out = [o for o in out if o.symbol in syms or any(lg.symbol in syms for lg in o.legs)]
    out.sort(key=lambda o: o.submitted_ms, reverse=q.get("direction", "desc") == "desc")
    return out[: int(q.get("limit") or 50)]


# -------------------------------------------------------------------- CLI
def register_alpaca_sim(venue_sim_subparsers) -> None:
    """Add ``alpaca`` under ``ats venue-sim``: ``ats venue-sim alpaca --port P --candles FILE [...] --speed X``.

    Parameters
    ----------
    venue_sim_subparsers : argparse._SubParsersAction
        The ``venue-sim`` command's subparsers.
    """
    p = venue_sim_subparsers.add_parser("alpaca", help="local Alpaca trading + market-data simulator on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port, printed)")
    p.add_argument("--candles", action="append", required=True, metavar="FILE",
                   help="timestamp,open,high,low,close,volume CSV (repeat for several symbols; SPY_1d.csv -> SPY)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated ms per real ms (86400 = one day per second)")
    p.add_argument("--start", default=None, help="simulated start time (ISO UTC); default the 250th bar's open")
    p.add_argument("--cash", type=float, default=100_000.0, help="starting cash, USD")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    import os

    from ...errors import UsageError

    # the keys the simulator accepts: the same variables the live loop's AlpacaBroker reads
    key = os.environ.get("ALPACA_API_KEY") or "simkey"
    secret = os.environ.get("ALPACA_SECRET_KEY") or "simsecret"
    try:
        bars = [load_bars(f) for f in args.candles]
    except (OSError, ValueError) as e:
        raise UsageError(f"venue-sim alpaca: --candles: {e}") from None
    sim = AlpacaSim(bars, key, secret, start_ms=_parse_time(args.start) if args.start else None,
                    speed=args.speed, cash_usd=args.cash, port=args.port).start()
    print(f"alpaca simulator on {sim.url} (symbols {', '.join(sim.bars)}; speed x{args.speed:g}; "
          f"clock {_iso(sim.now_ms())}); export ATS_ALPACA_BASE_URL={sim.url} ATS_ALPACA_DATA_URL={sim.url}",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
    return 0
