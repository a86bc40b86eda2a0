"""Alpaca live broker: the engine's :class:`~ats.execution.broker.Broker` and the loop's
:class:`~ats.execution.venue.VenueAdapter`, through alpaca-py only (``TradingClient``, ``StockHistoricalDataClient``).

Rules it keeps:

* Equities: market / limit orders with ``client_order_id`` = the engine's deterministic id (shortened
  deterministically to Alpaca's 48 characters when longer, see :func:`venue_client_id`).
* Ambiguous outcome (timeout, connection reset, HTTP 5xx): the order is looked up by ``client_order_id`` before any
  resubmission, so a retry can never double an order; a 422 "client_order_id must be unique" means "already
  placed". alpaca-py's own retry loop (which resends on 504) is turned off; HTTP 429 is backed off here
  (exponential, ``backoff_s x 2^n``, at most ``max_retries`` times).
* Options: a multi-leg structure (an iron condor: sell put K2, buy put K1, sell call K3, buy call K4) is ONE order
  with ``order_class = mleg`` and its legs as ``OptionLegRequest``s: all legs fill or none. A pre-trade check
  (:func:`check_multi_leg`) refuses any multi-leg structure whose request would not be MLEG.
* Exits: ``close_position()`` per symbol (per leg symbol for options), never a hand-built counter-order.
* Keys: from ``ALPACA_API_KEY`` / ``ALPACA_SECRET_KEY`` or a 0600 env file; never in logs, events or exception
  text (messages are scrubbed, vendor exceptions are not chained).

* Options market data: the chain (:meth:`AlpacaBroker.option_chain`, ``get_option_contracts``), latest quotes
  (:meth:`AlpacaBroker.option_quotes`) and a structure's mid value (:meth:`AlpacaBroker.structure_value`).

Times: engine side Unix seconds (UTC), venue side UTC milliseconds (``*_ms``); prices USD per share at the venue
(options: per share of the 100-share contract; a multi-leg net price is negative for a credit). The engine's unit
of a structure is ONE structure: an order's qty = structures (= the MLEG order's qty), its fill price = USD per
structure (net per share x 100, positive for what the order's side pays or receives: a sold iron condor fills at its
credit). Fees USD (Alpaca charges no commission on equities; the simulator charges none).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from ..errors import AtsError, UsageError
from .broker import BrokerReport, Fill, Order
from .venue import PreflightFacts, VenueBalance, VenueCandle, VenueFill, VenueOrder, VenuePosition

log = logging.getLogger("ats.execution.alpaca")

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
MAX_CLIENT_ID_LEN = 48
CONTRACT_MULTIPLIER = 100        # shares per US equity option contract
_STATUS = {"new": "new", "accepted": "new", "pending_new": "new", "accepted_for_bidding": "new", "held": "new",
           "calculated": "new", "pending_review": "new", "pending_cancel": "new", "pending_replace": "new",
           "partially_filled": "partially_filled", "filled": "filled", "done_for_day": "partially_filled",
           "canceled": "cancelled", "expired": "cancelled", "replaced": "cancelled", "stopped": "partially_filled",
           "suspended": "new", "rejected": "rejected"}
_TF = {"1m": (1, "Minute"), "5m": (5, "Minute"), "15m": (15, "Minute"), "30m": (30, "Minute"), "1h": (1, "Hour"),
       "4h": (4, "Hour"), "1d": (1, "Day")}


# ------------------------------------------------------------------ multi-leg structures
@dataclass(frozen=True)
class OptionLeg:
    """One leg of a multi-leg options order: OCC ``symbol``, ``side`` buy | sell, ``ratio_qty`` contracts per unit."""

    symbol: str
    side: str
    ratio_qty: int = 1


@dataclass(frozen=True)
class OptionContractInfo:
    """One listed option contract: OCC ``symbol``, ``underlying``, ``expiry`` ``YYYY-MM-DD``, ``kind`` call | put,
    ``strike`` USD, ``size`` shares per contract."""

    symbol: str
    underlying: str
    expiry: str
    kind: str
    strike: float
    size: int = 100


@dataclass(frozen=True)
class MultiLegStructure:
    """A multi-leg options structure traded as one order (``name`` e.g. ``iron_condor``; ``qty`` units of it)."""

    name: str
    underlying: str
    legs: tuple[OptionLeg, ...]
    qty: int


def occ_symbol(underlying: str, expiry: str, kind: str, strike: float) -> str:
    """Build an OCC option symbol.

    Parameters
    ----------
    underlying : str
        Root symbol (``SPY``), at most 6 characters.
    expiry : str
        Expiration date ``YYYY-MM-DD``.
    kind : str
        ``C`` (call) or ``P`` (put).
    strike : float
        Strike, USD; encoded x 1000 in 8 digits.

    Returns
    -------
    str
        e.g. ``SPY261218P00450000``.

    Raises
    ------
    UsageError
        Bad root, date, kind or strike.
    """
    root, k = underlying.upper(), kind.upper()
    if not (1 <= len(root) <= 6 and root.isalpha()) or k not in ("C", "P") or not 0 < strike < 100_000:
        raise UsageError(f"occ symbol: bad underlying/kind/strike {underlying!r} {kind!r} {strike!r}")
    try:
        d = datetime.strptime(expiry, "%Y-%m-%d")
    except ValueError:
        raise UsageError(f"occ symbol: expiry {expiry!r} is not YYYY-MM-DD") from None
    return f"{root}{d:%y%m%d}{k}{int(round(strike * 1000)):08d}"


def iron_condor_legs(underlying: str, expiry: str, strikes: tuple[float, float, float, float],
                     qty: int) -> MultiLegStructure:
    """The four legs of a short iron condor as one structure.

    Parameters
    ----------
    underlying : str
        Root symbol.
    expiry : str
        ``YYYY-MM-DD``, the same for all legs.
    strikes : tuple of 4 floats
        ``(K1, K2, K3, K4)`` with ``K1 < K2 < K3 < K4`` (USD): buy put K1, sell put K2, sell call K3, buy call K4.
    qty : int
        Number of condors (contracts per leg), > 0.

    Returns
    -------
    MultiLegStructure
        ``name = "iron_condor"``; legs in the order sell put K2, buy put K1, sell call K3, buy call K4.

    Raises
    ------
    UsageError
        Strikes not strictly increasing, or qty <= 0.
    """
    k1, k2, k3, k4 = strikes
    if not (k1 < k2 < k3 < k4):
        raise UsageError(f"iron condor {underlying} {expiry}: strikes must be K1 < K2 < K3 < K4, got {strikes}")
    if int(qty) != qty or qty <= 0:
        raise UsageError(f"iron condor {underlying} {expiry}: qty must be a positive integer, got {qty}")
    legs = (OptionLeg(occ_symbol(underlying, expiry, "P", k2), "sell"),
            OptionLeg(occ_symbol(underlying, expiry, "P", k1), "buy"),
            OptionLeg(occ_symbol(underlying, expiry, "C", k3), "sell"),
            OptionLeg(occ_symbol(underlying, expiry, "C", k4), "buy"))
    return MultiLegStructure("iron_condor", underlying.upper(), legs, int(qty))


def check_multi_leg(structure: MultiLegStructure, request) -> None:
    """Pre-trade check: a structure with more than one leg must go out as ONE ``mleg`` order with all its legs.

    Parameters
    ----------
    structure : MultiLegStructure
        What the strategy wants.
    request : alpaca.trading.requests.OrderRequest
        The order about to be sent.

    Raises
    ------
    AtsError
        The request is not ``order_class = mleg`` or does not carry exactly the structure's legs (names the
        structure, so the operator sees which strategy asked for sequential legs).
    """
    from alpaca.trading.enums import OrderClass

    if len(structure.legs) < 2:
        return
    cls = getattr(request, "order_class", None)
    if cls != OrderClass.MLEG:
        raise AtsError(f"alpaca pre-trade check: {structure.name} on {structure.underlying} has "
                       f"{len(structure.legs)} legs but its order is order_class={getattr(cls, 'value', cls)!s}, "
                       f"not mleg; refusing (multi-leg structures go out as ONE MLEG order, never leg by leg)")
    got = sorted((lg.symbol, str(getattr(lg.side, "value", lg.side))) for lg in (request.legs or []))
    want = sorted((lg.symbol, lg.side) for lg in structure.legs)
    if got != want:
        raise AtsError(f"alpaca pre-trade check: {structure.name} on {structure.underlying}: the MLEG order's "
                       f"legs {got} differ from the structure's {want}; refusing")


# ------------------------------------------------------------------ ids, endpoints, keys
def venue_client_id(cid: str) -> str:
    """Our client order id as sent to Alpaca: unchanged when <= 48 chars, else its first 39 chars + ``-`` + an
    8-hex SHA-256 of the whole id (deterministic, so a retry or a restart sends the same id)."""
    if len(cid) <= MAX_CLIENT_ID_LEN:
        return cid
    return f"{cid[:39]}-{hashlib.sha256(cid.encode()).hexdigest()[:8]}"


def classify_endpoint(url: str) -> str:
    """``local`` (loopback), ``paper`` (paper-api.alpaca.markets) or ``production`` (anything else)."""
    host = (urlparse(url).hostname or "").lower()
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return "local"
    if host == "paper-api.alpaca.markets":
        return "paper"
    return "production"


@dataclass(frozen=True)
class AlpacaEndpoints:
    """Trading and data base URLs (``ATS_ALPACA_BASE_URL`` / ``ATS_ALPACA_DATA_URL``; default the paper endpoint)."""

    base_url: str = PAPER_URL
    data_url: str = DATA_URL

    @classmethod
    def from_env(cls) -> "AlpacaEndpoints":
        return cls(os.environ.get("ATS_ALPACA_BASE_URL") or PAPER_URL,
                   os.environ.get("ATS_ALPACA_DATA_URL") or DATA_URL)


def load_keys(env_file: str | Path | None = None) -> tuple[str, str]:
    """Alpaca keys from ``ALPACA_API_KEY`` / ``ALPACA_SECRET_KEY``, else from ``env_file`` (``KEY=value`` lines).

    Parameters
    ----------
    env_file : str or Path, optional
        The account's env file; refused unless its mode is 0600 (no group/other bits).

    Returns
    -------
    tuple of str
        ``(api_key, secret_key)``.

    Raises
    ------
    AtsError
        No keys found, or the env file is readable by group/others (the message names the file, never a key).
    """
    key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
    if key and secret:
        return key, secret
    if env_file is None:
        raise AtsError("alpaca: no keys (set ALPACA_API_KEY and ALPACA_SECRET_KEY, or give the account's env file)")
    p = Path(env_file)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError as e:
        raise AtsError(f"alpaca: env file {p}: {e.strerror}") from None
    if mode & 0o077:
        raise AtsError(f"alpaca: env file {p} has mode {mode:04o}; refusing (chmod 600 {p})")
    vals = {}
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            vals[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    key, secret = vals.get("ALPACA_API_KEY"), vals.get("ALPACA_SECRET_KEY")
    if not key or not secret:
        raise AtsError(f"alpaca: env file {p} lacks ALPACA_API_KEY / ALPACA_SECRET_KEY")
    return key, secret


# ------------------------------------------------------------------ the broker
@dataclass
class _Tracked:
    """An engine order the venue holds: its venue id and, for multi-leg orders, the structure."""

    order: Order
    venue_cid: str
    structure: MultiLegStructure | None = None
    rejected: str | None = None        # refused at submission: reported at the next bar
    done: bool = False                 # final report given (filled / partially filled, rest cancelled / ...)


@dataclass
class RetryPolicy:
    """HTTP 429 / ambiguous-outcome handling: up to ``max_retries`` waits of ``backoff_s x 2^n`` seconds."""

    max_retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 10.0
    sleep: object = field(default=time.sleep, repr=False)


class AlpacaBroker:
    """Alpaca equities and multi-leg options through alpaca-py.

    Parameters
    ----------
    api_key, secret_key : str
        Alpaca keys (never logged, never in an exception).
    base_url, data_url : str
        Trading and market-data endpoints (the simulator: ``http://127.0.0.1:P`` for both).
    run_id : str
        The engine run (logged with each order).
    retry : RetryPolicy, optional
        Backoff and timeout settings.

    Raises
    ------
    AtsError
        From any call that fails for a reason other than an ambiguous outcome resolved by lookup.
    """

    name = "alpaca"
    venue = "alpaca"
    max_client_id_len = MAX_CLIENT_ID_LEN
    supports_mleg = True            # multi-leg structures go out as ONE MLEG order (the engine's pre-trade check)

    def __init__(self, api_key: str, secret_key: str, *, base_url: str = PAPER_URL, data_url: str = DATA_URL,
                 run_id: str = "", retry: RetryPolicy | None = None):
        from alpaca.data.historical import OptionHistoricalDataClient, StockHistoricalDataClient
        from alpaca.trading import TradingClient

        self.base_url, self.data_url, self.run_id = base_url, data_url, run_id
        self._kind = classify_endpoint(base_url)
        self.retry = retry or RetryPolicy()
        self._secrets = (api_key, secret_key)
        self.trading = TradingClient(api_key, secret_key, paper=self._kind != "production",
                                     url_override=base_url)
        self.data = StockHistoricalDataClient(api_key, secret_key, url_override=data_url)
        self.option_data = OptionHistoricalDataClient(api_key, secret_key, url_override=data_url)
        for c in (self.trading, self.data, self.option_data):
            c._retry = 0            # alpaca-py would resend a POST on 504: we resolve ambiguity by lookup instead
            c._session = _TimeoutSession(self.retry.timeout_s)
        self._orders: dict[str, _Tracked] = {}   # our client_order_id -> tracked
        self.sent_at: dict[str, float] = {}      # our client_order_id -> time.perf_counter() when sent (bench)
        self._market_days: set[str] = set()
        self._calendar_span: tuple[str, str] | None = None

    def endpoint_kind(self) -> str:
        """``local`` | ``paper`` | ``production`` for the trading endpoint (see :func:`classify_endpoint`)."""
        return self._kind

    def __repr__(self) -> str:
        return f"AlpacaBroker(base_url={self.base_url!r}, run_id={self.run_id!r})"

    @classmethod
    def from_env(cls, *, run_id: str, env_file: str | Path | None = None,
                 retry: RetryPolicy | None = None) -> "AlpacaBroker":
        """Build from ``ALPACA_API_KEY`` / ``ALPACA_SECRET_KEY`` (or a 0600 env file) and ``ATS_ALPACA_*_URL``."""
        key, secret = load_keys(env_file)
        ep = AlpacaEndpoints.from_env()
        return cls(key, secret, base_url=ep.base_url, data_url=ep.data_url, run_id=run_id, retry=retry)

    # -------------------------------------------------------------- calls
    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def _call(self, what: str, fn, *args, **kw):
        """Run one alpaca-py call, backing off HTTP 429; other errors become :class:`_VenueError`."""
        from alpaca.common.exceptions import APIError
        from requests.exceptions import RequestException

        for n in range(self.retry.max_retries + 1):
            try:
                return fn(*args, **kw)
            except APIError as e:
                code = _status(e)
                if code == 429 and n < self.retry.max_retries:
                    wait = self.retry.backoff_s * 2 ** n
                    log.warning("alpaca %s: rate limited (429), backing off %.2fs", what, wait)
                    self.retry.sleep(wait)
                    continue
                raise _VenueError(what, code, self._scrub(_message(e)), ambiguous=code is not None and code >= 500)
            except RequestException as e:          # timeout, reset, broken chunked answer: the order may exist
                raise _VenueError(what, None, self._scrub(type(e).__name__), ambiguous=True) from None
        raise _VenueError(what, 429, "rate limited: retries exhausted")

    def _lookup(self, venue_cid: str):
        """The venue's order with this client order id, or None (404)."""
        try:
            return self._call("get_order_by_client_id", self.trading.get_order_by_client_id, venue_cid)
        except _VenueError as e:
            if e.code == 404:
                return None
            raise

    def _place(self, request, venue_cid: str):
        """Submit once; on an ambiguous outcome look the order up by client order id before resubmitting."""
        for attempt in range(self.retry.max_retries + 1):
            try:
                return self._call("submit_order", self.trading.submit_order, request)
            except _VenueError as e:
                if e.code == 422 and "unique" in e.message:
                    found = self._lookup(venue_cid)
                    if found is not None:
                        return found
                if not e.ambiguous:
                    raise
                log.warning("alpaca submit_order %s: ambiguous outcome (%s); looking it up", venue_cid, e)
                for _ in range(self.retry.max_retries + 1):
                    try:
                        found = self._lookup(venue_cid)
                        break
                    except _VenueError as le:
                        if not le.ambiguous:
                            raise
                        self.retry.sleep(self.retry.backoff_s * 2 ** attempt)
                else:
                    raise AtsError(f"alpaca submit_order {venue_cid}: outcome unknown, venue unreachable") from None
                if found is not None:
                    return found
                self.retry.sleep(self.retry.backoff_s * 2 ** attempt)
        raise AtsError(f"alpaca submit_order {venue_cid}: no answer after {self.retry.max_retries + 1} attempts")

    # -------------------------------------------------------------- Broker: submit
    def submit(self, order: Order) -> None:
        """Send ``order`` to Alpaca now (it fills no earlier than the next bar; see :meth:`on_bar`).

        ``intent == "close"`` goes through ``close_position``. An order whose ``context["structure"]`` holds a
        :class:`MultiLegStructure` (or its dict) goes out as ONE MLEG order. A venue refusal is reported as a
        rejection at the next bar.

        Raises
        ------
        AtsError
            Outcome unknown after retries, or the multi-leg pre-trade check refused the order.
        """
        st = order.context.get("structure")
        if isinstance(st, dict):
            st = _structure_from_dict(st)
        t = _Tracked(order, venue_client_id(order.client_order_id), st)
        self._orders[order.client_order_id] = t
        try:
            if order.intent == "close":
                self._send_close(t)
            else:
                vo = self._place(self._request(t), t.venue_cid)
                order.context["venue_order_id"] = str(vo.id)
        except _VenueError as e:
            t.rejected = order.context["venue_rejected"] = f"alpaca refused: {e}"
            log.warning("alpaca order %s rejected: %s", order.client_order_id, t.rejected)
        else:
            self.sent_at[order.client_order_id] = time.perf_counter()
            log.info("alpaca order sent", extra={"fields": {"client_order_id": order.client_order_id,
                                                            "run_id": self.run_id, "symbol": order.symbol}})

    def submit_structure(self, structure: MultiLegStructure, client_order_id: str, *,
                         limit_price: float | None = None):
        """Place a multi-leg structure as ONE MLEG order (all legs or none).

        Parameters
        ----------
        structure : MultiLegStructure
            E.g. from :func:`iron_condor_legs`.
        client_order_id : str
            Our deterministic id (shortened to 48 chars by :func:`venue_client_id`).
        limit_price : float, optional
            Net limit per share (negative = credit); market when omitted.

        Returns
        -------
        VenueOrder
            The venue's order (``order_class = "mleg"``).

        Raises
        ------
        AtsError
            Refused by the pre-trade check or by the venue.
        """
        o = Order(0, client_order_id, structure.name, structure.underlying, "sell", "short", "open",
                  float(structure.qty), 0.0, 0.0, 0, order_type="limit" if limit_price is not None else "market",
                  limit_price=limit_price)
        t = _Tracked(o, venue_client_id(client_order_id), structure)
        try:
            vo = self._place(self._request(t), t.venue_cid)
        except _VenueError as e:
            raise AtsError(f"alpaca {structure.name} {client_order_id}: {e}") from None
        return _venue_order(vo)

    def _request(self, t: _Tracked):
        from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, OptionLegRequest

        o = t.order
        base = {"time_in_force": TimeInForce.DAY, "client_order_id": t.venue_cid}
        if o.order_type == "limit":
            req_cls, base["limit_price"] = LimitOrderRequest, round(float(o.limit_price), 2)
        else:
            req_cls = MarketOrderRequest
        if t.structure is not None:
            legs = [OptionLegRequest(symbol=lg.symbol, side=OrderSide(lg.side), ratio_qty=lg.ratio_qty)
                    for lg in t.structure.legs]
            req = req_cls(qty=t.structure.qty, order_class=OrderClass.MLEG, legs=legs, **base)
            check_multi_leg(t.structure, req)
            return req
        return req_cls(symbol=o.symbol, qty=o.qty, side=OrderSide(o.side), **base)

    def _send_close(self, t: _Tracked) -> None:
        """Exit through ``close_position`` (each leg's symbol for a structure); remember the venue order ids."""
        from alpaca.trading.requests import ClosePositionRequest

        o = t.order
        symbols = [lg.symbol for lg in t.structure.legs] if t.structure else [o.symbol]
        ids = o.context.setdefault("venue_close_ids", {})
        held = {p.symbol: (abs(float(p.qty)), _val(p.side))
                for p in self._call("get_all_positions", self.trading.get_all_positions)}
        for sym in symbols:
            if sym in ids:
                continue
            prior = self._find_close_order(sym, o.submitted_at)   # sent before a crash / a lost answer
            if prior is not None:
                ids[sym] = str(prior.id)
                continue
            if sym not in held:
                raise _VenueError("close_position", 404, f"no position in {sym} to close")
            qty_held, side = held[sym]
            if t.structure is None and side != o.position_side:
                raise AtsError(f"alpaca close {o.client_order_id}: the venue holds {sym} {side}, the engine closes "
                               f"a {o.position_side} position; refusing (reconciliation needed)")
            whole = t.structure is not None or abs(qty_held - o.qty) < 1e-9
            opts = None if whole else ClosePositionRequest(qty=str(o.qty))
            try:
                vo = self._call("close_position", self.trading.close_position, sym, opts)
            except _VenueError as e:
                if not e.ambiguous:
                    raise
                vo = self._find_close_order(sym, o.submitted_at)
                if vo is None:
                    raise AtsError(f"alpaca close_position {sym}: outcome unknown ({e})") from None
            ids[sym] = str(vo.id)

    def _find_close_order(self, symbol: str, since_s: int):
        """The most recent venue order on ``symbol`` submitted at or after ``since_s`` that is not one of ours
        (``close_position`` orders carry a venue-made client order id; ours start with ``run_tag(run_id) + '-'``)."""
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        ours = {t.venue_cid for t in self._orders.values()}
        req = GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=[symbol], limit=50,
                               after=datetime.fromtimestamp(since_s - 1, tz=timezone.utc))
        from .broker import run_tag

        mine = f"{run_tag(self.run_id)}-" if self.run_id else "\0"
        cands = [v for v in self._call("get_orders", self.trading.get_orders, req)
                 if v.client_order_id not in ours and not v.client_order_id.startswith(mine)
                 and _STATUS.get(_val(v.status)) != "rejected"]
        return cands[0] if cands else None

    # -------------------------------------------------------------- Broker: on_bar / pending / restore
    def pending(self) -> list[Order]:
        """Orders sent and not final yet (their ``context`` carries the venue ids, so a checkpoint restores them)."""
        return [t.order for t in self._orders.values() if not t.done]

    def has_pending(self, symbol: str) -> bool:
        return any(_filed_under(t) == symbol and not t.done for t in self._orders.values())

    def restore(self, orders: list[Order]) -> None:
        """Re-attach checkpointed orders after a restart (the live loop does it at every bar).

        Parameters
        ----------
        orders : list of Order
            The checkpoint's pending orders; their ``context`` holds the venue ids. One without a venue id is
            looked up by client order id and, when the venue never received it, sent again with the same id (so
            nothing is doubled and nothing lost); one the venue refused is reported, never resent.

        Raises
        ------
        AtsError
            The venue could not be read.
        """
        self._orders = {}
        for o in orders:
            st = o.context.get("structure")
            t = _Tracked(o, venue_client_id(o.client_order_id),
                         _structure_from_dict(st) if isinstance(st, dict) else st)
            self._orders[o.client_order_id] = t
            if o.context.get("venue_rejected"):        # refused at submission: report it, never resend it
                t.rejected = o.context["venue_rejected"]
                continue
            if o.intent == "close":
                try:
                    self._send_close(t)        # skips symbols already closed (venue_close_ids / prior order)
                except _VenueError as e:
                    t.rejected = o.context["venue_rejected"] = f"alpaca refused: {e}"
                continue
            if "venue_order_id" not in o.context:
                found = self._lookup(t.venue_cid)
                if found is None:
                    log.warning("alpaca restore: %s not at the venue; sending it again", o.client_order_id)
                    del self._orders[o.client_order_id]
                    self.submit(o)
                else:
                    o.context["venue_order_id"] = str(found.id)

    def on_bar(self, symbol: str, t_open: int, o: float, h: float, l: float, c: float, v: float,
               settings: dict) -> list[BrokerReport]:
        """Report what the venue did with this symbol's orders by the bar opening at ``t_open``.

        Parameters
        ----------
        symbol : str
            The bar's symbol (an options structure is filed under its underlying).
        t_open : int
            Bar open, Unix s; orders decided at a later close are left alone.
        o, h, l, c, v : float
            The bar (USD, shares); ``o`` is the reference of ``slippage_bps``.
        settings : dict
            Unused (the venue decides fills).

        Returns
        -------
        list of BrokerReport
            A fill's price is the venue's, ``fee_usd`` 0 (Alpaca charges no commission). A partially filled
            market order is cancelled for the rest after its bar (status partially_filled), an unfilled limit
            order after one bar (cancelled), as the paper broker does; a market order the venue has not executed
            yet (market closed) stays pending.
        """
        out = []
        for cid, t in list(self._orders.items()):
            od = t.order
            if _filed_under(t) != symbol or t.done or t_open < od.submitted_at:
                continue
            if t.rejected:
                t.done = True
                od.status, od.reject_reason, od.updated_at = "rejected", t.rejected, t_open
                out.append(BrokerReport(od, [], "rejected", t.rejected))
                continue
            rep = self._poll(t, t_open, o)
            if rep is not None:
                out.append(rep)
        return out

    def _poll(self, t: _Tracked, t_open: int, bar_open: float) -> BrokerReport | None:
        od = t.order
        ids = list(od.context.get("venue_close_ids", {}).values()) or [od.context.get("venue_order_id")]
        vos = [self._call("get_order_by_id", self.trading.get_order_by_id, i) for i in ids if i]
        if not vos:
            return None
        qty = min(float(x.filled_qty or 0) for x in vos) if t.structure else sum(float(x.filled_qty or 0) for x in vos)
        statuses = {_STATUS.get(_val(x.status), "new") for x in vos}
        fills = []
        if qty > od.filled_qty + 1e-12:
            fills.append(self._fill(t, vos, qty, t_open, bar_open))
        if statuses == {"filled"}:
            status = "filled"
        elif "rejected" in statuses and not od.filled_qty:
            status, od.reject_reason = "rejected", "rejected by the venue"
        elif statuses <= {"filled", "cancelled", "rejected"}:
            status = "partially_filled" if od.filled_qty else "cancelled"
        elif od.order_type == "limit" or od.filled_qty > 0:
            self._cancel_rest(vos)      # working after its bar: the rest is cancelled, as the paper broker does
            status = "partially_filled" if od.filled_qty else "cancelled"
            od.reject_reason = od.reject_reason or "rest cancelled after one bar"
        else:
            return BrokerReport(od, fills, od.status) if fills else None   # not executed yet (market closed)
        od.status, od.updated_at, t.done = status, t_open, True
        return BrokerReport(od, fills, status, od.reject_reason)

    def _fill(self, t: _Tracked, vos: list, qty: float, t_open: int, bar_open: float) -> Fill:
        od = t.order
        avg = sum(float(x.filled_avg_price or 0) * float(x.filled_qty or 0) for x in vos) / max(
            sum(float(x.filled_qty or 0) for x in vos), 1e-12)
        if t.structure is not None:
            avg = self._structure_fill_price(t, vos)
        dq = qty - od.filled_qty
        price = avg if not od.filled_qty else (avg * qty - (od.avg_fill_price or 0) * od.filled_qty) / dq
        buy = od.side == "buy"
        slip = (price / bar_open - 1.0) * 1e4 * (1 if buy else -1) if bar_open and t.structure is None else 0.0
        ts = max((int(x.updated_at.timestamp()) for x in vos), default=t_open)
        od.fill_count += 1
        fill = Fill(od, od.fill_count, dq, price, 0.0, "taker", slip, max(ts, od.submitted_at))
        od.avg_fill_price = avg
        od.filled_qty = qty
        return fill

    def _structure_fill_price(self, t: _Tracked, vos: list) -> float:
        """A structure's fill in the engine's unit: USD per structure (x the 100-share contract multiplier), signed
        so that the order's side pays it (a sell of a credit structure receives a positive price, a buy - the
        close - pays a positive price). The MLEG net price per share (one order: ``filled_avg_price``, negative
        for a credit) or, for leg-by-leg ``close_position`` orders, sum(leg price x ratio, buy + / sell -).
        Records each leg's fill in ``order.context["leg_fills"]`` (symbol, side, qty, price per share)."""
        od = t.order
        ratio = {lg.symbol: lg.ratio_qty for lg in t.structure.legs}
        if len(vos) == 1 and _val(vos[0].order_class) == "mleg":
            net = float(vos[0].filled_avg_price or 0)
            legs = vos[0].legs or []
        else:
            net = sum(float(x.filled_avg_price or 0) * ratio.get(x.symbol, 1) * (1 if _val(x.side) == "buy" else -1)
                      for x in vos)
            legs = vos
        od.context["leg_fills"] = [{"symbol": x.symbol, "side": _val(x.side), "qty": float(x.filled_qty or 0),
                                    "price": float(x.filled_avg_price or 0)} for x in legs]
        return net * CONTRACT_MULTIPLIER * (1 if od.side == "buy" else -1)

    def _cancel_rest(self, vos: list) -> None:
        for x in vos:
            if _STATUS.get(_val(x.status)) in ("new", "partially_filled"):
                try:
                    self._call("cancel_order_by_id", self.trading.cancel_order_by_id, x.id)
                except _VenueError as e:
                    if e.code != 422:          # 422: already final
                        raise AtsError(f"alpaca cancel {x.client_order_id}: {e}") from None

    # -------------------------------------------------------------- VenueAdapter (read-only)
    def server_time_ms(self) -> int:
        """The venue's clock (``GET /v2/clock``), UTC ms."""
        return int(self._read("get_clock", self.trading.get_clock).timestamp.timestamp() * 1000)

    def closed_candles(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> list[VenueCandle]:
        """Closed bars of ``symbol`` with ``start_ms <= open`` and ``open + timeframe <= end_ms``, oldest first.

        Raises
        ------
        UsageError
            Unknown timeframe (one of 1m, 5m, 15m, 30m, 1h, 4h, 1d).
        """
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        if timeframe not in _TF:
            raise UsageError(f"alpaca bars: timeframe {timeframe!r} not one of {', '.join(_TF)}")
        n, unit = _TF[timeframe]
        tf_ms = n * {"Minute": 60, "Hour": 3600, "Day": 86400}[unit] * 1000
        req = StockBarsRequest(symbol_or_symbols=symbol, timeframe=TimeFrame(n, TimeFrameUnit(unit)),
                               start=_dt(start_ms), end=_dt(end_ms))
        bs = self._read("get_stock_bars", self.data.get_stock_bars, req)
        out = []
        for b in bs.data.get(symbol, []):
            t = int(b.timestamp.timestamp() * 1000)
            if start_ms <= t and t + tf_ms <= end_ms:
                out.append(VenueCandle(symbol, timeframe, t, Decimal(str(b.open)), Decimal(str(b.high)),
                                       Decimal(str(b.low)), Decimal(str(b.close)), Decimal(str(b.volume))))
        return sorted(out, key=lambda x: x.open_time_ms)

    def option_chain(self, underlying: str, expiry_gte: str, expiry_lte: str, *, strike_gte: float | None = None,
                     strike_lte: float | None = None) -> list[OptionContractInfo]:
        """The venue's listed option contracts of ``underlying`` (``GET /v2/options/contracts`` through
        ``TradingClient.get_option_contracts``, every page). Read-only.

        Parameters
        ----------
        underlying : str
            E.g. ``SPY``.
        expiry_gte, expiry_lte : str
            Expiration window, ``YYYY-MM-DD`` inclusive.
        strike_gte, strike_lte : float, optional
            Strike window, USD.

        Returns
        -------
        list of OptionContractInfo
            Active, tradable contracts sorted by (expiry, type, strike).

        Raises
        ------
        AtsError
            The chain could not be read.
        """
        from alpaca.trading.requests import GetOptionContractsRequest

        out, token = [], None
        for _ in range(100):
            req = GetOptionContractsRequest(underlying_symbols=[underlying.upper()], expiration_date_gte=expiry_gte,
                                            expiration_date_lte=expiry_lte, limit=1000, page_token=token,
                                            strike_price_gte=None if strike_gte is None else f"{strike_gte:g}",
                                            strike_price_lte=None if strike_lte is None else f"{strike_lte:g}")
            r = self._read("get_option_contracts", self.trading.get_option_contracts, req)
            for c in r.option_contracts or []:
                if c.tradable and _val(c.status) == "active":
                    out.append(OptionContractInfo(c.symbol, c.underlying_symbol, c.expiration_date.isoformat(),
                                                  _val(c.type), float(c.strike_price), int(float(c.size or 100))))
            token = r.next_page_token
            if not token:
                break
        return sorted(out, key=lambda c: (c.expiry, c.kind, c.strike))

    def option_quotes(self, symbols) -> dict[str, tuple[float, float]]:
        """Latest bid/ask of option ``symbols`` (``OptionHistoricalDataClient.get_option_latest_quote``), USD per
        share: ``{symbol: (bid, ask)}``; symbols the venue does not quote are absent. Read-only.

        Raises
        ------
        AtsError
            The quotes could not be read.
        """
        from alpaca.data.requests import OptionLatestQuoteRequest

        syms = sorted(set(symbols))
        if not syms:
            return {}
        r = self._read("get_option_latest_quote", self.option_data.get_option_latest_quote,
                       OptionLatestQuoteRequest(symbol_or_symbols=syms))
        return {k: (float(q.bid_price), float(q.ask_price)) for k, q in r.items()}

    def structure_value(self, structure: MultiLegStructure) -> float:
        """What one unit of ``structure`` is worth now at the quotes' mid, in the engine's unit: USD per structure
        = sum(mid x ratio, buy legs + / sell legs -) x 100 (negative for a credit structure such as a short iron
        condor: that is what closing it costs). Read-only.

        Raises
        ------
        AtsError
            A leg has no quote, or the quotes could not be read.
        """
        q = self.option_quotes([lg.symbol for lg in structure.legs])
        missing = [lg.symbol for lg in structure.legs if lg.symbol not in q]
        if missing:
            raise AtsError(f"alpaca {structure.name} {structure.underlying}: no quote for {', '.join(missing)}")
        net = sum((q[lg.symbol][0] + q[lg.symbol][1]) / 2 * lg.ratio_qty * (1 if lg.side == "buy" else -1)
                  for lg in structure.legs)
        return net * CONTRACT_MULTIPLIER

    def open_orders(self) -> list[VenueOrder]:
        """Orders not final at the venue; ``client_order_id`` is the engine's id for orders this broker sent."""
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        req = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        return [self._ours(_venue_order(x)) for x in self._read("get_orders", self.trading.get_orders, req)]

    def fills_since(self, since_ms: int) -> list[VenueFill]:
        """Executions at or after ``since_ms``, one per order (per leg for MLEG) with its cumulative filled qty
        (alpaca-py's TradingClient has no fill-activity call); ``exec_id`` = ``<order id>:<filled qty>``."""
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, after=_dt(since_ms - 7 * 86_400_000))
        out = []
        for x in self._read("get_orders", self.trading.get_orders, req):
            for y in (x.legs or [x]) if _val(x.order_class) == "mleg" else [x]:
                q = float(y.filled_qty or 0)
                ts = int((y.filled_at or y.updated_at).timestamp() * 1000)
                if q > 0 and ts >= since_ms:
                    out.append(VenueFill(f"{y.id}:{_num(q)}", self._engine_cid(x.client_order_id), y.symbol,
                                         _val(y.side),
                                         Decimal(str(y.filled_qty)), Decimal(str(y.filled_avg_price)),
                                         Decimal("0"), ts))
        return sorted(out, key=lambda f: f.ts_ms)

    def positions(self, symbols: tuple[str, ...] | None = None) -> list[VenuePosition]:
        """Positions at the venue (only ``symbols`` when given; option legs match their underlying), ``qty``
        signed (short < 0); category ``equity`` or ``option``."""
        out = []
        for p in self._read("get_all_positions", self.trading.get_all_positions):
            if symbols is not None and p.symbol not in symbols and _underlying(p.symbol) not in symbols:
                continue
            q = abs(Decimal(str(p.qty))) * (-1 if _val(p.side) == "short" else 1)
            if q:
                out.append(VenuePosition(p.symbol, q, Decimal(str(p.avg_entry_price)),
                                         "option" if _val(p.asset_class) == "us_option" else "equity"))
        return out

    def balance(self) -> VenueBalance:
        """Cash, equity and buying power (USD)."""
        a = self._read("get_account", self.trading.get_account)
        return VenueBalance(Decimal(a.cash or "0"), Decimal(a.equity or "0"), Decimal(a.buying_power or "0"))

    def preflight(self) -> PreflightFacts:
        """Read-only go-live facts from ``GET /v2/account`` (never places, cancels or modifies an order).

        Returns
        -------
        PreflightFacts
            ``account_status`` lower-cased (``active``; the venue's spelling in ``checks["venue_account_status"]``);
            ``key_permissions = "trade"`` (Alpaca API keys cannot be read-only and have no key-information or
            IP-binding endpoint); ``position_mode = "one_way"`` (Alpaca nets one position per symbol);
            ``checks`` holds pattern_day_trader, trading_blocked, account_blocked, trade_suspended_by_user,
            daytrade_count, options_trading_level, currency.
        """
        a = self._read("get_account", self.trading.get_account)
        checks = {"venue_account_status": _val(a.status), "pattern_day_trader": bool(a.pattern_day_trader),
                  "trading_blocked": bool(a.trading_blocked),
                  "account_blocked": bool(a.account_blocked),
                  "trade_suspended_by_user": bool(a.trade_suspended_by_user),
                  "daytrade_count": a.daytrade_count, "options_trading_level": a.options_trading_level,
                  "currency": a.currency}
        return PreflightFacts("alpaca", self.base_url, self._kind, _val(a.status).lower(),
                              Decimal(a.equity or "0"), Decimal(a.buying_power or "0"),
                              Decimal(a.multiplier or "1"), bool(a.shorting_enabled), "trade", "one_way", checks)

    def _engine_cid(self, venue_cid: str, venue_order_id: str | None = None) -> str:
        """The engine's client order id behind a venue id (they differ when ours was longer than 48 chars, and a
        ``close_position`` order carries a venue-made id: it is matched by its venue order id)."""
        for cid, t in self._orders.items():
            if t.venue_cid == venue_cid:
                return cid
            if venue_order_id and venue_order_id in t.order.context.get("venue_close_ids", {}).values():
                return cid
        return venue_cid

    def _ours(self, vo: VenueOrder) -> VenueOrder:
        from dataclasses import replace

        cid = self._engine_cid(vo.client_order_id, vo.venue_order_id)
        return vo if cid == vo.client_order_id else replace(vo, client_order_id=cid)

    def expects_bar(self, symbol: str, timeframe: str, open_ms: int) -> bool:
        """Whether the venue trades in the bar opening at ``open_ms`` (UTC ms): its date is a market day of
        Alpaca's calendar (``GET /v2/calendar``). False (weekend, holiday) means no bar is due, which is not a
        feed anomaly. Daily bars are dated by their open's UTC date. Read-only; cached by year.

        Raises
        ------
        AtsError
            The calendar could not be read.
        """
        from datetime import date

        from alpaca.trading.requests import GetCalendarRequest

        day = _dt(open_ms).strftime("%Y-%m-%d")
        span = self._calendar_span
        if span is None or not span[0] <= day <= span[1]:
            y = int(day[:4])
            lo, hi = date(y - 1, 1, 1), date(y + 1, 12, 31)
            cal = self._read("get_calendar", self.trading.get_calendar, GetCalendarRequest(start=lo, end=hi))
            self._market_days = {c.date.isoformat() for c in cal}
            self._calendar_span = (lo.isoformat(), hi.isoformat())
        return day in self._market_days

    @staticmethod
    def category_for(symbol: str, side: str | None = None) -> str:
        """The :class:`VenuePosition` category of ``symbol`` at Alpaca: ``option`` (OCC symbol) or ``equity``
        (long and short alike; Alpaca has no spot/linear split)."""
        return "option" if _underlying(symbol) != symbol else "equity"

    def in_flight(self, run_prefix: str = "", booked: dict | None = None, since_ms: int = 0) -> dict:
        """``{(symbol, category): signed qty}`` executed at the venue for this run's orders but not yet reported to
        the engine (reconciliation adds it to the database side). Read-only.

        Two kinds: the pending orders this broker tracks (executed beyond what it reported: ``Order.filled_qty``),
        and, after a restart, orders of this run the broker does not track yet - sent after the last checkpoint, or
        pending in it before the first bar restored them - found at the venue by their client order id prefix and
        counted whole when the database has no fill for them (an Alpaca order is reported at most once: the rest of
        a partial fill is cancelled after its bar). A multi-leg order counts per leg (``option`` category).
        ``close_position`` orders carry venue-made ids: only tracked ones are seen (an untracked close shows as a
        difference until the re-decided exit adopts it - entries halt meanwhile, which is the safe side).

        The signature is the one of :meth:`ats.execution.venue.VenueAdapter.in_flight` (the live loop calls every
        venue the same way).

        Parameters
        ----------
        run_prefix : str
            Start of this run's venue client order ids (``run_tag(run_id) + '-'``); "" = every tracked order and no
            venue scan.
        booked : dict, optional
            {client_order_id: fills in the database}; an untracked order with a fill booked is already reported.
        since_ms : int
            Run start, UTC ms: the venue scan reads orders submitted after it (the latest 500).

        Returns
        -------
        dict
            {(symbol, "equity" | "option"): Decimal signed qty (buy > 0)}.
        """
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        out: dict = {}
        tracked = set()
        for t in self._orders.values():
            tracked.add(t.venue_cid)
            od = t.order
            if t.done or t.rejected:
                continue
            if run_prefix and not t.venue_cid.startswith(run_prefix):
                continue
            ids = list(od.context.get("venue_close_ids", {}).values()) or [od.context.get("venue_order_id")]
            for i in [i for i in ids if i]:
                _add_flight(out, self._read("get_order_by_id", self.trading.get_order_by_id, i), od.filled_qty)
        if run_prefix:
            booked = booked or {}
            req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, after=_dt(max(since_ms - 1000, 0)))
            for x in self._read("get_orders", self.trading.get_orders, req):
                cid = x.client_order_id or ""
                if cid.startswith(run_prefix) and cid not in tracked and not booked.get(self._engine_cid(cid)):
                    _add_flight(out, x, 0.0)
        return out

    def _read(self, what: str, fn, *args):
        """A read-only call; any failure (ambiguous included) is an AtsError naming the call."""
        try:
            return self._call(what, fn, *args)
        except _VenueError as e:
            raise AtsError(str(e)) from None


PDT_MIN_EQUITY_USD = Decimal(25_000)   # FINRA pattern-day-trader minimum equity (Rule 4210(f)(8)(B))


def venue_check_failures(facts: PreflightFacts) -> list[str]:
    """Alpaca's own go-live refusals, one line each (the account's expected values are compared by the caller).

    Parameters
    ----------
    facts : PreflightFacts
        From :meth:`AlpacaBroker.preflight`.

    Returns
    -------
    list of str
        Empty when the account can trade: status ACTIVE; trading, account and user-suspension flags clear; a
        pattern day trader holds at least 25,000 USD equity.
    """
    out = []
    if facts.account_status.upper() != "ACTIVE":
        out.append(f"alpaca account status is {facts.account_status.upper()}, not ACTIVE")
    for flag in ("trading_blocked", "account_blocked", "trade_suspended_by_user"):
        if facts.checks.get(flag):
            out.append(f"alpaca account has {flag} = true")
    if facts.checks.get("pattern_day_trader") and facts.equity_usd < PDT_MIN_EQUITY_USD:
        out.append(f"alpaca account is a pattern day trader with equity {facts.equity_usd} USD < "
                   f"{PDT_MIN_EQUITY_USD} USD (day trades would be refused)")
    return out


# ------------------------------------------------------------------ helpers
class _VenueError(AtsError):
    """A failed Alpaca call: ``code`` the HTTP status (None: no answer), ``ambiguous`` when the order may exist."""

    def __init__(self, what: str, code: int | None, message: str, *, ambiguous: bool = False):
        self.what, self.code, self.message, self.ambiguous = what, code, message, ambiguous
        super().__init__(f"alpaca {what}: {'HTTP ' + str(code) if code else 'no answer'}: {message}")


class _TimeoutSession:
    """A ``requests.Session`` with a default timeout (alpaca-py sets none, so a dropped answer would hang)."""

    def __new__(cls, timeout_s: float):
        import requests

        class S(requests.Session):
            def request(self, method, url, **kw):
                kw.setdefault("timeout", timeout_s)
                return super().request(method, url, **kw)

        return S()


def _status(e) -> int | None:
    try:
        return int(e.status_code)
    except Exception:  # noqa: BLE001 - no HTTP response attached
        return None


def _message(e) -> str:
    try:
        return str(e.message)
    except Exception:  # noqa: BLE001 - body not JSON
        return str(e)[:200]


def _underlying(symbol: str) -> str:
    """The root of an OCC option symbol (``SPY261218P00450000`` -> ``SPY``); other symbols unchanged."""
    return symbol[:-15] if len(symbol) > 15 and symbol[-9] in "CP" and symbol[-15:-9].isdigit() else symbol


def _val(x) -> str:
    return str(getattr(x, "value", x))


def _num(q: float) -> str:
    return f"{q:.8f}".rstrip("0").rstrip(".")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _add_flight(out: dict, x, reported: float) -> None:
    """Add what venue order ``x`` executed beyond ``reported`` units to ``out`` ({(symbol, category): signed qty});
    a multi-leg order per leg (``reported`` structures x the leg's ratio)."""
    if _val(x.order_class) == "mleg":
        for lg in x.legs or []:
            ratio = Decimal(str(lg.ratio_qty or 1))
            q = Decimal(str(lg.filled_qty or 0)) - Decimal(str(reported)) * ratio
            if q > 0:
                key = (lg.symbol, AlpacaBroker.category_for(lg.symbol))
                out[key] = out.get(key, Decimal(0)) + (q if _val(lg.side) == "buy" else -q)
        return
    q = Decimal(str(x.filled_qty or 0)) - Decimal(str(reported))
    if q > 0:
        key = (x.symbol, AlpacaBroker.category_for(x.symbol))
        out[key] = out.get(key, Decimal(0)) + (q if _val(x.side) == "buy" else -q)


def _filed_under(t: _Tracked) -> str:
    """The symbol whose bars report an order: a structure's underlying, else the order's symbol."""
    return t.structure.underlying if t.structure is not None else t.order.symbol


def _structure_from_dict(d: dict) -> MultiLegStructure:
    return MultiLegStructure(d["name"], d["underlying"], tuple(OptionLeg(**lg) for lg in d["legs"]), int(d["qty"]))


def _venue_order(x) -> VenueOrder:
    legs = x.legs or []
    return VenueOrder(str(x.id), x.client_order_id, x.symbol or ",".join(lg.symbol for lg in legs),
                      _val(x.side) if x.side else ("mleg"), Decimal(str(x.qty or 0)), Decimal(str(x.filled_qty or 0)),
                      _STATUS.get(_val(x.status), "new"),
                      Decimal(str(x.filled_avg_price)) if x.filled_avg_price is not None else None,
                      "mleg" if _val(x.order_class) == "mleg" else "simple",
                      int(x.created_at.timestamp() * 1000))
