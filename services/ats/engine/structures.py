"""Multi-leg options structures in the engine: entries, marks and exits of strategies that declare ``multi_leg``
(``ats.strategies.options``; today ``iron_condor``).

The same decision path as every entry: the signal row, the lessons, :func:`ats.engine.entries.check_gates` (buy gate,
regime, cooldown, breakers, risk limits and fractional-Kelly sizing) and the consensus vote; then the structure's own
pre-trade checks, first failure -> ``blocked_signals``:

    risk:multi_leg       the broker cannot place a multi-leg order as ONE order (``supports_mleg``): a multi-leg
                         strategy never trades leg by leg (the paper and Bybit brokers; replays)
    risk:open_structure  this strategy already has a structure (open or pending) on the underlying
    cooldown             its last structure on the underlying closed less than ``cooldown_min`` ago
    risk:option_chain    the venue's chain / quotes could not be read, or no expiry / strikes fit the params
    risk:min_credit      the mid credit is below ``min_credit_pct`` % of the wing
    risk:max_loss        not one condor fits: max loss per condor > the risk notional (defined risk: the number of
                         structures = floor(notional / max loss), at most ``max_contracts``)

A passing signal becomes ONE order (``orders.submit``) on the structure's own symbol (``condor_symbol``: never the
underlying's, so marks do not mix), qty = structures, decision price = mid credit (USD per structure), context
``structure`` = the legs (the Alpaca broker sends them as one MLEG order and checks it is one). Its position carries
the structure in ``positions.context``; each bar :func:`mark` values it at the legs' mid from the venue
(``broker.structure_value``: USD per structure) and :func:`check_exits` applies stop loss, take profit, expiry
(``exit_dte_days``), max hold and the strategy's exit signal (on the underlying's bars); the exit is a close order
carrying the structure, which the broker sends as ``close_position`` per leg. Breakers never block exits.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import datetime, timezone

from ..errors import AtsError
from ..regime.rules import NAME as REGIME_NAME
from ..strategies import get_strategy
from ..strategies.options import CONTRACT_MULTIPLIER, choose_iron_condor, condor_symbol
from . import entries, exits
from .context import EntryCandidate, StepContext
from .orders import block, submit
from .sink import RawJson

_STRUCTURE_PARAMS = ("exit_dte_days",)


def is_multi_leg(strat) -> bool:
    """Whether ``strat`` trades multi-leg structures (declares ``multi_leg``)."""
    return bool(getattr(strat, "multi_leg", None))


def on_entry_signal(eng, ctx: StepContext, strat, cfg, prep, sym: str, i: int, sig: int) -> None:
    """Handle one entry signal of a multi-leg strategy on underlying ``sym`` (see the module docstring).

    Parameters are those of :func:`ats.engine.entries.on_entry_signal`; ``sig`` -1 opens a short (credit)
    structure, +1 a long (debit) one.
    """
    pside = "long" if sig > 0 else "short"
    side = "buy" if sig > 0 else "sell"
    cand = EntryCandidate(strat, cfg, sym, i, pside, side, "open", None)
    C = ctx.C
    spot = float(eng.bars[sym].close[i])
    sctx = prep.context(i)
    sig_id = eng.sink.next_id("signals")
    eng.stats["signals"] += 1
    blocking = eng.board.blocking(sym)
    consultation = eng.lessons.at(C).consult(entries.trade_context(eng, ctx, cand, blocking))
    sctx.update(consultation.audit())
    gate, reason, extra = entries.check_gates(eng, ctx, cand, blocking, consultation)
    params = {k: cfg.params[k] for k in entries._ORDER_PARAMS + _STRUCTURE_PARAMS if k in cfg.params}
    if gate is None and eng.consensus.applies(strat.name, C):
        gate, reason = entries._consensus_gate(eng, ctx, cand, spot, sctx, consultation, params)
    plan = n = None
    if gate is None:
        gate, reason, plan, n = _structure_gates(eng, strat, cfg, sym, spot, C, extra["notional"])
    if extra:
        sctx.update({k: v for k, v in extra.items() if k != "notional"})
    if plan is not None:
        sctx["structure"] = {**plan.as_dict(), "contracts": n}
    status = "accepted" if gate is None else "blocked"
    eng.sink.add("signals", (sig_id, eng.run_id, eng.account, strat.name, sym, eng.tf, C, side, "open", pside,
                             spot, float(prep.strength[i]),
                             REGIME_NAME.get(ctx.reg_code) if eng.regime else None, status, sctx))
    if gate is not None:
        block(eng, sig_id, strat.name, sym, C, gate, reason, sctx)
        return
    from ..execution.alpaca import iron_condor_legs

    st = iron_condor_legs(plan.underlying, plan.expiry, plan.strikes, n)
    submit(eng, strat.name, condor_symbol(plan), side, pside, "open", float(n), i, C, sig_id, None,
           ctx={"sizing": extra.get("risk"), "params": params, "config_valid_from": entries._iso(cfg.valid_from),
                "structure": asdict(st), "plan": plan.as_dict(), "max_loss_usd": round(plan.max_loss_usd * n, 2)},
           price=plan.credit_usd, volume=0.0)
    eng.last_entry[cand.key] = C
    eng._reserved += plan.max_loss_usd * n
    eng._pending_opens += 1


def _structure_gates(eng, strat, cfg, sym: str, spot: float, C: int, notional: float):
    """The structure's pre-trade checks; returns (gate, reason, plan, structures) with gate None when they pass."""
    p = cfg.params
    if not getattr(eng.broker, "supports_mleg", False) or not hasattr(eng.broker, "option_chain"):
        return ("risk:multi_leg", f"broker {eng.broker.name} cannot place a multi-leg order as ONE order; "
                f"{strat.name} never trades leg by leg", None, None)
    for pos in eng.pf.positions.values():
        if pos.strategy == strat.name and _underlying(pos) == sym:
            return ("risk:open_structure", f"an open {strat.name} on {sym} (position {pos.position_id}, "
                    f"{pos.symbol})", None, None)
    for o in eng._pend:
        if o.strategy == strat.name and (o.context.get("structure") or {}).get("underlying") == sym:
            return "risk:open_structure", f"a pending {strat.name} order on {sym} ({o.symbol})", None, None
    cd = float(p.get("cooldown_min") or 0) * 60
    last = max((v for (s, x), v in eng.last_exit.items() if s == strat.name and x.split("-", 1)[0] == sym),
               default=-1)
    if cd > 0 and last >= 0 and C - last < cd:
        return ("cooldown", f"last {strat.name} on {sym} closed {int((C - last) / 60)} min ago < cooldown "
                f"{p['cooldown_min']} min", None, None)
    today = datetime.fromtimestamp(C, tz=timezone.utc).date()
    lo = today.fromordinal(today.toordinal() + int(p["dte_min_days"])).isoformat()
    hi = today.fromordinal(today.toordinal() + int(p["dte_max_days"])).isoformat()
    wing, otm = float(p["wing_width_usd"]), float(p["short_otm_pct"]) / 100.0
    try:
        chain = eng.broker.option_chain(sym, lo, hi, strike_gte=spot * (1 - otm) - 3 * wing,
                                        strike_lte=spot * (1 + otm) + 3 * wing)
        plan, why = choose_iron_condor(chain, spot, today, p)
        if plan is None:
            return "risk:option_chain", f"{sym}: {why}", None, None
        quotes = eng.broker.option_quotes(plan.symbols)
    except AtsError as e:
        return "risk:option_chain", f"{sym}: option chain / quotes not read: {e}"[:500], None, None
    plan, _ = choose_iron_condor(chain, spot, today, p, quotes)
    if not math.isfinite(plan.credit_usd):
        return "risk:option_chain", f"{sym}: no quote for a leg of {', '.join(plan.symbols)}", plan, None
    need = float(p["min_credit_pct"]) / 100.0 * plan.width_usd
    if plan.credit_usd < need:
        return ("risk:min_credit", f"mid credit {plan.credit_usd:.2f} USD < {p['min_credit_pct']} % of the "
                f"{plan.width_usd:g} USD wing", plan, None)
    n = min(int(notional // plan.max_loss_usd), int(p["max_contracts"]))
    if n < 1:
        return ("risk:max_loss", f"max loss {plan.max_loss_usd:.2f} USD per condor > risk notional "
                f"{notional:.2f} USD", plan, None)
    return None, None, plan, n


def _underlying(pos) -> str | None:
    st = pos.context.get("structure")
    return st.get("underlying") if isinstance(st, dict) else None


def mark(eng, C: int) -> None:
    """Value every open structure position at the legs' mid (``broker.structure_value``): ``eng.marks[symbol]``
    = USD per structure, the price of a close (a short credit structure: what buying it back costs). A failed read
    drops the mark (the portfolio values the position at its entry price, its exit is not checked this bar) and
    writes a ``structure_mark_failed`` warning event."""
    fn = getattr(eng.broker, "structure_value", None)
    for pos in list(eng.pf.positions.values()):
        st = pos.context.get("structure")
        if not isinstance(st, dict):
            continue
        eng.marks.pop(pos.symbol, None)
        if fn is None:
            continue
        from ..execution.alpaca import _structure_from_dict

        try:
            v = float(fn(_structure_from_dict(st)))
        except AtsError as e:
            eng.sink.add("system_events", (C, eng.account, "engine", "structure_mark_failed", "warning",
                                           pos.symbol, {"run_id": eng.run_id, "position_id": pos.position_id,
                                                        "error": str(e)[:300]}))
            continue
        eng.marks[pos.symbol] = v if pos.side == "long" else -v


def check_exits(eng, ctx: StepContext) -> None:
    """Check every open structure position not being closed (see the module docstring); writes a
    ``position_evaluations`` row per check and, on an exit, the close signal and order (``exits._send_exit``: the
    sell gate and a HALTED state apply as for every position)."""
    C = ctx.C
    for pos in list(eng.pf.positions.values()):
        und = _underlying(pos)
        if und is None or pos.position_id in eng._closing:
            continue
        i = eng.cur_index.get(und)
        c = eng.marks.get(pos.symbol)
        if i is None or c is None:
            continue
        long = pos.side == "long"
        pnl_pct = pos.pnl_pct(c)
        if (long and c > pos.best_price) or (not long and c < pos.best_price):
            pos.best_price = c
        decision, reason = decide(eng, pos, und, i, c, C)
        if decision != "hold":
            decision, reason = exits._send_exit(eng, pos, i, c, C, decision, reason, pnl_pct)
        eng.stats["evaluations"] += 1
        eng.sink.add("position_evaluations", (pos.position_id, eng.run_id, C, c, pnl_pct, pos.tp_price,
                                              pos.sl_price, pos.trail_stop, (C - pos.opened_at) / 60.0, decision,
                                              reason, RawJson('{"best_price":%s}' % float.__repr__(pos.best_price))))


def decide(eng, pos, und: str, i: int, c: float, C: int) -> tuple[str, str | None]:
    """The exit decision of a structure position at its mark ``c`` (USD per structure), in precedence: stop loss,
    take profit, expiry (days to the legs' expiry <= ``exit_dte_days``), max hold, the strategy's exit signal on
    the underlying's bar ``i``. Returns ('hold', None) or (exit_sl | exit_tp | exit_expiry | exit_max_hold |
    exit_signal, reason)."""
    p = pos.params
    long = pos.side == "long"
    if pos.sl_price is not None and exits.crossed_down_or_up(c, pos.sl_price, long):
        return "exit_sl", f"value {c:.2f} USD crossed stop loss {pos.sl_price:.2f}"
    if pos.tp_price is not None and exits.reached_target(c, pos.tp_price, long):
        return "exit_tp", f"value {c:.2f} USD reached take profit {pos.tp_price:.2f}"
    legs = pos.context["structure"]["legs"]
    exp = min(datetime.strptime(lg["symbol"][-15:-9], "%y%m%d").replace(tzinfo=timezone.utc) for lg in legs)
    dte = (exp.timestamp() - C) / 86400.0
    if dte <= float(p.get("exit_dte_days") or 0):
        return "exit_expiry", f"{dte:.1f} days to expiry {exp:%Y-%m-%d} <= {p.get('exit_dte_days')}"
    if exits.max_hold_hit(C, pos.opened_at, float(p.get("max_hold_hours") or 0)):
        return "exit_max_hold", f"held {(C - pos.opened_at) / 3600.0:.1f} h >= max {p['max_hold_hours']} h"
    cfg = eng.gates.get(pos.strategy, C)
    if cfg is not None:
        prep = eng.prepared(und, get_strategy(pos.strategy), cfg)
        if (prep.exit_long[i] if long else prep.exit_short[i]):
            return "exit_signal", f"{pos.strategy} exit signal on {und}"
    return "hold", None


__all__ = ["CONTRACT_MULTIPLIER", "check_exits", "decide", "is_multi_leg", "mark", "on_entry_signal"]
