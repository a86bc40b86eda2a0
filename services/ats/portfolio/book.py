"""Portfolio accounting: positions, cash, realized/unrealized P&L and fees (USD).

Cash model (spot longs and 1x linear-perpetual shorts handled alike):
    buy  q at p, fee f:  cash -= q x p + f
    sell q at p, fee f:  cash += q x p - f
    position value = +qty x mark (long) or -qty x mark (short)        (signed mark-to-market)
    equity = cash + sum(position values)

Realized P&L (net of fees) is booked when quantity is closed: (exit - avg entry) x q for longs, (avg entry -
exit) x q for shorts, minus the exit fee and the entry fees of the closed quantity. Funding of an open perp
position (``ats.portfolio.funding``) is realized when paid: cash -= cost, realized -= cost. Unrealized P&L =
signed (mark - avg entry) x qty minus the entry fees of the open quantity. Hence, exactly (up to float rounding):
    equity = starting cash + realized + unrealized
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Position:
    """An open or closed position of one strategy in one symbol. Prices in USD; qty in base units; times Unix s."""

    position_id: int
    strategy: str
    symbol: str
    side: str                      # long | short
    opened_at: int
    qty: float = 0.0               # open quantity
    entry_qty: float = 0.0         # total quantity opened/added
    avg_entry: float = 0.0
    exit_qty: float = 0.0
    exit_value: float = 0.0        # sum of exit qty x price
    realized_usd: float = 0.0      # net of fees
    fees_usd: float = 0.0
    open_entry_fees: float = 0.0   # entry fees attributable to the open qty
    status: str = "open"
    closed_at: int | None = None
    close_reason: str | None = None
    entry_signal_id: int | None = None
    adds: int = 0
    best_price: float = 0.0        # best close since entry (highest for longs, lowest for shorts)
    tp_price: float | None = None
    sl_price: float | None = None
    trail_stop: float | None = None
    funding_usd: float = 0.0       # funding paid while open (negative: received), included in realized_usd
    params: dict = field(default_factory=dict)   # exit params fixed at entry (tp/sl/trailing/max hold)
    context: dict = field(default_factory=dict)

    @property
    def sign(self) -> int:
        """+1 for a long, -1 for a short."""
        return 1 if self.side == "long" else -1

    def value(self, mark: float) -> float:
        """Signed mark-to-market value.

        Parameters
        ----------
        mark : float
            Price (USD per base unit).

        Returns
        -------
        float
            +qty x mark for a long, -qty x mark for a short (USD).
        """
        return self.sign * self.qty * mark

    def unrealized(self, mark: float) -> float:
        """Unrealized P&L net of the open quantity's entry fees.

        Parameters
        ----------
        mark : float
            Price (USD per base unit).

        Returns
        -------
        float
            sign x (mark - avg_entry) x qty - open entry fees (USD).
        """
        return self.sign * (mark - self.avg_entry) * self.qty - self.open_entry_fees

    def pnl_pct(self, mark: float) -> float:
        """Price move in the position's favour since the average entry (fees excluded).

        Parameters
        ----------
        mark : float
            Price (USD per base unit).

        Returns
        -------
        float
            sign x (mark / avg_entry - 1) x 100, percent; 0.0 before any entry.
        """
        return self.sign * (mark / self.avg_entry - 1.0) * 100.0 if self.avg_entry else 0.0

    @property
    def avg_exit(self) -> float | None:
        """Quantity-weighted average exit price (USD), None before any exit."""
        return self.exit_value / self.exit_qty if self.exit_qty else None

    def to_dict(self) -> dict:
        """Every field as JSON-able values (checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        """The position ``to_dict`` saved."""
        return cls(**d)


@dataclass
class Portfolio:
    """Cash and positions of one run. ``positions`` holds open positions keyed by (strategy, symbol)."""

    starting_cash: float
    cash: float
    realized_usd: float = 0.0
    fees_usd: float = 0.0
    positions: dict = field(default_factory=dict)
    funding_usd: float = 0.0       # funding paid by open perp positions since the start (negative: received)

    @classmethod
    def new(cls, starting_cash: float) -> "Portfolio":
        """An empty portfolio holding ``starting_cash`` (USD)."""
        return cls(starting_cash=starting_cash, cash=starting_cash)

    def apply_entry(self, pos: Position, qty: float, price: float, fee: float) -> None:
        """Book an opening or adding fill.

        Parameters
        ----------
        pos : Position
            The position (updated: qty, avg_entry, entry_qty, fees).
        qty : float
            Filled base units (> 0).
        price : float
            Fill price (USD).
        fee : float
            Fee of the fill (USD).

        Notes
        -----
        Cash: a long pays q x p + f, a short receives q x p - f; the average entry is quantity-weighted.
        """
        if pos.side == "long":
            self.cash -= qty * price + fee
        else:
            self.cash += qty * price - fee
        new_qty = pos.qty + qty
        pos.avg_entry = (pos.avg_entry * pos.qty + price * qty) / new_qty
        pos.qty = new_qty
        pos.entry_qty += qty
        pos.fees_usd += fee
        pos.open_entry_fees += fee
        self.fees_usd += fee

    def apply_exit(self, pos: Position, qty: float, price: float, fee: float) -> float:
        """Book a closing fill.

        Parameters
        ----------
        pos : Position
            The position (updated; qty reaches 0.0 at a full close).
        qty : float
            Filled base units (capped at ``pos.qty``).
        price : float
            Fill price (USD).
        fee : float
            Fee of the fill (USD).

        Returns
        -------
        float
            Realized P&L of this fill: sign x (price - avg_entry) x qty - the closed quantity's share of the
            entry fees - fee (USD).
        """
        qty = min(qty, pos.qty)
        if pos.side == "long":
            self.cash += qty * price - fee
        else:
            self.cash -= qty * price + fee
        frac = qty / pos.qty if pos.qty else 1.0
        entry_fee_part = pos.open_entry_fees * frac
        pnl = pos.sign * (price - pos.avg_entry) * qty - entry_fee_part - fee
        pos.open_entry_fees -= entry_fee_part
        pos.qty -= qty
        if pos.qty <= pos.entry_qty * 1e-12:
            pos.qty = 0.0
        pos.exit_qty += qty
        pos.exit_value += qty * price
        pos.realized_usd += pnl
        pos.fees_usd += fee
        self.realized_usd += pnl
        self.fees_usd += fee
        return pnl

    def apply_funding(self, pos: Position, cost: float) -> None:
        """Book one funding payment of open position ``pos``.

        Parameters
        ----------
        pos : Position
            The open perp position (``funding_usd``, ``realized_usd`` and ``context['funding_usd']`` updated).
        cost : float
            What the position pays (USD; negative = it receives): ``ats.portfolio.funding`` computes it.

        Notes
        -----
        cash -= cost; realized -= cost (position and portfolio); equity = start + realized + unrealized holds.
        """
        self.cash -= cost
        pos.realized_usd -= cost
        pos.funding_usd += cost
        pos.context["funding_usd"] = pos.funding_usd
        self.realized_usd -= cost
        self.funding_usd += cost

    def positions_value(self, marks: dict) -> float:
        """Sum of signed position values at ``marks`` (symbol -> USD; a missing symbol at its avg entry), USD."""
        return sum(p.value(marks.get(p.symbol, p.avg_entry)) for p in self.positions.values())

    def gross_exposure(self, marks: dict) -> float:
        """Sum of |position values| at ``marks`` (symbol -> USD), USD."""
        return sum(abs(p.value(marks.get(p.symbol, p.avg_entry))) for p in self.positions.values())

    def unrealized(self, marks: dict) -> float:
        """Sum of the positions' unrealized P&L at ``marks`` (symbol -> USD), USD."""
        return sum(p.unrealized(marks.get(p.symbol, p.avg_entry)) for p in self.positions.values())

    def equity(self, marks: dict) -> float:
        """Cash + positions value at ``marks`` (symbol -> USD), USD."""
        return self.cash + self.positions_value(marks)

    def to_dict(self) -> dict:
        """Cash, totals and the open positions as JSON-able values (checkpoints)."""
        return {"starting_cash": self.starting_cash, "cash": self.cash, "realized_usd": self.realized_usd,
                "fees_usd": self.fees_usd, "funding_usd": self.funding_usd,
                "positions": [p.to_dict() for p in self.positions.values()]}

    @classmethod
    def from_dict(cls, d: dict) -> "Portfolio":
        """The portfolio ``to_dict`` saved (positions keyed by (strategy, symbol) again)."""
        pf = cls(d["starting_cash"], d["cash"], d["realized_usd"], d["fees_usd"], funding_usd=d.get("funding_usd", 0.0))
        for pd_ in d["positions"]:
            p = Position.from_dict(pd_)
            pf.positions[(p.strategy, p.symbol)] = p
        return pf
