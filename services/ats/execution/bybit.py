"""Bybit v5 broker for the live loop: the engine's :class:`~ats.execution.broker.Broker` and the live
:class:`~ats.execution.venue.VenueAdapter`, through ``pybit.unified_trading.HTTP`` only (no hand-written HTTP).

* Long strategies trade spot (market orders, ``marketUnit="baseCoin"``); short strategies trade the linear USDT
  perpetual at 1x (leverage set once per symbol; retCode 110043 "leverage not modified" is not an error).
* ``orderLinkId`` is the engine's client order id. Bybit allows 36 characters of ``[A-Za-z0-9_-]``: a longer id is
  made compact by :func:`compact_client_id` **before** the order is recorded, so the database's
  ``client_order_id`` is exactly the ``orderLinkId`` sent.
* Ambiguous outcomes (``ReadTimeout``, ``ConnectionError``, HTTP 5xx) are resolved by looking the order up by its
  ``orderLinkId`` before any resubmission; a duplicate answer (110072, 170141 spot) means "already placed".
  pybit's own retries are off: ``force_retry=False`` and ``retry_codes`` set to a code Bybit never sends (an empty
  set would be replaced by pybit's defaults, which resend on 10006); rate limits (10006) are backed off here until
  ``X-Bapi-Limit-Reset-Timestamp`` (a 10006 answer means the order was not accepted, so resending is safe).
* Fills and fees from ``get_executions`` (partial fills included). Spot buy fees are charged in the base coin: the
  fill is booked as the quantity that can be sold again (``execQty - fee``, rounded down to the lot step) and the
  rest of ``execQty`` is booked as fee in USD, so cash and the sellable quantity both match the venue.
* Quantities are rounded DOWN to the lot step with ``Decimal`` and sent as plain decimal strings; below the
  instrument's minimum the order is refused before reaching the venue with reason ``risk:min_qty``.

Times: engine Unix s; venue UTC ms. Prices USDT (= USD); quantities base coin.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from decimal import ROUND_DOWN, Decimal

from ..errors import AtsError
from .broker import BrokerReport, Fill, Order
from .venue import PreflightFacts, VenueBalance, VenueCandle, VenueFill, VenueOrder, VenuePosition

MAINNET = "https://api.bybit.com"
TESTNET = "https://api-testnet.bybit.com"
MAX_LINK_LEN = 36
DUPLICATE_CODES = (110072, 170141)
RATE_LIMIT = 10006
LEVERAGE_NOT_MODIFIED = 110043
_NEVER_CODE = 999_999_999  # pybit retries on retry_codes; this one never comes, so it never retries
INTERVAL = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "D"}
TF_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
_STATUS = {"New": "new", "PartiallyFilled": "partially_filled", "Filled": "filled", "Cancelled": "cancelled",
           "PartiallyFilledCanceled": "partially_filled", "Rejected": "rejected", "Deactivated": "cancelled",
           "Untriggered": "new", "Triggered": "new"}
FINAL = ("Filled", "PartiallyFilledCanceled", "Cancelled", "Rejected", "Deactivated")
log = logging.getLogger("ats.execution.bybit")


def compact_client_id(cid: str, max_len: int = MAX_LINK_LEN) -> str:
    """The engine's client order id made fit for a venue: characters outside ``[A-Za-z0-9_-]`` dropped and, when
    longer than ``max_len``, the first ``max_len - 9`` characters + ``-`` + the first 8 hex of SHA-256(full id).

    Deterministic (same engine id -> same venue id), so a resubmission after a restart carries the same
    ``orderLinkId``. This is the rule to be provided by the engine as ``client_order_id(..., max_len=...)``.

    Parameters
    ----------
    cid : str
        The engine's client order id.
    max_len : int
        The venue's limit (Bybit ``orderLinkId``: 36).

    Returns
    -------
    str
        At most ``max_len`` characters of ``[A-Za-z0-9_-]``.
    """
    clean = re.sub(r"[^A-Za-z0-9_-]", "", cid)
    if len(clean) <= max_len:
        return clean
    return clean[: max_len - 9].rstrip("-_") + "-" + hashlib.sha256(cid.encode()).hexdigest()[:8]


def _fmt(q: Decimal) -> str:
    """Plain decimal string (no exponent): what Bybit accepts for ``qty``."""
    s = format(q.normalize(), "f")
    return s


def _floor(q: Decimal, step: Decimal) -> Decimal:
    return (q / step).to_integral_value(rounding=ROUND_DOWN) * step


class BybitBroker:
    """Bybit v5 broker (see module docstring).

    Parameters
    ----------
    api_key, api_secret : str
        Credentials (never logged, never put in an exception or event).
    base_url : str
        REST endpoint (``ATS_BYBIT_BASE_URL``; :data:`MAINNET`, :data:`TESTNET` or a local simulator).
    run_id : str
        The engine run (for log lines).
    timeout : float
        Seconds before pybit raises ``ReadTimeout`` (an ambiguous outcome).
    max_attempts : int
        Placement attempts for one order across ambiguous outcomes and rate limits.
    """

    name = "bybit"
    venue = "bybit"
    max_client_id_len = MAX_LINK_LEN

    def __init__(self, api_key: str, api_secret: str, *, base_url: str = MAINNET, run_id: str = "",
                 timeout: float = 5.0, max_attempts: int = 6, backoff_s: float = 0.2):
        from pybit.unified_trading import HTTP

        self.base_url, self.run_id = base_url.rstrip("/"), run_id
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.http = HTTP(api_key=api_key, api_secret=api_secret, timeout=timeout, force_retry=False,
                         max_retries=1, retry_codes={_NEVER_CODE}, log_requests=False,
                         logging_level=logging.WARNING)
        self.http.endpoint = self.base_url
        self._pending: dict[str, list[Order]] = {}
        self._instr: dict[tuple[str, str], dict] = {}
        self._leverage_set: set[str] = set()
        self.sent_at: dict[str, float] = {}  # client id -> time.perf_counter() when the order was sent
        self.calls = 0

    # ------------------------------------------------------------------ low level
    def _call(self, what: str, fn, **kw) -> dict:
        """One pybit call with rate-limit backoff; AtsError (venue, call, code, message) on a venue error."""
        from pybit.exceptions import InvalidRequestError

        for attempt in range(self.max_attempts):
            self.calls += 1
            try:
                return fn(**kw)["result"]
            except InvalidRequestError as e:
                if e.status_code == RATE_LIMIT and attempt + 1 < self.max_attempts:
                    self._sleep_rate_limit(e)
                    continue
                raise
        raise AtsError(f"bybit {what}: still rate limited after {self.max_attempts} attempts")

    def _sleep_rate_limit(self, e) -> None:
        hdr = (getattr(e, "resp_headers", None) or {}).get("X-Bapi-Limit-Reset-Timestamp")
        wait = self.backoff_s
        if hdr:
            wait = max(0.0, min(5.0, int(hdr) / 1000.0 - time.time()))
        log.warning("bybit: rate limited (10006), backing off %.2f s", wait)
        time.sleep(wait + 0.01)

    def _read(self, what: str, fn, **kw) -> dict:
        from pybit.exceptions import FailedRequestError, InvalidRequestError
        from requests.exceptions import ConnectionError as ConnErr
        from requests.exceptions import Timeout

        last = None
        for _ in range(3):
            try:
                return self._call(what, fn, **kw)
            except InvalidRequestError as e:
                raise AtsError(f"bybit {what}: retCode {e.status_code} {e.message}") from None
            except (Timeout, ConnErr, FailedRequestError) as e:
                last = type(e).__name__
                time.sleep(self.backoff_s)
        raise AtsError(f"bybit {what}: no answer from {self.base_url} ({last})")

    # ------------------------------------------------------------------ instruments
    def instrument(self, symbol: str, category: str) -> dict:
        """Lot step, minimum quantity and tick size of ``symbol`` (Decimals), cached."""
        key = (symbol, category)
        if key not in self._instr:
            r = self._read("get_instruments_info", self.http.get_instruments_info, category=category, symbol=symbol)
            if not r.get("list"):
                raise AtsError(f"bybit get_instruments_info: {symbol} not listed in category {category}")
            it = r["list"][0]
            lot = it["lotSizeFilter"]
            step = lot.get("basePrecision") if category == "spot" else lot.get("qtyStep")
            self._instr[key] = {"step": Decimal(step), "min_qty": Decimal(lot["minOrderQty"]),
                                "tick": Decimal(it["priceFilter"]["tickSize"])}
        return self._instr[key]

    def _ensure_leverage(self, symbol: str) -> None:
        from pybit.exceptions import InvalidRequestError

        if symbol in self._leverage_set:
            return
        try:
            self._call("set_leverage", self.http.set_leverage, category="linear", symbol=symbol,
                       buyLeverage="1", sellLeverage="1")
        except InvalidRequestError as e:
            if e.status_code != LEVERAGE_NOT_MODIFIED:
                raise AtsError(f"bybit set_leverage {symbol} 1x: retCode {e.status_code} {e.message}") from None
        self._leverage_set.add(symbol)

    @staticmethod
    def category_of(order: Order) -> str:
        """``spot`` for long positions, ``linear`` (USDT perpetual) for short positions."""
        return "spot" if order.position_side == "long" else "linear"

    # ------------------------------------------------------------------ Broker protocol
    def submit(self, order: Order) -> None:
        """Send ``order`` to Bybit now (the decision bar has closed); its fills are reported by ``on_bar``.

        The client order id is made venue-compatible first (:func:`compact_client_id`). An order whose parent
        (reversal) has not filled yet is held and sent once the parent filled. Never raises on a venue answer:
        a refusal becomes a rejected order reported at the next bar.
        """
        order.client_order_id = compact_client_id(order.client_order_id)
        self._pending.setdefault(order.symbol, []).append(order)
        ctx = order.context
        ctx.setdefault("venue", {"category": self.category_of(order), "state": "new", "exec_ids": []})
        if order.parent_client_order_id is None:
            self._place(order)

    def _place(self, order: Order) -> None:
        v = order.context["venue"]
        cat = v["category"]
        try:
            ins = self.instrument(order.symbol, cat)
        except AtsError as e:
            v.update(state="refused", reason=f"venue:{e}")
            return
        qty = _floor(Decimal(repr(order.qty)), ins["step"])
        if qty < ins["min_qty"] or qty <= 0:
            v.update(state="refused", reason=f"risk:min_qty: {order.qty:.10g} rounds to {_fmt(qty)} < minimum "
                                              f"{_fmt(ins['min_qty'])} {order.symbol} ({cat})")
            return
        v["qty"] = _fmt(qty)
        kw = {"category": cat, "symbol": order.symbol, "side": "Buy" if order.side == "buy" else "Sell",
              "orderType": "Market", "qty": _fmt(qty), "orderLinkId": order.client_order_id}
        if cat == "spot":
            kw["marketUnit"] = "baseCoin"
        else:
            if order.intent == "close":
                kw["reduceOnly"] = True
            else:
                try:
                    self._ensure_leverage(order.symbol)
                except AtsError as e:
                    v.update(state="refused", reason=str(e))
                    return
        self.sent_at.setdefault(order.client_order_id, time.perf_counter())
        v["state"] = self._send(kw)
        if v["state"].startswith("rejected:"):
            v["reason"] = v["state"][9:]
            v["state"] = "rejected"

    def _send(self, kw: dict) -> str:
        """Place one order; 'placed' | 'unknown' | 'rejected:<why>'. Ambiguous outcomes are looked up first."""
        from pybit.exceptions import FailedRequestError, InvalidRequestError
        from requests.exceptions import ConnectionError as ConnErr
        from requests.exceptions import Timeout

        link = kw["orderLinkId"]
        for attempt in range(self.max_attempts):
            try:
                self._call("place_order", self.http.place_order, **kw)
                return "placed"
            except InvalidRequestError as e:
                if e.status_code in DUPLICATE_CODES:
                    log.info("bybit: %s already placed (retCode %s)", link, e.status_code)
                    return "placed"
                return f"rejected:venue:{e.status_code} {e.message}"
            except AtsError as e:  # rate limited on every attempt
                return f"rejected:{e}"
            except (Timeout, ConnErr, FailedRequestError) as e:
                if isinstance(e, FailedRequestError) and not (500 <= int(e.status_code or 0) < 600):
                    return f"rejected:venue:HTTP {e.status_code}"
                log.warning("bybit: ambiguous outcome placing %s (%s): looking it up", link, type(e).__name__)
                time.sleep(self.backoff_s * (attempt + 1))
                try:
                    if self.lookup(kw["category"], link) is not None:
                        return "placed"
                except AtsError:
                    continue  # still unreachable: the next attempt looks it up again before resending
        return "unknown"

    def lookup(self, category: str, link: str) -> dict | None:
        """The venue's order with ``orderLinkId == link`` (open or in history), or None when there is none."""
        for fn in (self.http.get_open_orders, self.http.get_order_history):
            kw = {"category": category, "orderLinkId": link}
            if fn == self.http.get_open_orders:
                kw["openOnly"] = 1
            r = self._read("order lookup", fn, **kw)
            if r.get("list"):
                return r["list"][0]
        return None

    def in_flight(self, run_prefix: str, booked: dict, since_ms: int) -> dict:
        """{(symbol, category): signed base quantity} executed at the venue for this run's orders but not booked
        in the database yet: orders sent at the last bar close (their fills are booked at the next bar) and, after
        a restart, orders sent after the last checkpoint (re-adopted by orderLinkId when the bar is re-decided).

        Parameters
        ----------
        run_prefix : str
            Start of this run's orderLinkIds (``<run_id>-``).
        booked : dict
            {client_order_id: number of fills in the database}; the venue's executions of an order beyond that
            count (oldest first) are in flight.
        since_ms : int
            Run start (UTC ms).

        Spot buys count net of the base-coin fee, rounded down to the lot step (as booked by ``on_bar``).
        """
        out: dict = {}
        for cat in ("spot", "linear"):
            rows, cursor = [], None
            while True:
                kw = {"category": cat, "startTime": since_ms, "limit": 100}
                if cursor:
                    kw["cursor"] = cursor
                r = self._read("get_executions", self.http.get_executions, **kw)
                rows += r.get("list") or []
                cursor = r.get("nextPageCursor")
                if not cursor or not r.get("list"):
                    break
            per: dict = {}
            for e in rows:
                link = e.get("orderLinkId") or ""
                if link.startswith(run_prefix):
                    per.setdefault(link, []).append(e)
            for link, es in per.items():
                es.sort(key=lambda e: (int(e["execTime"]), e["execId"]))
                for e in es[int(booked.get(link, 0)):]:
                    step = self.instrument(e["symbol"], cat)["step"]
                    q = Decimal(e["execQty"])
                    if e.get("feeCurrency") == e["symbol"][:-4]:
                        q = _floor(q - Decimal(e["execFee"] or "0"), step)
                    key = (e["symbol"], cat)
                    out[key] = out.get(key, Decimal(0)) + (q if e["side"] == "Buy" else -q)
        return out

    def has_pending(self, symbol: str) -> bool:
        return bool(self._pending.get(symbol))

    def pending(self) -> list[Order]:
        return [o for lst in self._pending.values() for o in lst]

    def restore(self, orders: list[Order]) -> None:
        """Re-load pending orders after a restart; orders whose placement was not confirmed are re-sent by
        ``on_bar`` after a lookup (same orderLinkId: never a second order)."""
        self._pending = {}
        for o in orders:
            o.context.setdefault("venue", {"category": self.category_of(o), "state": "new", "exec_ids": []})
            self._pending.setdefault(o.symbol, []).append(o)

    def on_bar(self, symbol: str, t_open: int, o: float, h: float, l: float, c: float, v: float,
               settings: dict) -> list[BrokerReport]:
        """Report what the venue did with this symbol's orders sent before ``t_open`` (fills from
        ``get_executions``); orders not final yet stay pending."""
        lst = self._pending.get(symbol) or []
        out, keep, done = [], [], {}
        for order in lst:
            if t_open < order.submitted_at:
                keep.append(order)
                continue
            rep = self._settle(order, t_open, done)
            if rep is None:
                keep.append(order)
            else:
                done[order.client_order_id] = rep.status
                out.append(rep)
        self._pending[symbol] = keep
        return out

    def _settle(self, order: Order, t_open: int, done: dict) -> BrokerReport | None:
        vs = order.context["venue"]
        parent = order.parent_client_order_id
        if vs["state"] == "new" and parent is not None:
            if done.get(parent) != "filled":
                if parent in done or not any(x.client_order_id == parent for x in self.pending()):
                    return self._final(order, t_open, "cancelled", f"parent order {parent} not filled "
                                                                    f"({done.get(parent, 'not executed')})")
                return None
            self._place(order)
        if vs["state"] in ("new", "unknown"):
            vo = self.lookup(vs["category"], order.client_order_id)
            if vo is None:
                self._place(order)  # never reached the venue: send it (same orderLinkId)
            else:
                vs["state"] = "placed"
        if vs["state"] in ("refused", "rejected"):
            return self._final(order, t_open, "rejected", vs.get("reason", "rejected"))
        if vs["state"] != "placed":
            return None
        vo = self.lookup(vs["category"], order.client_order_id)
        if vo is None or vo["orderStatus"] not in FINAL:
            return None
        fills = self._fills(order, vs)
        st = vo["orderStatus"]
        if not order.filled_qty:
            why = vo.get("rejectReason") or st
            return self._final(order, t_open, "rejected" if st == "Rejected" else "cancelled",
                               f"venue: {st} ({why})")
        status = "filled" if st == "Filled" else "partially_filled"
        order.status, order.updated_at = status, t_open
        return BrokerReport(order, fills, status)

    def _fills(self, order: Order, vs: dict) -> list[Fill]:
        r = self._read("get_executions", self.http.get_executions, category=vs["category"],
                       orderLinkId=order.client_order_id, limit=100)
        rows = sorted(r.get("list") or [], key=lambda e: (int(e["execTime"]), e["execId"]))
        out = []
        step = self.instrument(order.symbol, vs["category"])["step"]
        base = order.symbol[:-4] if order.symbol.endswith("USDT") else order.symbol
        for e in rows:
            if e["execId"] in vs["exec_ids"]:
                continue
            q, px, fee = Decimal(e["execQty"]), Decimal(e["execPrice"]), Decimal(e["execFee"] or "0")
            if e.get("feeCurrency") == base:  # spot buy: fee in the base coin
                net = _floor(q - fee, step)
                fee_usd = (q - net) * px
                q = net
            else:
                fee_usd = fee
            if q <= 0:
                continue
            price = float(px)
            sgn = 1 if order.side == "buy" else -1
            slip = (price / order.decision_price - 1.0) * 1e4 * sgn if order.decision_price else 0.0
            order.fill_count += 1
            f = Fill(order, order.fill_count, float(q), price, float(fee_usd),
                     "maker" if e.get("isMaker") else "taker", slip, int(e["execTime"]) // 1000)
            prev = order.filled_qty
            order.filled_qty = prev + f.qty
            order.avg_fill_price = price if not prev else (order.avg_fill_price * prev + price * f.qty) / order.filled_qty
            order.fees_usd += f.fee_usd
            vs["exec_ids"].append(e["execId"])
            out.append(f)
        return out

    @staticmethod
    def _final(order: Order, t: int, status: str, why: str) -> BrokerReport:
        order.status, order.reject_reason, order.updated_at = status, why, t
        return BrokerReport(order, [], status, why)

    # ------------------------------------------------------------------ VenueAdapter
    def server_time_ms(self) -> int:
        r = self._read("get_server_time", self.http.get_server_time)
        return int(r["timeNano"]) // 1_000_000

    def closed_candles(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> list[VenueCandle]:
        """Closed spot candles of ``symbol`` (``get_kline``, pages of 1000), oldest first."""
        if timeframe not in INTERVAL:
            raise AtsError(f"bybit get_kline: timeframe {timeframe!r} not supported ({', '.join(INTERVAL)})")
        tf = TF_MS[timeframe]
        out: dict[int, VenueCandle] = {}
        lo = start_ms
        while lo + tf <= end_ms:
            hi = min(end_ms - tf, lo + 999 * tf)
            r = self._read("get_kline", self.http.get_kline, category="spot", symbol=symbol,
                           interval=INTERVAL[timeframe], start=lo, end=hi, limit=1000)
            rows = r.get("list") or []
            for row in rows:
                t = int(row[0])
                if start_ms <= t and t + tf <= end_ms:
                    out[t] = VenueCandle(symbol, timeframe, t, *(Decimal(x) for x in row[1:6]))
            lo = hi + tf
        return [out[t] for t in sorted(out)]

    def open_orders(self) -> list[VenueOrder]:
        res = []
        for cat in ("spot", "linear"):
            r = self._read("get_open_orders", self.http.get_open_orders, category=cat, limit=50)
            res += [self._vorder(x) for x in r.get("list") or []]
        return res

    @staticmethod
    def _vorder(x: dict) -> VenueOrder:
        return VenueOrder(x["orderId"], x.get("orderLinkId") or "", x["symbol"], x["side"].lower(),
                          Decimal(x["qty"]), Decimal(x.get("cumExecQty") or "0"),
                          _STATUS.get(x["orderStatus"], x["orderStatus"].lower()),
                          Decimal(x["avgPrice"]) if x.get("avgPrice") else None, "simple", int(x["createdTime"]))

    def fills_since(self, since_ms: int) -> list[VenueFill]:
        res = []
        for cat in ("spot", "linear"):
            r = self._read("get_executions", self.http.get_executions, category=cat, startTime=since_ms, limit=100)
            for e in r.get("list") or []:
                px = Decimal(e["execPrice"])
                fee = Decimal(e["execFee"] or "0")
                if e.get("feeCurrency") not in (None, "", "USDT", "USDC", "USD"):
                    fee = fee * px
                res.append(VenueFill(e["execId"], e.get("orderLinkId") or "", e["symbol"], e["side"].lower(),
                                     Decimal(e["execQty"]), px, fee, int(e["execTime"]),
                                     "maker" if e.get("isMaker") else "taker"))
        return sorted(res, key=lambda f: (f.ts_ms, f.exec_id))

    def positions(self, symbols: tuple[str, ...] = ("BTCUSDT",)) -> list[VenuePosition]:
        """Spot holdings of the symbols' base coins (category spot) and linear positions (negative = short)."""
        out = []
        acct = self._wallet()
        coins = {c["coin"]: Decimal(c["walletBalance"] or "0") for c in acct.get("coin", [])}
        for s in symbols:
            base = s[:-4]
            if coins.get(base):
                out.append(VenuePosition(s, coins[base], None, "spot"))
        r = self._read("get_positions", self.http.get_positions, category="linear", settleCoin="USDT")
        for p in r.get("list") or []:
            size = Decimal(p["size"] or "0")
            if size:
                out.append(VenuePosition(p["symbol"], size if p["side"] == "Buy" else -size,
                                         Decimal(p["avgPrice"]) if p.get("avgPrice") else None, "linear"))
        return out

    def _wallet(self) -> dict:
        r = self._read("get_wallet_balance", self.http.get_wallet_balance, accountType="UNIFIED")
        if not r.get("list"):
            raise AtsError("bybit get_wallet_balance: no UNIFIED account")
        return r["list"][0]

    def balance(self) -> VenueBalance:
        a = self._wallet()
        usdt = next((Decimal(c["walletBalance"]) for c in a.get("coin", []) if c["coin"] == "USDT"), Decimal(0))
        return VenueBalance(usdt, Decimal(a["totalEquity"]), Decimal(a.get("totalAvailableBalance") or "0"))

    def endpoint_kind(self) -> str:
        """production | testnet | local (loopback)."""
        from urllib.parse import urlsplit

        host = urlsplit(self.base_url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            return "local"
        return "testnet" if "testnet" in host or "demo" in host else "production"

    def preflight(self) -> PreflightFacts:
        """Read-only facts: key info (``get_api_key_information``), wallet, linear position mode."""
        k = self._read("get_api_key_information", self.http.get_api_key_information)
        a = self._wallet()
        r = self._read("get_positions", self.http.get_positions, category="linear", settleCoin="USDT")
        idx = {int(p.get("positionIdx", 0)) for p in r.get("list") or []}
        perms = k.get("permissions") or {}
        trade = bool(perms.get("Spot") or perms.get("ContractTrade"))
        mode = "hedge" if idx & {1, 2} else "one_way"
        return PreflightFacts(
            venue="bybit", endpoint=self.base_url, endpoint_kind=self.endpoint_kind(), account_status="active",
            equity_usd=Decimal(a["totalEquity"]), buying_power_usd=Decimal(a.get("totalAvailableBalance") or "0"),
            margin_multiplier=Decimal(1), shorting_enabled=bool(perms.get("ContractTrade")),
            key_permissions="read_only" if int(k.get("readOnly", 0)) or not trade else "trade", position_mode=mode,
            checks={"ip_bound": k.get("ips") not in (None, [], ["*"]), "expires_at": k.get("expiredAt"),
                    "days_to_expiry": k.get("deadlineDay"), "spot_permissions": perms.get("Spot") or [],
                    "contract_permissions": perms.get("ContractTrade") or []})
