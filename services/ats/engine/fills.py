"""Fills: broker execution reports turned into positions, cash, fees and closed trades (ats.portfolio.book).

Quantities in base units, prices in the quote currency, fees in USD, times Unix s.
"""

from __future__ import annotations

from ..errors import AtsError
from ..portfolio.book import Position


def on_report(eng, rep, T: int) -> None:
    """Apply one execution report of the bar opening at ``T``.

    A rejected/cancelled order becomes a ``system_events`` warning; each fill a ``fills`` row and a position
    change (open, add, partial or full close; a full close records the trade's return for Kelly sizing and its
    net P&L for the breakers).

    Parameters
    ----------
    eng : Engine
        The engine.
    rep : BrokerReport
        The report.
    T : int
        Bar open time, Unix s.

    Raises
    ------
    AtsError
        When a fill does not match the position it belongs to (the engine never invents one).
    """
    o = rep.order
    eng.sink.order_changed(o)
    if rep.status in ("rejected", "cancelled"):
        eng.stats["rejected"] += 1
        eng.sink.add("system_events", (T, eng.account, "broker", f"order_{rep.status}", "warning", o.symbol,
                                       {"client_order_id": o.client_order_id, "reason": rep.reject_reason,
                                        "intent": o.intent, "run_id": eng.run_id}))
        return
    for f in rep.fills:
        eng.stats["fills"] += 1
        eng.sink.add("fills", (o.order_id, o.client_order_id, f.fill_seq, eng.run_id, eng.account, o.symbol,
                               o.side, f.qty, f.price, f.fee_usd, f.liquidity, f.slippage_bps, f.ts))
        if o.intent in ("open", "add"):
            _entry_fill(eng, o, f)
        else:
            _exit_fill(eng, o, f)


def _entry_fill(eng, o, f) -> None:
    key = (o.strategy, o.symbol)
    pos = eng.pf.positions.get(key)
    if o.intent == "open" and pos is None:
        pos = Position(position_id=eng.sink.next_id("positions"), strategy=o.strategy, symbol=o.symbol,
                       side=o.position_side, opened_at=f.ts, entry_signal_id=o.signal_id,
                       params=dict(o.context.get("params") or {}),
                       context={"open_client_order_id": o.client_order_id,
                                **({"structure": o.context["structure"]} if "structure" in o.context else {})})
        eng.pf.positions[key] = pos
        eng.pf.apply_entry(pos, f.qty, f.price, f.fee_usd)
        pos.best_price = f.price
        set_targets(eng, pos, f.ts, "initial")
    elif o.intent == "add" and pos is not None and pos.position_id == o.position_id:
        eng.pf.apply_entry(pos, f.qty, f.price, f.fee_usd)
        pos.adds += 1
        set_targets(eng, pos, f.ts, "add_recalc")
    else:  # the engine never sends these; refuse to invent a position
        raise AtsError(f"{o.client_order_id}: {o.intent} fill does not match the open position "
                       f"({None if pos is None else pos.position_id})")
    o.position_id = pos.position_id
    eng.sink.position_changed(pos)


def _exit_fill(eng, o, f) -> None:
    key = (o.strategy, o.symbol)
    pos = eng.pf.positions.get(key)
    if pos is None or pos.position_id != o.position_id:
        raise AtsError(f"{o.client_order_id}: close fill without its open position {o.position_id}")
    eng.pf.apply_exit(pos, f.qty, f.price, f.fee_usd)
    if pos.qty <= 0:
        pos.status, pos.closed_at = "closed", f.ts
        pos.close_reason = (o.context or {}).get("exit_reason", "signal")
        del eng.pf.positions[key]
        eng.last_exit[key] = f.ts
        entry_value = pos.avg_entry * pos.entry_qty
        ret = pos.realized_usd / entry_value if entry_value else 0.0
        eng.trades.setdefault(pos.strategy, []).append(ret)
        eng.trades[pos.strategy] = eng.trades[pos.strategy][-200:]
        eng.board.record_trade(pos.realized_usd)
        eng.stats["closed_trades"] += 1
        if pos.realized_usd > 0:
            eng.stats["wins"] += 1
    eng.sink.position_changed(pos)


def set_targets(eng, pos: Position, ts: int, reason: str) -> None:
    """Set take profit and stop loss from the average entry and write a ``position_targets`` row.

    TP = avg_entry x (1 + sign x tp_pct / 100), SL = avg_entry x (1 - sign x sl_pct / 100); 0 % means none.

    Parameters
    ----------
    eng : Engine
        The engine.
    pos : Position
        The position (tp_price, sl_price set).
    ts : int
        Unix s.
    reason : {'initial', 'add_recalc'}
        Why the targets changed.
    """
    p = pos.params
    tp, sl = float(p.get("tp_pct") or 0), float(p.get("sl_pct") or 0)
    sgn = pos.sign
    pos.tp_price = pos.avg_entry * (1 + sgn * tp / 100) if tp > 0 else None
    pos.sl_price = pos.avg_entry * (1 - sgn * sl / 100) if sl > 0 else None
    eng.sink.add("position_targets", (pos.position_id, eng.run_id, ts, pos.tp_price, pos.sl_price, pos.trail_stop,
                                      reason))
