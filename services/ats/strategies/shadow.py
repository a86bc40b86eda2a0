"""A read-only engine over the candle store: the strategies' prepared series and hypothetical trades, exactly as a
replay would compute them, without writing anything.

``Shadow`` builds the real :class:`ats.engine.core.Engine` over a :class:`ats.engine.feed.ReplayFeed` with a
:class:`ats.engine.sink.MemorySink` (rows are kept in memory and dropped), so

* ``prepared(sym, name, ts)`` is the engine's own prepared series under the configuration in force at ``ts``
  (``GateCache``: gates and params as of T; BTC regime for strategies that use it), and
* ``simulate_entry(...)`` plays one hypothetical entry forward with the engine's own parts: the order through
  ``ats.engine.orders.submit`` to the ``PaperBroker`` (fills at the next bar's open, slippage and taker fee from the
  settings in force), fills through ``ats.engine.fills.on_report`` (targets from ``set_targets``), and every later
  bar through ``ats.engine.exits.check_exit`` (stop loss, take profit, trailing stop, max hold, the strategy's exit
  signal; the sell gate in force) until the position is closed or the bars run out.

Used by the watchlist scores (:mod:`ats.strategies.watchlist`) and the soak report (:mod:`ats.strategies.soak`).
Times are Unix seconds (UTC); prices in the quote currency (USD); P&L in USD net of fees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ..errors import AtsError
from ..timeutil import TIMEFRAME_SECONDS

#: cash of the book each hypothetical trade is played in (USD); larger than any entry so cash never limits it
SHADOW_CASH = 1e9


def symbols_with_candles(conn, symbols, timeframe: str, start: int, end: int) -> list[str]:
    """The subset of ``symbols`` having at least one ``timeframe`` candle with open time in [start, end) (Unix s)."""
    rows = conn.execute(
        "SELECT DISTINCT symbol FROM candles WHERE timeframe = %s AND symbol = ANY(%s) AND open_time >= %s "
        "AND open_time < %s", (timeframe, list(symbols), _dt(start), _dt(end))).fetchall()
    have = {r["symbol"] if isinstance(r, dict) else r[0] for r in rows}
    return [s for s in symbols if s in have]


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(int(t), tz=timezone.utc)


@dataclass
class ShadowTrade:
    """One hypothetical trade (prices USD, times Unix s, P&L USD net of fees; ``return_pct`` percent of the entry
    notional). ``status``: closed | open (still open at the last bar: P&L marked at its close) | entry_rejected."""

    strategy: str
    symbol: str
    side: str
    decision_ts: int
    decision_price: float
    qty: float
    status: str
    entry_ts: int | None = None
    entry_price: float | None = None
    exit_ts: int | None = None
    exit_price: float | None = None
    exit_reason: str | None = None
    pnl_usd: float = 0.0
    fees_usd: float = 0.0
    return_pct: float = 0.0
    hold_hours: float | None = None
    reason: str | None = None

    def doc(self) -> dict:
        """JSON-ready dict (times ISO-8601 UTC)."""
        iso = lambda t: None if t is None else _dt(t).isoformat()  # noqa: E731
        return {"strategy": self.strategy, "symbol": self.symbol, "side": self.side,
                "decision_time": iso(self.decision_ts), "decision_price": self.decision_price, "qty": self.qty,
                "status": self.status, "entry_time": iso(self.entry_ts), "entry_price": self.entry_price,
                "exit_time": iso(self.exit_ts), "exit_price": self.exit_price, "exit_reason": self.exit_reason,
                "pnl_usd": round(self.pnl_usd, 6), "fees_usd": round(self.fees_usd, 6),
                "return_pct": round(self.return_pct, 4), "hold_hours": self.hold_hours, "reason": self.reason}


class Shadow:
    """The engine's view of ``symbols`` x ``strategies`` for decisions in [start, end) (see module docstring).

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows); only read.
    strategies : iterable of str
        Registered strategy names.
    symbols : iterable of str
        Symbols; those without a candle in [start, end) are left out (``missing``).
    timeframe : str
        Candle timeframe ('1h', ...).
    start, end : int
        Unix s; bars opening in [start, end) are the decision bars (300 warm-up bars before are read too).
    account_id : str
        Whose configurations and settings apply.

    Raises
    ------
    AtsError
        When no symbol has candles in the window.
    """

    def __init__(self, conn, strategies, symbols, timeframe: str, start: int, end: int, *,
                 account_id: str = "default"):
        from ..engine.core import Engine
        from ..engine.feed import ReplayFeed
        from ..engine.runs import RunSpec
        from ..engine.sink import MemorySink

        symbols = list(dict.fromkeys(s.upper() for s in symbols))
        have = symbols_with_candles(conn, symbols, timeframe, start, end)
        self.missing = [s for s in symbols if s not in have]
        if not have:
            raise AtsError(f"no {timeframe} candles for {', '.join(symbols) or 'any symbol'} between "
                           f"{_dt(start):%Y-%m-%d %H:%M} and {_dt(end):%Y-%m-%d %H:%M} UTC")
        self.tf, self.tf_s = timeframe, TIMEFRAME_SECONDS[timeframe]
        spec = RunSpec(mode="backtest", strategies=tuple(strategies), symbols=tuple(have), timeframe=timeframe,
                       start=int(start), end=int(end), account_id=account_id, starting_cash=SHADOW_CASH,
                       tag="shadow")
        feed = ReplayFeed.load(conn, have, timeframe, int(start), int(end))
        self.eng = Engine(conn, spec, sink=MemorySink(spec.run_id, account_id), feed=feed, anomalies=[],
                          consensus="off")
        self.symbols = have

    # ---- prepared series
    def bars(self, sym: str):
        """The symbol's ``Bars`` (warm-up included)."""
        return self.eng.bars[sym]

    def config(self, name: str, ts: int):
        """The ``StrategyConfig`` of ``name`` in force at ``ts`` (Unix s), None when not configured then."""
        return self.eng.gates.get(name, int(ts))

    def prepared(self, sym: str, name: str, cfg):
        """The engine's prepared series of strategy ``name`` on ``sym`` under ``cfg`` (cached per indicator params)."""
        from . import get_strategy

        return self.eng.prepared(sym, get_strategy(name), cfg)

    def closed_index(self, sym: str, ts: int) -> int:
        """Index of the last bar of ``sym`` closed at or before ``ts`` (open + timeframe <= ts); -1 when none."""
        b = self.eng.bars[sym]
        return int(np.searchsorted(b.t, int(ts) - self.tf_s, side="right") - 1)

    # ---- hypothetical trades
    def simulate_entry(self, name: str, sym: str, decision_ts: int, side: str, notional_usd: float,
                       horizon_ts: int | None = None) -> ShadowTrade:
        """Play one entry decided at ``decision_ts`` (a bar close) forward with the engine's exit logic.

        Parameters
        ----------
        name : str
            Strategy.
        sym : str
            Symbol (one of ``self.symbols``).
        decision_ts : int
            Decision time, Unix s: the close of the decision bar (``signals.ts``).
        side : {'long', 'short'}
            Position side.
        notional_usd : float
            Entry size in USD at the decision close (qty = notional / close).
        horizon_ts : int, optional
            Stop walking at bars opening at or after this (Unix s); default: the last loaded bar.

        Returns
        -------
        ShadowTrade
            Closed (realized P&L net of both fees), open at the horizon (marked at the last close, entry fee
            included), or entry_rejected (the paper broker refused the fill, e.g. slippage over the limit).

        Raises
        ------
        AtsError
            When ``decision_ts`` is not the close of a loaded bar of ``sym``.
        """
        from ..engine import exits, fills, orders
        from ..engine.context import StepContext
        from ..execution.paper import PaperBroker
        from ..portfolio.book import Portfolio
        from ..risk.breakers import BreakerBoard

        eng, b = self.eng, self.eng.bars[sym]
        i = self.closed_index(sym, decision_ts)
        if i < 0 or int(b.t[i]) + self.tf_s != int(decision_ts):
            raise AtsError(f"{sym}: no {self.tf} bar closes at {_dt(decision_ts).isoformat()} (a feed gap?)")
        cfg = self.config(name, decision_ts)
        if cfg is None:
            raise AtsError(f"strategy {name!r} has no configuration at {_dt(decision_ts).isoformat()}")
        # a fresh book, broker and breaker board per hypothetical trade: it is judged on its own
        eng.pf, eng.broker, eng.board = Portfolio.new(SHADOW_CASH), PaperBroker(), BreakerBoard()
        eng._pend, eng._closing, eng.last_exit, eng.trades = [], set(), {}, {}
        price = float(b.close[i])
        qty = float(notional_usd) / price
        oside = "buy" if side == "long" else "sell"
        order = orders.submit(eng, name, sym, oside, side, "open", qty, i, int(decision_ts), None, None,
                              {"params": dict(cfg.params), "shadow": True})
        trade = ShadowTrade(name, sym, side, int(decision_ts), price, qty, "open")
        key = (name, sym)
        pos = None
        last = len(b) - 1
        for j in range(i + 1, len(b)):
            T = int(b.t[j])
            if horizon_ts is not None and T >= horizon_ts:
                break
            C = T + self.tf_s
            s = eng.settings.at(C)
            for rep in eng.broker.on_bar(sym, T, float(b.open[j]), float(b.high[j]), float(b.low[j]),
                                         float(b.close[j]), float(b.volume[j]), s):
                fills.on_report(eng, rep, T)
            if order.status == "rejected":
                trade.status, trade.reason = "entry_rejected", order.reject_reason
                return trade
            if pos is None:
                pos = eng.pf.positions.get(key)
                if pos is not None:
                    trade.entry_ts, trade.entry_price = pos.opened_at, pos.avg_entry
            if pos is not None and pos.status == "closed":
                return self._closed(trade, pos)
            last = j
            eng.marks[sym] = float(b.close[j])
            eng.cur_index = {sym: j}
            eng._pend = eng.broker.pending()
            eng._closing = {o.position_id for o in eng._pend if o.intent == "close"}
            if pos is not None and pos.position_id not in eng._closing:
                exits.check_exit(eng, pos, j, StepContext(T, C, s, eng.pf.equity(eng.marks)))
        if pos is None:
            trade.status, trade.reason = "not_filled", "no bar after the decision to fill the entry"
            return trade
        mark = float(b.close[last])
        trade.pnl_usd = pos.unrealized(mark)
        trade.fees_usd = pos.fees_usd
        entry_value = pos.avg_entry * pos.entry_qty
        trade.return_pct = 100.0 * trade.pnl_usd / entry_value if entry_value else 0.0
        trade.exit_price, trade.exit_ts = mark, int(b.t[last]) + self.tf_s
        trade.hold_hours = round((trade.exit_ts - pos.opened_at) / 3600.0, 2)
        trade.reason = "still open at the last bar: marked at its close"
        return trade

    @staticmethod
    def _closed(trade: ShadowTrade, pos) -> ShadowTrade:
        trade.status = "closed"
        trade.exit_ts, trade.exit_price, trade.exit_reason = pos.closed_at, pos.avg_exit, pos.close_reason
        trade.pnl_usd, trade.fees_usd = pos.realized_usd, pos.fees_usd
        entry_value = pos.avg_entry * pos.entry_qty
        trade.return_pct = 100.0 * pos.realized_usd / entry_value if entry_value else 0.0
        trade.hold_hours = round((pos.closed_at - pos.opened_at) / 3600.0, 2)
        return trade
