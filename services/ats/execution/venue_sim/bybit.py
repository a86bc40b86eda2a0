"""A local Bybit v5 REST simulator on 127.0.0.1 for the live loop's tests and offline rehearsals.

It speaks the response envelope of Bybit v5 (``{"retCode":0,"retMsg":"OK","result":{...},"retExtInfo":{},
"time":<ms>}``) for exactly the endpoints :class:`ats.execution.bybit.BybitBroker` calls through pybit, and checks
the HMAC-SHA256 signature pybit sends (``X-BAPI-SIGN`` = HMAC(secret, timestamp + api_key + recv_window +
payload), payload = the query string of a GET or the JSON body of a POST).

Clock: simulated UTC ms = ``start_ms + speed x (real ms elapsed while not paused)``; ``/v5/market/kline`` serves
only candles closed by the simulated now, from one real OHLCV file (``[[open_ms, o, h, l, c, v], ...]``).

Market orders fill immediately at the OPEN of the candle containing the simulated now (the next price after a
bar close), spot taker fee 0.1 % (buys: fee in the base coin, as Bybit does), linear taker fee 0.055 % in USDT.
Fault injection (``POST /sim/control``): drop the response to the next accepted order (the order IS placed),
partially fill the next order (remainder cancelled), reject the next order, answer the next N calls with retCode
10006 plus ``X-Bapi-Limit-Reset-Timestamp``; pause/resume the clock. ``GET /sim/state`` returns counters
(order endpoints hit), orders, balances and positions for tests.

Public microstructure endpoints (issue 17), served from the series given as ``micro`` (:class:`MicroData`) and
only up to the simulated now, with Bybit v5's shapes and paging: ``/v5/market/open-interest`` (``intervalTime``,
``startTime``/``endTime``, ``limit`` <= 200, ``cursor`` -> ``nextPageCursor``), ``/v5/market/funding/history``
(``startTime`` alone is refused with 10001 as Bybit does; ``limit`` <= 200, newest first, no cursor),
``/v5/market/account-ratio`` (``period``, ``limit`` <= 500, cursor paging) and ``/v5/market/recent-trade`` (the
newest ``limit`` <= 1000 trades, newest first). Every value is a decimal string, every time a ms string.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

INTERVALS = {"1": 60, "5": 300, "15": 900, "60": 3600, "240": 14400, "D": 86400}
SPOT_FEE = Decimal("0.001")
LINEAR_FEE = Decimal("0.00055")
ORDER_PATHS = ("/v5/order/create", "/v5/order/amend", "/v5/order/cancel", "/v5/order/cancel-all",
               "/v5/order/create-batch", "/v5/position/set-leverage", "/v5/position/trading-stop")


class SimError(Exception):
    """A Bybit error answer: retCode and retMsg."""

    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code, self.msg = code, msg


def _d(x) -> str:
    """Decimal to Bybit's plain decimal string (no exponent, no trailing zeros)."""
    s = format(Decimal(x).normalize(), "f")
    return s if s != "-0" else "0"


@dataclass
class MicroData:
    """Microstructure series the simulator serves (each oldest or newest first; sorted on use).

    oi:       {interval: [(ts_ms, "openInterest"), ...]}     e.g. {"1h": [(1621382400000, "51211.104"), ...]}
    funding:  [(ts_ms, "fundingRate"), ...]                  (fraction per funding interval)
    ls_ratio: {period: [(ts_ms, "buyRatio", "sellRatio"), ...]}
    trades:   [(ts_ms, "price", "size", "Buy"|"Sell"), ...]  (side = the taker's side)
    """

    oi: dict = field(default_factory=dict)
    funding: list = field(default_factory=list)
    ls_ratio: dict = field(default_factory=dict)
    trades: list = field(default_factory=list)


def _page(rows: list, q: dict, limit_max: int, default: int) -> tuple[list, str]:
    """Bybit cursor paging over ``rows`` (already newest first): (page, nextPageCursor or "")."""
    try:
        limit = max(1, min(int(q.get("limit", default)), limit_max))
        off = int(q.get("cursor") or 0)
    except ValueError:
        raise SimError(10001, "params error: limit or cursor invalid") from None
    page = rows[off:off + limit]
    return page, (str(off + limit) if off + limit < len(rows) else "")


class BybitSim:
    """The simulated exchange state (thread-safe through one lock).

    Parameters
    ----------
    candles : list of [open_ms, open, high, low, close, volume]
        One symbol's candles, oldest first (the file's timeframe is served).
    symbol : str
        Bybit symbol of the candles (``BTCUSDT``).
    start_ms : int
        Simulated time at start (UTC ms).
    speed : float
        Simulated ms per real ms.
    api_key, api_secret : str
        The credentials pybit must sign with.
    usdt : Decimal
        Starting USDT wallet balance.
    read_only : bool
        What ``/v5/user/query-api`` reports (and order endpoints refuse with 10005 when true).
    micro : MicroData, optional
        Open interest, funding, long/short ratio and public trades served by the microstructure endpoints.
    """

    def __init__(self, candles, *, symbol="BTCUSDT", start_ms=None, speed=1.0, api_key="simkey",
                 api_secret="simsecret", usdt=Decimal("10000"), read_only=False, ips=("*",), start_paused=False,
                 micro: MicroData | None = None):
        self.micro = micro or MicroData()
        self.candles = [[int(c[0])] + [Decimal(str(v)) for v in c[1:6]] for c in candles]
        self.tf_ms = self.candles[1][0] - self.candles[0][0]
        self.symbol, self.base = symbol, symbol[:-4]
        self.api_key, self.api_secret = api_key, api_secret
        self.read_only, self.ips = read_only, list(ips)
        self.lock = threading.RLock()
        self.speed = float(speed)
        self.start_ms = int(start_ms if start_ms is not None else self.candles[min(400, len(self.candles) - 1)][0])
        self._mono0, self._acc_ms, self.paused = time.monotonic(), 0.0, bool(start_paused)
        self.wallet = {"USDT": Decimal(usdt), self.base: Decimal(0)}
        self.linear = {"size": Decimal(0), "avg": Decimal(0), "leverage": "10"}
        self.orders: dict[str, dict] = {}
        self.by_link: dict[str, str] = {}
        self.execs: list[dict] = []
        self.faults = {"drop": 0, "partial": None, "reject": 0, "rate_limit": 0}
        self.counts: dict[str, int] = {}
        self.order_hits = 0
        self._seq = 0

    # ---- clock
    def now_ms(self) -> int:
        with self.lock:
            acc = self._acc_ms + (0.0 if self.paused else (time.monotonic() - self._mono0) * 1000.0 * self.speed)
            return int(self.start_ms + acc)

    def pause(self, on: bool) -> None:
        with self.lock:
            if on and not self.paused:
                self._acc_ms += (time.monotonic() - self._mono0) * 1000.0 * self.speed
                self.paused = True
            elif not on and self.paused:
                self._mono0, self.paused = time.monotonic(), False

    def price_now(self) -> Decimal:
        """Open of the candle containing the simulated now (last close past the end of the file)."""
        t = self.now_ms()
        lo, hi = 0, len(self.candles)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.candles[mid][0] <= t:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1
        if i < 0:
            return self.candles[0][1]
        return self.candles[i][1] if i < len(self.candles) else self.candles[-1][4]

    # ---- auth
    def check_auth(self, headers, payload: str) -> None:
        key, sign, ts, rw = (headers.get(h) for h in ("X-BAPI-API-KEY", "X-BAPI-SIGN", "X-BAPI-TIMESTAMP",
                                                       "X-BAPI-RECV-WINDOW"))
        if not (key and sign and ts and rw):
            raise SimError(10003, "API key is invalid.")
        if key != self.api_key:
            raise SimError(10003, "API key is invalid.")
        want = hmac.new(self.api_secret.encode(), (ts + key + rw + payload).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sign):
            raise SimError(10004, "Error sign, please check your signature generation algorithm.")

    # ---- market
    def kline(self, q: dict) -> dict:
        iv = INTERVALS.get(q.get("interval", ""))
        if iv is None or iv * 1000 != self.tf_ms:
            raise SimError(10001, f"params error: interval {q.get('interval')!r} not served by this simulator")
        if q.get("symbol") != self.symbol:
            raise SimError(10001, "params error: symbol invalid")
        now = self.now_ms()
        start = int(q.get("start", 0))
        end = int(q.get("end", now))
        limit = min(int(q.get("limit", 200)), 1000)
        rows = [c for c in self.candles if c[0] >= start and c[0] <= end and c[0] + self.tf_ms <= now]
        rows = rows[-limit:]
        # Bybit lists newest first, values as strings; turnover = volume x close (approximation)
        lst = [[str(c[0]), _d(c[1]), _d(c[2]), _d(c[3]), _d(c[4]), _d(c[5]), _d(c[5] * c[4])] for c in reversed(rows)]
        return {"symbol": self.symbol, "category": q.get("category", "spot"), "list": lst}

    # ---- market: microstructure (public)
    def _window(self, q: dict, rows: list) -> list:
        """Rows (ts first) inside [startTime, endTime] and not after the simulated now, newest first."""
        try:
            lo = int(q["startTime"]) if q.get("startTime") else None
            hi = int(q["endTime"]) if q.get("endTime") else None
        except ValueError:
            raise SimError(10001, "params error: startTime/endTime invalid") from None
        now = self.now_ms()
        out = [r for r in rows if r[0] <= now and (lo is None or r[0] >= lo) and (hi is None or r[0] <= hi)]
        return sorted(out, key=lambda r: r[0], reverse=True)

    def _linear_symbol(self, q: dict) -> None:
        if q.get("category") not in ("linear", "inverse"):
            raise SimError(10001, "params error: category must be linear or inverse")
        if q.get("symbol") != self.symbol:
            raise SimError(10001, "params error: symbol invalid")

    def open_interest(self, q: dict) -> dict:
        self._linear_symbol(q)
        iv = q.get("intervalTime")
        if iv not in ("5min", "15min", "30min", "1h", "4h", "1d"):
            raise SimError(10001, f"params error: intervalTime {iv!r} invalid")
        page, cur = _page(self._window(q, self.micro.oi.get(iv, [])), q, 200, 50)
        return {"symbol": self.symbol, "category": q["category"],
                "list": [{"openInterest": v, "timestamp": str(t)} for t, v in page], "nextPageCursor": cur}

    def funding_history(self, q: dict) -> dict:
        self._linear_symbol(q)
        if q.get("startTime") and not q.get("endTime"):
            raise SimError(10001, "params error: startTime without endTime")
        rows = self._window(q, self.micro.funding)
        try:
            limit = max(1, min(int(q.get("limit", 200)), 200))
        except ValueError:
            raise SimError(10001, "params error: limit invalid") from None
        return {"category": q["category"], "list": [{"symbol": self.symbol, "fundingRate": v,
                                                     "fundingRateTimestamp": str(t)} for t, v in rows[:limit]]}

    def account_ratio(self, q: dict) -> dict:
        self._linear_symbol(q)
        per = q.get("period")
        if per not in ("5min", "15min", "30min", "1h", "4h", "1d"):
            raise SimError(10001, f"params error: period {per!r} invalid")
        page, cur = _page(self._window(q, self.micro.ls_ratio.get(per, [])), q, 500, 50)
        return {"list": [{"symbol": self.symbol, "buyRatio": b, "sellRatio": s, "timestamp": str(t)}
                         for t, b, s in page], "nextPageCursor": cur}

    def recent_trades(self, q: dict) -> dict:
        if q.get("symbol") != self.symbol:
            raise SimError(10001, "params error: symbol invalid")
        cat = q.get("category", "")
        try:
            limit = max(1, min(int(q.get("limit", 60 if cat == "spot" else 500)), 60 if cat == "spot" else 1000))
        except ValueError:
            raise SimError(10001, "params error: limit invalid") from None
        rows = self._window({}, self.micro.trades)[:limit]
        return {"category": cat, "list": [{"execId": f"sim-trade-{t}-{n}", "symbol": self.symbol, "price": p,
                                           "size": sz, "side": side, "time": str(t), "isBlockTrade": False}
                                          for n, (t, p, sz, side) in enumerate(rows)]}

    def instruments(self, q: dict) -> dict:
        cat = q.get("category", "spot")
        if cat == "spot":
            item = {"symbol": self.symbol, "baseCoin": self.base, "quoteCoin": "USDT", "status": "Trading",
                    "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.00000001",
                                      "minOrderQty": "0.000048", "maxOrderQty": "71.73956243",
                                      "minOrderAmt": "1", "maxOrderAmt": "2000000"},
                    "priceFilter": {"tickSize": "0.01"}}
        else:
            item = {"symbol": self.symbol, "contractType": "LinearPerpetual", "status": "Trading",
                    "baseCoin": self.base, "quoteCoin": "USDT", "settleCoin": "USDT",
                    "lotSizeFilter": {"qtyStep": "0.001", "minOrderQty": "0.001", "maxOrderQty": "100.000",
                                      "postOnlyMaxOrderQty": "1000.000", "minNotionalValue": "5"},
                    "priceFilter": {"tickSize": "0.10", "minPrice": "0.10", "maxPrice": "199999.80"},
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"}}
        return {"category": cat, "list": [item], "nextPageCursor": ""}

    # ---- trading
    def create(self, body: dict) -> dict:
        if self.read_only:
            raise SimError(10005, "Permission denied, please check your API key permissions.")
        link = body.get("orderLinkId") or ""
        if link and (len(link) > 36 or not all(ch.isalnum() or ch in "-_" for ch in link)):
            raise SimError(10001, "params error: orderLinkId invalid")
        if link in self.by_link:
            raise SimError(110072, "OrderLinkedID is duplicate")
        cat, side, qty_s = body.get("category"), body.get("side"), body.get("qty")
        if body.get("symbol") != self.symbol or cat not in ("spot", "linear") or side not in ("Buy", "Sell"):
            raise SimError(10001, "params error")
        if body.get("orderType") != "Market":
            raise SimError(10001, "params error: only Market orders are simulated")
        try:
            qty = Decimal(str(qty_s))
        except Exception as exc:  # noqa: BLE001
            raise SimError(10001, f"params error: qty {qty_s!r}") from exc
        step = Decimal("0.000001") if cat == "spot" else Decimal("0.001")
        if "e" in str(qty_s).lower() or qty <= 0 or qty != qty.quantize(step, rounding=ROUND_DOWN):
            raise SimError(170137 if cat == "spot" else 10001, f"Order quantity has too many decimals: {qty_s}")
        if cat == "spot" and side == "Buy" and body.get("marketUnit") != "baseCoin":
            qty = (qty / self.price_now()).quantize(step, rounding=ROUND_DOWN)  # qty was in USDT
        if self.faults["reject"]:
            self.faults["reject"] -= 1
            raise SimError(170131, "Insufficient balance.")
        price = self.price_now()
        part = self.faults["partial"]
        self.faults["partial"] = None
        fill = qty if part is None else (qty * Decimal(str(part))).quantize(step, rounding=ROUND_DOWN)
        self._check_funds(cat, side, fill, price, body.get("reduceOnly"))
        self._seq += 1
        oid = f"sim-{self._seq:08d}"
        now = self.now_ms()
        order = {"orderId": oid, "orderLinkId": link, "symbol": self.symbol, "category": cat, "side": side,
                 "orderType": "Market", "qty": _d(qty), "price": "0", "timeInForce": "IOC",
                 "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0", "avgPrice": "",
                 "orderStatus": "New", "reduceOnly": bool(body.get("reduceOnly")), "createdTime": str(now),
                 "updatedTime": str(now), "rejectReason": "EC_NoError", "positionIdx": 0}
        self.orders[oid] = order
        if link:
            self.by_link[link] = oid
        if fill > 0:
            self._execute(order, cat, side, fill, price, now)
        order["orderStatus"] = "Filled" if fill == qty else "PartiallyFilledCanceled"
        return {"orderId": oid, "orderLinkId": link}

    def _check_funds(self, cat, side, qty, price, reduce_only) -> None:
        usdt = self.wallet["USDT"]
        if cat == "spot":
            if side == "Buy" and qty * price > usdt:
                raise SimError(170131, "Insufficient balance.")
            if side == "Sell" and qty > self.wallet[self.base]:
                raise SimError(170131, "Insufficient balance.")
            return
        size = self.linear["size"]
        new = size + (qty if side == "Buy" else -qty)
        if reduce_only and (size == 0 or abs(new) > abs(size) or (new != 0 and (new > 0) != (size > 0))):
            raise SimError(110017, "Reduce-only rule not satisfied")
        if abs(new) > abs(size) and abs(new) * price > usdt:  # 1x: margin = notional
            raise SimError(110007, "ab not enough for new order")

    def _execute(self, order, cat, side, qty, price, now) -> None:
        value = qty * price
        if cat == "spot":
            if side == "Buy":
                fee = (qty * SPOT_FEE).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
                self.wallet["USDT"] -= value
                self.wallet[self.base] += qty - fee
                fee_ccy = self.base
            else:
                fee = (value * SPOT_FEE).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
                self.wallet[self.base] -= qty
                self.wallet["USDT"] += value - fee
                fee_ccy = "USDT"
        else:
            fee = (value * LINEAR_FEE).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)
            fee_ccy = "USDT"
            size, avg = self.linear["size"], self.linear["avg"]
            d = qty if side == "Buy" else -qty
            new = size + d
            if size == 0 or (size > 0) == (d > 0):  # open / add
                self.linear["avg"] = (abs(size) * avg + qty * price) / abs(new)
            else:  # reduce: realize P&L on the closed part
                closed = min(abs(d), abs(size))
                pnl = closed * (price - avg) * (1 if size > 0 else -1)
                self.wallet["USDT"] += pnl
                if new == 0:
                    self.linear["avg"] = Decimal(0)
            self.linear["size"] = new
            self.wallet["USDT"] -= fee
        self._seq += 1
        self.execs.append({"symbol": self.symbol, "category": cat, "orderId": order["orderId"],
                           "orderLinkId": order["orderLinkId"], "side": side, "orderType": "Market",
                           "execId": f"exec-{self._seq:08d}", "execPrice": _d(price), "execQty": _d(qty),
                           "execValue": _d(value), "execFee": _d(fee), "feeCurrency": fee_ccy,
                           "feeRate": _d(SPOT_FEE if cat == "spot" else LINEAR_FEE), "execType": "Trade",
                           "isMaker": False, "execTime": str(now), "orderPrice": "0", "orderQty": order["qty"]})
        cq = Decimal(order["cumExecQty"]) + qty
        cv = Decimal(order["cumExecValue"]) + value
        order.update(cumExecQty=_d(cq), cumExecValue=_d(cv), cumExecFee=_d(Decimal(order["cumExecFee"]) + fee),
                     avgPrice=_d(cv / cq), updatedTime=str(now))

    def list_orders(self, q: dict, open_only: bool) -> dict:
        rows = [o for o in self.orders.values() if o["category"] == q.get("category", o["category"])]
        if q.get("orderLinkId"):
            rows = [o for o in rows if o["orderLinkId"] == q["orderLinkId"]]
        if q.get("orderId"):
            rows = [o for o in rows if o["orderId"] == q["orderId"]]
        final = ("Filled", "PartiallyFilledCanceled", "Cancelled", "Rejected")
        if open_only and str(q.get("openOnly", "0")) == "0":
            rows = [o for o in rows if o["orderStatus"] not in final]
        rows = sorted(rows, key=lambda o: o["createdTime"], reverse=True)[: int(q.get("limit", 50))]
        return {"category": q.get("category"), "list": [dict(o) for o in rows], "nextPageCursor": ""}

    def executions(self, q: dict) -> dict:
        rows = [e for e in self.execs if e["category"] == q.get("category", e["category"])]
        for k in ("orderLinkId", "orderId", "symbol"):
            if q.get(k):
                rows = [e for e in rows if e[k] == q[k]]
        if q.get("startTime"):
            rows = [e for e in rows if int(e["execTime"]) >= int(q["startTime"])]
        rows = sorted(rows, key=lambda e: (e["execTime"], e["execId"]), reverse=True)[: int(q.get("limit", 50))]
        return {"category": q.get("category"), "list": [dict(e) for e in rows], "nextPageCursor": ""}

    def positions(self, q: dict) -> dict:
        size, avg = self.linear["size"], self.linear["avg"]
        side = "" if size == 0 else ("Buy" if size > 0 else "Sell")
        mark = self.price_now()
        row = {"symbol": self.symbol, "side": side, "size": _d(abs(size)), "avgPrice": _d(avg),
               "positionValue": _d(abs(size) * avg), "leverage": self.linear["leverage"], "markPrice": _d(mark),
               "unrealisedPnl": _d((mark - avg) * size), "positionIdx": 0, "tradeMode": 0,
               "positionStatus": "Normal", "updatedTime": str(self.now_ms())}
        return {"category": "linear", "list": [row], "nextPageCursor": ""}

    def set_leverage(self, body: dict) -> dict:
        if body.get("buyLeverage") != body.get("sellLeverage"):
            raise SimError(10001, "params error: buy and sell leverage differ in one-way mode")
        if Decimal(str(body["buyLeverage"])) == Decimal(self.linear["leverage"]):
            raise SimError(110043, "leverage not modified")
        self.linear["leverage"] = str(body["buyLeverage"])
        return {}

    def wallet_balance(self, q: dict) -> dict:
        px = self.price_now()
        coins = []
        eq_total = Decimal(0)
        size, avg = self.linear["size"], self.linear["avg"]
        upnl = (px - avg) * size
        for c, bal in self.wallet.items():
            usd = bal * (px if c == self.base else 1)
            eq = bal + (upnl if c == "USDT" else 0)
            eq_total += usd + (upnl if c == "USDT" else 0)
            coins.append({"coin": c, "walletBalance": _d(bal), "equity": _d(eq), "usdValue": _d(usd),
                          "locked": "0", "unrealisedPnl": _d(upnl if c == "USDT" else 0)})
        margin = abs(size) * avg
        acct = {"accountType": "UNIFIED", "totalEquity": _d(eq_total),
                "totalWalletBalance": _d(eq_total - upnl), "totalMarginBalance": _d(eq_total),
                "totalAvailableBalance": _d(self.wallet["USDT"] - margin), "totalInitialMargin": _d(margin),
                "accountIMRate": "0", "accountMMRate": "0", "coin": coins}
        return {"list": [acct]}

    def api_info(self) -> dict:
        perms = {"ContractTrade": [] if self.read_only else ["Order", "Position"],
                 "Spot": [] if self.read_only else ["SpotTrade"], "Wallet": ["AccountTransfer"], "Options": [],
                 "Derivatives": [], "CopyTrading": [], "BlockTrade": [], "Exchange": [], "NFT": []}
        return {"id": "1", "note": "ats-sim", "apiKey": self.api_key, "readOnly": 1 if self.read_only else 0,
                "secret": "", "permissions": perms, "ips": self.ips, "type": 1, "deadlineDay": 83,
                "expiredAt": "2099-01-01T00:00:00Z", "createdAt": "2026-01-01T00:00:00Z", "unified": 0,
                "uta": 1, "userID": 1, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0",
                "affiliateID": 0, "isMaster": True}

    def state(self) -> dict:
        return {"now_ms": self.now_ms(), "order_hits": self.order_hits, "counts": dict(self.counts),
                "orders": list(self.orders.values()), "executions": list(self.execs),
                "wallet": {k: _d(v) for k, v in self.wallet.items()},
                "linear": {"size": _d(self.linear["size"]), "avg": _d(self.linear["avg"]),
                           "leverage": self.linear["leverage"]}, "paused": self.paused}

    def control(self, body: dict) -> dict:
        if "pause" in body:
            self.pause(bool(body["pause"]))
        for k in ("drop", "reject", "rate_limit"):
            if k in body:
                self.faults[k] = int(body[k])
        if "partial" in body:
            self.faults["partial"] = body["partial"]
        if "read_only" in body:
            self.read_only = bool(body["read_only"])
        return {"faults": dict(self.faults), "paused": self.paused}


MICRO_PATHS = {"/v5/market/open-interest": "open_interest", "/v5/market/funding/history": "funding_history",
               "/v5/market/account-ratio": "account_ratio", "/v5/market/recent-trade": "recent_trades"}
PUBLIC = {"/v5/market/time", "/v5/market/kline", "/v5/market/instruments-info", *MICRO_PATHS}


def make_handler(sim: BybitSim):
    """The request handler class bound to ``sim``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            import socket

            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls

        def log_message(self, fmt, *args):  # quiet: tests read /sim/state instead
            pass

        def _send(self, code: int, doc: dict, headers: dict | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _envelope(self, code: int, msg: str, result: dict) -> dict:
            return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": sim.now_ms()}

        def do_GET(self):
            u = urlsplit(self.path)
            self._dispatch("GET", u.path, u.query, dict(parse_qsl(u.query)))

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n).decode() if n else ""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            self._dispatch("POST", urlsplit(self.path).path, raw, body)

        def _dispatch(self, method, path, payload, params):
            if path == "/sim/state":
                with sim.lock:
                    return self._send(200, sim.state())
            if path == "/sim/control":
                with sim.lock:
                    return self._send(200, sim.control(params))
            with sim.lock:
                sim.counts[path] = sim.counts.get(path, 0) + 1
                if path in ORDER_PATHS:
                    sim.order_hits += 1
                try:
                    if path not in PUBLIC:
                        sim.check_auth(self.headers, payload)
                    if sim.faults["rate_limit"] and path not in PUBLIC:
                        sim.faults["rate_limit"] -= 1
                        reset = sim.now_ms() + 200  # venue ms; pybit sleeps until then (simulated ~0.2 s)
                        return self._send(200, self._envelope(10006, "Too many visits!", {}),
                                          {"X-Bapi-Limit-Reset-Timestamp": str(int(time.time() * 1000) + 200),
                                           "X-Bapi-Limit-Status": "0", "X-Bapi-Limit": "10",
                                           "X-Sim-Venue-Reset": str(reset)})
                    result = self._route(method, path, params)
                except SimError as e:
                    return self._send(200, self._envelope(e.code, e.msg, {}))
                if path == "/v5/order/create" and sim.faults["drop"]:
                    sim.faults["drop"] -= 1
                    self.close_connection = True  # the order is placed; the answer never comes
                    return None
                return self._send(200, self._envelope(0, "OK", result))

        def _route(self, method, path, q):
            if path == "/v5/market/time":
                ms = sim.now_ms()
                return {"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)}
            if path == "/v5/market/kline":
                return sim.kline(q)
            if path == "/v5/market/instruments-info":
                return sim.instruments(q)
            if path in MICRO_PATHS:
                return getattr(sim, MICRO_PATHS[path])(q)
            if path == "/v5/order/create" and method == "POST":
                return sim.create(q)
            if path == "/v5/order/realtime":
                return sim.list_orders(q, open_only=True)
            if path == "/v5/order/history":
                return sim.list_orders(q, open_only=False)
            if path == "/v5/execution/list":
                return sim.executions(q)
            if path == "/v5/position/list":
                return sim.positions(q)
            if path == "/v5/position/set-leverage" and method == "POST":
                return sim.set_leverage(q)
            if path == "/v5/account/wallet-balance":
                return sim.wallet_balance(q)
            if path == "/v5/user/query-api":
                return sim.api_info()
            raise SimError(10001, f"path {path} not simulated")

    return Handler


def load_candles(path: str) -> list:
    """``[[open_ms, o, h, l, c, v], ...]`` from an OHLCV JSON file (the format of /work/shared/data/ohlcv)."""
    with open(path) as f:
        rows = json.load(f)
    if not rows or len(rows[0]) < 6:
        raise ValueError(f"{path}: expected a JSON list of [open_ms, open, high, low, close, volume]")
    return rows


def serve(sim: BybitSim, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the simulator in a daemon thread; returns the server (``server.server_address[1]`` = port)."""
    srv = ThreadingHTTPServer((host, port), make_handler(sim))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="bybit-sim", daemon=True).start()
    return srv
