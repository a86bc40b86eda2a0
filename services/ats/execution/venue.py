"""What a live venue adapter (Bybit, Alpaca) gives the live loop, in the venue-neutral shapes the loop,
reconciliation and the go-live preflight compare against the database.

Every live broker in ``execution/<venue>.py`` implements :class:`Broker` (the engine's protocol) and
:class:`VenueAdapter` (this module). Times are UTC milliseconds where they come from the venue (``*_ms``);
prices in the quote currency (USD / USDT); quantities in base units (shares, coins, contracts); money in USD.
Decimal strings are kept as the venue published them (``Decimal``), never floats, until the engine needs a float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class VenueCandle:
    """One closed OHLCV candle as the venue published it.

    Attributes
    ----------
    symbol : str
        ATS symbol (``BTCUSDT``, ``SPY``).
    timeframe : str
        ATS timeframe (``1m``, ``5m``, ``1h``, ``1d``).
    open_time_ms : int
        Candle open time, UTC milliseconds.
    open, high, low, close, volume : Decimal
        Prices in quote currency; volume in base units.
    """

    symbol: str
    timeframe: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True)
class VenueOrder:
    """An order as the venue reports it (open or recent).

    ``client_order_id`` is the engine's deterministic id (Bybit ``orderLinkId``, Alpaca ``client_order_id``);
    ``status`` is normalized to: new | partially_filled | filled | cancelled | rejected.
    """

    venue_order_id: str
    client_order_id: str
    symbol: str
    side: str                     # buy | sell
    qty: Decimal                  # base units ordered
    filled_qty: Decimal           # base units filled so far
    status: str
    avg_fill_price: Decimal | None = None
    order_class: str = "simple"   # simple | mleg
    created_ms: int = 0


@dataclass(frozen=True)
class VenueFill:
    """One execution (Bybit ``get_executions`` row, Alpaca fill activity).

    ``fee_usd`` is the fee converted to USD at the fill price when the venue charges it in the base coin.
    """

    exec_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee_usd: Decimal
    ts_ms: int
    liquidity: str = "taker"      # maker | taker


@dataclass(frozen=True)
class VenuePosition:
    """A position held at the venue. ``qty`` is signed: > 0 long, < 0 short (base units)."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal | None = None
    category: str = "spot"        # spot | linear | equity | option


@dataclass(frozen=True)
class VenueBalance:
    """Cash / equity of the account at the venue, in USD (USDT counted 1:1)."""

    cash_usd: Decimal
    equity_usd: Decimal
    buying_power_usd: Decimal | None = None


@dataclass(frozen=True)
class PreflightFacts:
    """What ``ats broker preflight`` reads from a venue (read-only calls only).

    ``checks`` adds venue-specific facts (e.g. Bybit API key permissions, IP binding, expiry; Alpaca
    pattern-day-trader flag) as ``name -> value``; ``endpoint_kind`` is ``production`` | ``testnet`` | ``paper``
    | ``local`` (a loopback simulator).
    """

    venue: str
    endpoint: str
    endpoint_kind: str
    account_status: str
    equity_usd: Decimal
    buying_power_usd: Decimal
    margin_multiplier: Decimal
    shorting_enabled: bool
    key_permissions: str          # read_only | trade | unknown
    position_mode: str            # one_way | hedge | n/a
    checks: dict = field(default_factory=dict)


@runtime_checkable
class VenueAdapter(Protocol):
    """The live-only half of a venue broker (the engine-facing half is :class:`ats.execution.broker.Broker`).

    All methods are read-only calls to the venue except through ``Broker.submit`` / exits; they raise
    :class:`ats.errors.AtsError` with one line naming the venue and the call on a failure that is not an
    ambiguous outcome (ambiguous outcomes are resolved inside the broker by looking the order up by its
    client order id before any resubmission).
    """

    venue: str                    # "bybit" | "alpaca"
    max_client_id_len: int | None  # Bybit orderLinkId: 36; Alpaca client_order_id: 48

    def server_time_ms(self) -> int:
        """The venue's clock (Bybit ``GET /v5/market/time``, Alpaca ``GET /v2/clock``), UTC ms."""

    def closed_candles(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> list[VenueCandle]:
        """Closed candles with ``start_ms <= open_time_ms`` and close time ``<= end_ms``, oldest first."""

    def open_orders(self) -> list[VenueOrder]:
        """Orders not final at the venue."""

    def fills_since(self, since_ms: int) -> list[VenueFill]:
        """Executions at or after ``since_ms`` (partial fills included), oldest first."""

    def positions(self) -> list[VenuePosition]:
        """Positions held at the venue (zero-quantity rows dropped)."""

    def balance(self) -> VenueBalance:
        """Account cash and equity in USD."""

    def preflight(self) -> PreflightFacts:
        """Read-only facts for the go-live preflight; never places, cancels or modifies an order."""

    def in_flight(self, run_prefix: str, booked: dict, since_ms: int) -> dict:
        """``{(symbol, category): signed base qty}`` executed at the venue for this run's orders but not booked
        in the database yet (reconciliation adds it to the database side). Read-only.

        ``run_prefix`` is the start of every venue client order id of the run (``run_tag(run_id) + '-'``, see
        :func:`ats.execution.broker.run_tag`); ``booked`` is ``{client_order_id: fills in the database}``;
        ``since_ms`` the run start (UTC ms). A venue that tracks fills per order (Alpaca) may ignore ``booked``
        and ``since_ms``; one that lists executions (Bybit ``get_executions``) counts those beyond ``booked``.
        """

    # Optional (the live loop checks with ``hasattr``):
    #   category_for(symbol, side) -> str      the VenuePosition category a database position maps to
    #                                          (default: long -> spot, short -> linear, as on Bybit)
    #   expects_bar(symbol, timeframe, open_ms) -> bool
    #                                          False when the market is closed in that bar (weekend, holiday):
    #                                          no bar is due, so a missing one is not a feed anomaly
    #   last_price(symbol) -> float            the venue's price now (paper-live records it beside each fill)
