"""Paper broker: simulated executions against the candles of the replay (or live) feed.

Model (settings from ats.risk.settings, read at the fill bar):
    * A market order submitted at the close of bar t fills at the OPEN of the symbol's next bar (t+1, or the
      first bar after a feed gap), never earlier.
    * Slippage (bps) = broker.slippage_bps + broker.impact_bps_per_pct x participation %, where participation
      = order qty / volume of the decision bar t (known when the order was sent; no look-ahead into t+1).
      Buys fill at open x (1 + slippage), sells at open x (1 - slippage).
    * A market order whose modelled slippage exceeds broker.max_slippage_bps is rejected (reject_reason says by
      how much); nothing fills.
    * Partial fills (broker.partial_fills = true): at most broker.max_participation_pct % of the decision bar's
      volume fills; the rest is cancelled (status partially_filled).
    * Limit orders rest for one bar: a buy fills when the bar trades at or below the limit (at the open if it
      opens through the limit, as taker; else at the limit, as maker), a sell symmetrically; otherwise cancelled.
    * Contingent orders (``parent_client_order_id``, e.g. the open of a reversal behind the close of the old
      position) execute only when the parent filled completely in the same bar; otherwise they are cancelled.
    * Fees: broker.taker_fee_bps of notional for market orders and marketable limits, broker.maker_fee_bps for
      resting limit fills.
    * Funding: open short (linear-perp) positions pay or receive funding at 00:00, 08:00 and 16:00 UTC; the
      engine books it with the model in ``ats.portfolio.funding`` because this broker declares ``models_funding``
      (a live venue charges funding itself).
"""

from __future__ import annotations

from .broker import BrokerReport, Fill, Order


class PaperBroker:
    """In-memory paper broker implementing ats.execution.broker.Broker."""

    name = "paper"
    models_funding = True  # ats.portfolio.funding applies funding to open perp positions (see module docstring)

    def __init__(self):
        self._pending: dict[str, list[Order]] = {}
        self._n = 0

    def submit(self, order: Order) -> None:
        """Queue ``order`` for execution at the first bar of its symbol opening at or after its decision close.

        Parameters
        ----------
        order : Order
            The order (``submitted_at``: decision close, Unix s).
        """
        self._pending.setdefault(order.symbol, []).append(order)
        self._n += 1

    def pending(self) -> list[Order]:
        """Orders queued and not executed yet (every symbol).

        Returns
        -------
        list of Order
            In submission order per symbol.
        """
        if not self._n:
            return []
        return [o for lst in self._pending.values() for o in lst]

    def has_pending(self, symbol: str) -> bool:
        """True when ``symbol`` has queued orders (lets the engine skip ``on_bar``)."""
        return bool(self._n and self._pending.get(symbol))

    def restore(self, orders: list[Order]) -> None:
        """Replace the queue with ``orders`` (a checkpoint's pending orders, after a restart)."""
        self._pending = {}
        self._n = 0
        for o in orders:
            self.submit(o)

    def on_bar(self, symbol: str, t_open: int, o: float, h: float, l: float, c: float, v: float,
               settings: dict) -> list[BrokerReport]:
        """Execute ``symbol``'s queued orders against the bar opening at ``t_open`` (model: module docstring).

        Parameters
        ----------
        symbol : str
            Symbol of the bar.
        t_open : int
            Bar open time (Unix s); orders decided after it stay queued.
        o, h, l, c, v : float
            The bar's OHLCV (quote currency; volume in base units).
        settings : dict
            Settings in force (``broker.*`` keys of ``ats.risk.settings``).

        Returns
        -------
        list of BrokerReport
            One per executed, rejected or cancelled order, in queue order.
        """
        lst = self._pending.get(symbol)
        if not lst:
            return []
        out = []
        done: dict[str, str] = {}
        todo, self._pending[symbol] = lst, []
        self._n -= len(todo)
        for order in todo:
            if t_open < order.submitted_at:  # not yet: the bar opened before the decision bar closed
                self._pending[symbol].append(order)
                self._n += 1
                continue
            parent = order.parent_client_order_id
            if parent is not None and done.get(parent) != "filled":
                order.status, order.updated_at = "cancelled", t_open
                order.reject_reason = f"parent order {parent} not filled ({done.get(parent, 'not executed')})"
                out.append(BrokerReport(order, [], "cancelled", order.reject_reason))
                continue
            rep = self._execute(order, t_open, o, h, l, settings)
            done[order.client_order_id] = rep.status
            out.append(rep)
        return out

    def _execute(self, order: Order, t: int, o: float, h: float, l: float, s: dict) -> BrokerReport:
        buy = order.side == "buy"
        vol = order.decision_volume
        qty = order.qty
        status = "filled"
        if s["broker.partial_fills"] and vol > 0:
            cap = float(s["broker.max_participation_pct"]) / 100.0 * vol
            if qty > cap:
                qty, status = cap, "partially_filled"
        if qty <= 0:
            return self._reject(order, t, "nothing fillable: zero volume")
        if order.order_type == "limit":
            lim = float(order.limit_price)
            if (buy and o <= lim) or (not buy and o >= lim):
                price, liq = o, "taker"
            elif (buy and l <= lim) or (not buy and h >= lim):
                price, liq = lim, "maker"
            else:
                order.status, order.updated_at, order.reject_reason = "cancelled", t, "limit not reached in one bar"
                return BrokerReport(order, [], "cancelled", order.reject_reason)
            slip = (price / o - 1.0) * 1e4 * (1 if buy else -1)
        else:
            part_pct = 100.0 * qty / vol if vol > 0 else 100.0
            slip = float(s["broker.slippage_bps"]) + float(s["broker.impact_bps_per_pct"]) * part_pct
            lim_bps = float(s["broker.max_slippage_bps"])
            if slip > lim_bps:
                return self._reject(order, t, f"modelled slippage {slip:.1f} bps > limit {lim_bps:g} bps "
                                              f"(participation {part_pct:.2f}% of bar volume)")
            price = o * (1 + slip / 1e4) if buy else o * (1 - slip / 1e4)
            liq = "taker"
        fee_bps = float(s["broker.maker_fee_bps"] if liq == "maker" else s["broker.taker_fee_bps"])
        fee = qty * price * fee_bps / 1e4
        order.fill_count += 1
        fill = Fill(order, order.fill_count, qty, price, fee, liq, slip, t)
        prev = order.filled_qty
        order.filled_qty = prev + qty
        order.avg_fill_price = price if not prev else (order.avg_fill_price * prev + price * qty) / order.filled_qty
        order.fees_usd += fee
        order.status, order.updated_at = status, t
        return BrokerReport(order, [fill], status)

    @staticmethod
    def _reject(order: Order, t: int, why: str) -> BrokerReport:
        order.status, order.reject_reason, order.updated_at = "rejected", why, t
        return BrokerReport(order, [], "rejected", why)
