"""Exits: every open position is checked at each decision time for stop loss, take profit, trailing stop, max hold
and the strategy's exit signal (in that order of precedence). Breakers never block exits (only a HALTED trading
state would). The predicates below work on one close (float) or on a span of closes (numpy array): the quiet-span
fast path asks the same rules over many steps at once.

Prices in the quote currency; percent values are percents; hold times in minutes.
"""

from __future__ import annotations

import numpy as np

from ..portfolio.book import Position
from ..strategies import get_strategy
from .context import StepContext
from .orders import block, submit
from .sink import RawJson


def crossed_down_or_up(c, level: float, long: bool):
    """True where close ``c`` is at or through a stop ``level`` against the position.

    Parameters
    ----------
    c : float or numpy.ndarray
        Close(s) (quote currency).
    level : float
        Stop price (stop loss or trailing stop).
    long : bool
        Position side (long: c <= level; short: c >= level).

    Returns
    -------
    bool or numpy.ndarray of bool
        Same shape as ``c``.
    """
    return (c <= level) if long else (c >= level)


def reached_target(c, level: float, long: bool):
    """True where close ``c`` reached the take-profit ``level``.

    Parameters
    ----------
    c : float or numpy.ndarray
        Close(s) (quote currency).
    level : float
        Take-profit price.
    long : bool
        Position side (long: c >= level; short: c <= level).

    Returns
    -------
    bool or numpy.ndarray of bool
        Same shape as ``c``.
    """
    return (c >= level) if long else (c <= level)


def max_hold_hit(C, opened_at: int, max_hold_hours: float):
    """True where the hold time reached the maximum.

    Parameters
    ----------
    C : int or numpy.ndarray
        Decision time(s), Unix s.
    opened_at : int
        Position open time, Unix s.
    max_hold_hours : float
        Limit in hours; <= 0 means none (all False).

    Returns
    -------
    bool or numpy.ndarray of bool
        (C - opened_at) / 60 >= max_hold_hours x 60, same shape as ``C``.
    """
    if max_hold_hours <= 0:
        return False if np.ndim(C) == 0 else np.zeros(np.shape(C), dtype=bool)
    return (C - opened_at) / 60.0 >= max_hold_hours * 60


def _raise_trailing(eng, pos: Position, C: int) -> None:
    """Tighten the trailing stop from the best price once the activation P&L is reached (never loosens)."""
    p = pos.params
    tr_pct = float(p.get("trailing_pct") or 0)
    if tr_pct <= 0:
        return
    long = pos.side == "long"
    if pos.pnl_pct(pos.best_price) >= float(p.get("trailing_activation_pct") or 0):
        stop = pos.best_price * (1 - tr_pct / 100) if long else pos.best_price * (1 + tr_pct / 100)
        if pos.trail_stop is None or (long and stop > pos.trail_stop) or (not long and stop < pos.trail_stop):
            pos.trail_stop = stop
            eng.sink.add("position_targets", (pos.position_id, eng.run_id, C, pos.tp_price, pos.sl_price, stop,
                                              "trail_raise"))
            eng.sink.position_changed(pos)


def decide(eng, pos: Position, i: int, c: float, C: int) -> tuple[str, str | None]:
    """The exit decision for ``pos`` at close ``c`` (precedence: stop loss, take profit, trailing, max hold, signal).

    Parameters
    ----------
    eng : Engine
        The engine (configurations, prepared strategy series).
    pos : Position
        The open position.
    i : int
        Bar index of the decision bar in ``pos.symbol``'s bars.
    c : float
        That bar's close.
    C : int
        Decision time, Unix s.

    Returns
    -------
    tuple of (str, str or None)
        ('hold', None) or (exit_sl | exit_tp | exit_trailing | exit_max_hold | exit_signal, reason).
    """
    p = pos.params
    long = pos.side == "long"
    if pos.sl_price is not None and crossed_down_or_up(c, pos.sl_price, long):
        return "exit_sl", f"close {c:g} crossed stop loss {pos.sl_price:g}"
    if pos.tp_price is not None and reached_target(c, pos.tp_price, long):
        return "exit_tp", f"close {c:g} reached take profit {pos.tp_price:g}"
    if pos.trail_stop is not None and crossed_down_or_up(c, pos.trail_stop, long):
        return "exit_trailing", f"close {c:g} crossed trailing stop {pos.trail_stop:g}"
    if max_hold_hit(C, pos.opened_at, float(p.get("max_hold_hours") or 0)):
        return "exit_max_hold", f"held {(C - pos.opened_at) / 60.0 / 60:.1f} h >= max {p['max_hold_hours']} h"
    cfg = eng.gates.get(pos.strategy, C)
    if cfg is not None:
        prep = eng.prepared(pos.symbol, get_strategy(pos.strategy), cfg)
        if (prep.exit_long[i] if long else prep.exit_short[i]):
            return "exit_signal", f"{pos.strategy} exit signal"
    return "hold", None


def check_exit(eng, pos: Position, i: int, ctx: StepContext) -> None:
    """Evaluate ``pos`` at bar ``i`` and act on the decision.

    Writes a ``position_evaluations`` row and, on an exit, a close signal and order - or a blocked signal when the
    strategy's sell gate is off ('sell_gate') or the trading state is HALTED ('breaker:<name>').

    Parameters
    ----------
    eng : Engine
        The engine.
    pos : Position
        The open position (best price and trailing stop updated).
    i : int
        Bar index of the decision bar in ``pos.symbol``'s bars.
    ctx : StepContext
        The step (decision time ``ctx.C``).
    """
    C = ctx.C
    c = float(eng.bars[pos.symbol].close[i])
    long = pos.side == "long"
    pnl_pct = pos.pnl_pct(c)
    if (long and c > pos.best_price) or (not long and c < pos.best_price):
        pos.best_price = c
    _raise_trailing(eng, pos, C)
    hold_min = (C - pos.opened_at) / 60.0
    decision, reason = decide(eng, pos, i, c, C)
    if decision != "hold":
        decision, reason = _send_exit(eng, pos, i, c, C, decision, reason, pnl_pct)
    eng.stats["evaluations"] += 1
    eng.sink.add("position_evaluations", (pos.position_id, eng.run_id, C, c, pnl_pct, pos.tp_price, pos.sl_price,
                                          pos.trail_stop, hold_min, decision, reason,
                                          RawJson('{"best_price":%s}' % float.__repr__(pos.best_price))))


def _send_exit(eng, pos, i, c, C, decision, reason, pnl_pct) -> tuple[str, str]:
    cfg = eng.gates.get(pos.strategy, C)
    sell_ok = cfg.sell if cfg is not None else True
    halted = eng.board.trading_state(pos.symbol).value == "HALTED"
    side = "sell" if pos.side == "long" else "buy"
    sig_id = eng.sink.next_id("signals")
    eng.stats["signals"] += 1
    sctx = {"exit": decision, "reason": reason, "pnl_pct": round(pnl_pct, 4), "position_id": pos.position_id}
    status = "accepted" if sell_ok and not halted else "blocked"
    eng.sink.add("signals", (sig_id, eng.run_id, eng.account, pos.strategy, pos.symbol, eng.tf, C, side, "close",
                             pos.side, c, None, eng.regime_name(), status, sctx))
    if status == "accepted":
        octx = {"exit_reason": decision[5:], "reason": reason}
        if "structure" in pos.context:  # a multi-leg position closes leg by leg at the venue (ats.engine.structures)
            octx["structure"] = pos.context["structure"]
        submit(eng, pos.strategy, pos.symbol, side, pos.side, "close", pos.qty, i, C, sig_id, pos.position_id, octx)
        eng._closing.add(pos.position_id)
        return decision, reason
    if not sell_ok:
        block(eng, sig_id, pos.strategy, pos.symbol, C, "sell_gate",
              f"sell gate of {pos.strategy} is off: exit ({decision}) not sent", sctx)
        return "exit_blocked", f"{reason}; blocked: sell gate off"
    first = eng.board.blocking(pos.symbol)[0]
    block(eng, sig_id, pos.strategy, pos.symbol, C, f"breaker:{first.breaker}",
          f"trading HALTED by {first.breaker}: exit ({decision}) not sent", sctx)
    return "exit_blocked", f"{reason}; blocked: trading halted ({first.breaker})"


def first_exit_step(eng, pos: Position, cfg, i0: int, C: np.ndarray) -> int | None:
    """The first step of a span where ``decide`` would exit ``pos`` (the fast path's question).

    Parameters
    ----------
    eng : Engine
        The engine.
    pos : Position
        The open position.
    cfg : StrategyConfig or None
        Its strategy's configuration in force over the span.
    i0 : int
        Bar index of the span's first step in ``pos.symbol``'s bars.
    C : numpy.ndarray, shape (W,)
        Decision times of the span (Unix s).

    Returns
    -------
    int or None
        Offset of the first exit step, None when none; -1 when a trailing stop is in play (not modelled in bulk).
    """
    p = pos.params
    if float(p.get("trailing_pct") or 0) > 0 or pos.trail_stop is not None:
        return -1
    W = len(C)
    c = eng.bars[pos.symbol].close[i0:i0 + W]
    long = pos.side == "long"
    hit = np.zeros(W, dtype=bool)
    if pos.sl_price is not None:
        hit |= crossed_down_or_up(c, pos.sl_price, long)
    if pos.tp_price is not None:
        hit |= reached_target(c, pos.tp_price, long)
    hit |= max_hold_hit(C, pos.opened_at, float(p.get("max_hold_hours") or 0))
    if cfg is not None:
        prep = eng.prepared(pos.symbol, get_strategy(pos.strategy), cfg)
        hit |= (prep.exit_long if long else prep.exit_short)[i0:i0 + W]
    return int(np.argmax(hit)) if hit.any() else None
