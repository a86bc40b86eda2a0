"""Orders and blocked signals of the engine: the one place an order gets its client id and reaches the broker."""

from __future__ import annotations

from ..execution.broker import Order, client_order_id


def submit(eng, strategy: str, sym: str, side: str, pside: str, intent: str, qty: float, i: int, C: int,
           sig_id: int, position_id: int | None, ctx: dict, parent: str | None = None, *,
           price: float | None = None, volume: float | None = None) -> Order:
    """Build an order decided at close ``C`` (Unix s) on bar ``i`` of ``sym`` and submit it to ``eng.broker``.

    Parameters
    ----------
    eng : Engine
        The engine (sink ids, broker, pending list, stats).
    strategy, sym, side, pside, intent : str
        Strategy, symbol, buy|sell, long|short, open|add|close.
    qty : float
        Base units.
    i, C : int
        Decision bar index and decision time (Unix s).
    sig_id : int
        The signal's id.
    position_id : int or None
        The position an add or close belongs to.
    ctx : dict
        Order context (sizing, params or exit reason).
    parent : str, optional
        Client id of the order that must fill first (a reversal's close).
    price, volume : float, optional
        The decision price / volume when ``sym`` has no bars of its own (a multi-leg structure,
        ``ats.engine.structures``); default bar ``i``'s close and volume, else ``eng.marks[sym]`` and 0.

    Returns
    -------
    Order
        The submitted order; its ``client_order_id`` is deterministic (``client_order_id``; at most the broker's
        ``max_client_id_len`` characters when it declares one).
    """
    b = eng.bars.get(sym)
    if price is None:
        price = float(b.close[i]) if b is not None else float(eng.marks[sym])
    if volume is None:
        volume = float(b.volume[i]) if b is not None else 0.0
    cid = client_order_id(eng.run_id, strategy, sym, C, intent, side,
                          max_len=getattr(eng.broker, "max_client_id_len", None))
    o = Order(order_id=eng.sink.next_id("order_executions"), client_order_id=cid,
              strategy=strategy, symbol=sym, side=side, position_side=pside, intent=intent, qty=float(qty),
              decision_price=float(price), decision_volume=float(volume), submitted_at=C,
              signal_id=sig_id, position_id=position_id, updated_at=C, context=ctx,
              parent_client_order_id=parent)
    eng.broker.submit(o)
    eng._pend.append(o)
    eng.sink.order_changed(o)
    eng.stats["orders"] += 1
    return o


def block(eng, sig_id: int, strategy: str, sym: str, C: int, gate: str, reason: str, ctx: dict) -> None:
    """Write a ``blocked_signals`` row and count it per gate.

    Parameters
    ----------
    eng : Engine
        The engine.
    sig_id : int
        The signal's id.
    strategy, sym : str
        Strategy and symbol.
    C : int
        Decision time, Unix s.
    gate : str
        The first failing gate (buy_gate, regime, cooldown, breaker:<name>, risk:<limit>, sell_gate).
    reason : str
        Why, in one line.
    ctx : dict
        The signal's context.
    """
    eng.sink.add("blocked_signals", (sig_id, eng.run_id, eng.account, strategy, sym, C, gate, reason, ctx))
    bl = eng.stats["blocked"]
    bl[gate] = bl.get(gate, 0) + 1
