"""Orders, fills, client order ids and the Broker protocol.

What exists: the paper broker (``execution/paper.py``, replays and backtests). The Bybit and Alpaca adapters are
being added in ``execution/bybit.py`` / ``execution/alpaca.py`` behind the same protocol (venue-neutral shapes in
``execution/venue.py``). A broker may declare ``max_client_id_len`` (Bybit orderLinkId: 36); the engine then asks
``client_order_id`` for the compact form.

Times are Unix seconds (UTC) on the engine clock; prices in the quote currency (USD/USDT); quantities in base
units; fees in USD; slippage in basis points.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable


def client_order_id(run_id: str, strategy: str, symbol: str, decision_ts: int, intent: str, side: str,
                    max_len: int | None = None) -> str:
    """The deterministic client order id of one decision.

    Unique per (run, strategy, symbol, decision bar, intent, side): a retried submission of the same decision
    yields the same id, which ``order_executions.client_order_id UNIQUE`` (and a venue's own idempotency key,
    e.g. Bybit's orderLinkId) refuses to duplicate.

    Parameters
    ----------
    run_id, strategy, symbol : str
        The run, strategy and symbol of the decision.
    decision_ts : int
        Decision time (Unix s, the bar close).
    intent : {'open', 'add', 'close'}
    side : {'buy', 'sell'}
    max_len : int, optional
        The venue's limit on the id length (a broker's ``max_client_id_len``; Bybit orderLinkId: 36). None
        (replays, the paper broker) keeps the readable form.

    Returns
    -------
    str
        max_len None: ``<run id>-<strategy>-<SYMBOL>-<yyyymmddHHMM>-<intent>-<side>-<hash8>`` (hash8 = first 8
        hex digits of SHA-256 of the fields). With max_len: ``<run tag>-<i><s><yyyymmddHHMM>-<hash>`` (the
        run's 8-character :func:`run_tag`, intent and side initials, then as many SHA-256 hex digits as fit, at
        most 32), only letters, digits and '-': every venue order names its run, so reconciliation and an operator
        can tell this run's orders from any other's by the prefix ``run_tag(run_id) + '-'``.

    Raises
    ------
    ValueError
        When ``max_len`` < 33 (too short for the run tag and a collision-safe hash of 9 hex digits).
    """
    from datetime import datetime, timezone

    stamp = datetime.fromtimestamp(decision_ts, tz=timezone.utc).strftime("%Y%m%d%H%M")
    digest = hashlib.sha256(f"{run_id}|{strategy}|{symbol}|{decision_ts}|{intent}|{side}".encode()).hexdigest()
    if max_len is None:
        return f"{run_id}-{strategy}-{symbol}-{stamp}-{intent}-{side}-{digest[:8]}"
    if max_len < 33:
        raise ValueError(f"client_order_id: max_len {max_len} < 33 leaves no room for the run tag and a "
                         "collision-safe hash")
    head = f"{run_tag(run_id)}-{intent[:1]}{side[:1]}{stamp}-"
    return head + digest[:min(32, max_len - len(head))]


def run_tag(run_id: str) -> str:
    """8 characters naming a run inside a venue's client order id: the first 8 hex digits of SHA-256(run_id)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


@dataclass
class Order:
    """One order. ``status``: submitted | filled | partially_filled | rejected | cancelled."""

    order_id: int
    client_order_id: str
    strategy: str
    symbol: str
    side: str                 # buy | sell
    position_side: str        # long | short
    intent: str               # open | add | close
    qty: float                # base units
    decision_price: float     # the bar close the decision saw
    decision_volume: float    # that bar's volume (base units): the participation denominator
    submitted_at: int         # decision bar close (Unix s)
    signal_id: int | None = None
    position_id: int | None = None
    order_type: str = "market"  # market | limit
    limit_price: float | None = None
    status: str = "submitted"
    reject_reason: str | None = None
    filled_qty: float = 0.0
    avg_fill_price: float | None = None
    fees_usd: float = 0.0
    updated_at: int = 0
    fill_count: int = 0
    parent_client_order_id: str | None = None  # contingent order: executes only if this order filled completely
    context: dict = field(default_factory=dict)

    @property
    def notional_usd(self) -> float:
        """qty x decision_price (USD)."""
        return self.qty * self.decision_price

    def to_dict(self) -> dict:
        """Every field as JSON-able values (checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Order":
        """The order ``to_dict`` saved."""
        return cls(**d)


@dataclass
class Fill:
    """One execution of an order (``fill_seq`` from 1). ``ts``: fill time, never earlier than the open of the
    bar after the decision bar."""

    order: Order
    fill_seq: int
    qty: float
    price: float
    fee_usd: float
    liquidity: str            # maker | taker
    slippage_bps: float
    ts: int


@dataclass
class BrokerReport:
    """What happened to one order at one bar: its fills (maybe none) and its new status."""

    order: Order
    fills: list[Fill]
    status: str
    reject_reason: str | None = None


@runtime_checkable
class Broker(Protocol):
    """What the engine needs from a broker. Replay (paper) and live differ only here and in the clock.

    Optional attribute ``max_client_id_len`` (int): the venue's limit on client order ids; when present the
    engine builds ids with ``client_order_id(..., max_len=max_client_id_len)``. Absent or None: the readable
    replay form.
    """

    name: str

    def submit(self, order: Order) -> None:
        """Accept an order for execution no earlier than the next bar of its symbol."""

    def on_bar(self, symbol: str, t_open: int, o: float, h: float, l: float, c: float, v: float,
               settings: dict) -> list[BrokerReport]:
        """Execute this symbol's pending orders against the bar opening at ``t_open``.

        Parameters
        ----------
        symbol : str
            Symbol of the bar.
        t_open : int
            Bar open time (Unix s).
        o, h, l, c, v : float
            The bar's OHLCV (quote currency; volume in base units).
        settings : dict
            Settings in force (``broker.*`` keys).

        Returns
        -------
        list of BrokerReport
            What happened to each order touched.
        """

    def pending(self) -> list[Order]:
        """Orders accepted but not final yet (checkpointed by the engine)."""

    def restore(self, orders: list[Order]) -> None:
        """Re-load pending orders after a restart."""
