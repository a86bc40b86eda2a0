"""Entries: signal -> gates -> breakers -> risk -> order.

Each entry signal of a watchlisted strategy becomes a ``signals`` row. Before the gates, the lessons learned are
consulted (``ats.engine.advice``: the candidate's TradeContext -> ``LessonBook.consult``) and the top-k lesson ids
and scores go in the signal's audit context (``signals.context.lessons``) for every candidate. The gates run in
order - buy_gate, regime (longs pause in a confirmed bear, shorts in a confirmed bull), risk:opposite_position /
position_closing / pending_order, cooldown, lesson:LL-NNN (a lesson's prevention rule the entry violates),
microstructure (the strategy's declared funding / open-interest / long-short conditions as of the bar,
``ats.risk.microstructure_gate``; missing data blocks with reason ``microstructure:no_data``), breaker:<name> (``ats.risk.breakers``), risk:<limit> (``ats.risk.limits.check_entry`` with fractional-Kelly sizing),
consensus (strategies in ``consensus.strategies``: the model vote, ``ats.risk.consensus``; its agreeing parameters
override the order's tp_pct / sl_pct / ...) - and the first failing one is written to ``blocked_signals``; a
signal that passes becomes an order (``orders.submit``) for the next bar's open. Sizes in USD.
"""

from __future__ import annotations

from ..regime.rules import NAME as REGIME_NAME
from ..regime.rules import pauses
from ..risk import microstructure_gate
from ..risk.limits import check_entry, exposure_correlation
from ..risk.sizing import estimate as kelly_estimate
from .advice import decision_audit, trade_context
from .context import EntryCandidate, StepContext
from .orders import block, submit

_ORDER_PARAMS = ("tp_pct", "sl_pct", "trailing_pct", "trailing_activation_pct", "max_hold_hours", "max_adds")


def on_entry_signal(eng, ctx: StepContext, strat, cfg, prep, sym: str, i: int, sig: int) -> None:
    """Handle one entry signal: write it, run the gates, then block it or submit its order.

    Parameters
    ----------
    eng : Engine
        The engine.
    ctx : StepContext
        The step (decision time, settings, equity, regime).
    strat : object
        The strategy.
    cfg : StrategyConfig
        Its configuration in force.
    prep : object
        Its prepared series for ``sym`` (entry, strength, context(i)).
    sym : str
        Symbol.
    i : int
        Bar index of the decision bar.
    sig : int
        +1 long, -1 short.
    """
    pside = "long" if sig > 0 else "short"
    pos = eng.pf.positions.get((strat.name, sym))
    intent = "add" if (pos is not None and pos.side == pside) else "open"
    cand = EntryCandidate(strat, cfg, sym, i, pside, "buy" if sig > 0 else "sell", intent, pos)
    C = ctx.C
    price = float(eng.bars[sym].close[i])
    sctx = prep.context(i)
    sig_id = eng.sink.next_id("signals")
    eng.stats["signals"] += 1
    blocking = eng.board.blocking(sym)
    consultation = eng.lessons.at(C).consult(trade_context(eng, ctx, cand, blocking))
    sctx.update(consultation.audit())
    gate, reason, extra = check_gates(eng, ctx, cand, blocking, consultation)
    params = {k: cfg.params[k] for k in _ORDER_PARAMS}
    if gate is None and eng.consensus.applies(strat.name, C):
        gate, reason = _consensus_gate(eng, ctx, cand, price, sctx, consultation, params)
    status = "accepted" if gate is None else "blocked"
    if extra:
        sctx.update({k: v for k, v in extra.items() if k != "notional"})
    eng.sink.add("signals", (sig_id, eng.run_id, eng.account, strat.name, sym, eng.tf, C, cand.side, intent, pside,
                             price, float(prep.strength[i]),
                             REGIME_NAME.get(ctx.reg_code) if eng.regime else None, status, sctx))
    if gate is not None:
        block(eng, sig_id, strat.name, sym, C, gate, reason, sctx)
        return
    parent = None
    if pos is not None and intent == "open":  # reversal: the open executes only after the close filled
        parent = next((o.client_order_id for o in eng._pend
                       if o.position_id == pos.position_id and o.intent == "close"), None)
    submit(eng, strat.name, sym, cand.side, pside, intent, extra["notional"] / price, i, C, sig_id,
           pos.position_id if intent == "add" else None, parent=parent,
           ctx={"sizing": extra.get("risk"), "params": params,
                "config_valid_from": _iso(cfg.valid_from)})
    eng.last_entry[cand.key] = C
    eng._reserved += extra["notional"]
    if intent == "open":
        eng._pending_opens += 1


def _consensus_gate(eng, ctx: StepContext, cand: EntryCandidate, price: float, sctx: dict, consultation,
                    params: dict) -> tuple[str | None, str | None]:
    """Ask the consensus gate; record its decision in ``sctx['consensus']``; apply the agreeing params to
    ``params`` (order parameters, in place). Returns (None, None) to enter, else ('consensus', summary)."""
    titles = eng.lessons.titles()
    cand_doc = {"strategy": cand.strat.name, "symbol": cand.sym, "side": cand.pside, "price": price,
                "regime": REGIME_NAME.get(ctx.reg_code) if eng.regime else None,
                "decision_time": _iso(ctx.C), "params": dict(params)}
    d = eng.consensus.decide(cand_doc, [{"ll": ll, "title": titles.get(ll, "")} for ll, _ in consultation.retrieved],
                             ctx.C)
    sctx["consensus"] = decision_audit(d, eng.consensus.mode)
    if not d.enter:
        return "consensus", d.summary
    for k, v in d.params.items():
        if k in params:
            params[k] = v
    return None, None


def _iso(t: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def check_gates(eng, ctx: StepContext, cand: EntryCandidate, blocking=None,
                consultation=None) -> tuple[str | None, str | None, dict | None]:
    """Run the gates in order for ``cand`` (all but the consensus vote).

    Parameters
    ----------
    eng : Engine
        The engine.
    ctx : StepContext
        The step.
    cand : EntryCandidate
        The candidate.
    blocking : list of BreakerState, optional
        ``eng.board.blocking(cand.sym)`` when the caller has it.
    consultation : Consultation, optional
        What the lessons said (``LessonBook.consult``); a violated rule is the gate ``lesson:LL-NNN``.
        The microstructure gate runs next (``ats.risk.microstructure_gate.check``), then the breakers.

    Returns
    -------
    tuple of (str or None, str or None, dict or None)
        (gate, reason, extra): gate None when every check passed, and then ``extra['notional']`` is the order
        size (USD) and ``extra['risk']`` the sizing context; otherwise the first failing gate and why.
    """
    hit = _position_gates(eng, ctx, cand)
    if hit is not None:
        return hit
    if consultation is not None and consultation.blocked_by:
        return f"lesson:{consultation.blocked_by}", consultation.reason, None
    mgate, mreason, mextra = microstructure_gate.check(eng, cand, ctx.C)
    if mgate is not None:
        return mgate, mreason, mextra
    if blocking is None:
        blocking = eng.board.blocking(cand.sym)
    if blocking:
        first = blocking[0]
        return (f"breaker:{first.breaker}", f"circuit breaker {first.breaker} tripped: {first.cause}",
                {"breakers": [f"{x.breaker}:{x.scope}" for x in blocking], **(mextra or {})})
    gate, reason, extra = _risk_gate(eng, ctx, cand)
    if mextra:
        extra = {**(extra or {}), **mextra}
    return gate, reason, extra


def _position_gates(eng, ctx: StepContext, cand: EntryCandidate):
    """buy_gate, regime, opposite/closing position, pending order, cooldown: the first failing one or None."""
    strat, cfg, sym, pside, pos = cand.strat, cand.cfg, cand.sym, cand.pside, cand.pos
    if not cfg.buy:
        return "buy_gate", f"buy gate of {strat.name} is off (configuration valid from {_iso(cfg.valid_from)})", None
    if eng.regime is not None and cfg.params.get("regime_pause", True) and pauses(pside, ctx.reg_code, ctx.reg_conf):
        return "regime", f"{pside} entries pause in confirmed {REGIME_NAME[ctx.reg_code]} regime", None
    if pos is not None:
        closing = pos.position_id in eng._closing
        if pos.side != pside and not closing:
            return "risk:opposite_position", f"an open {pos.side} position of {strat.name} in {sym}", None
        if pos.side == pside and closing:
            return "risk:position_closing", f"the {pos.side} position of {strat.name} in {sym} is being closed", None
    if any(o.strategy == strat.name and o.symbol == sym and o.intent != "close" for o in eng._pend):
        return "risk:pending_order", "an entry order for this strategy and symbol is still pending", None
    cd = float(cfg.params.get("cooldown_min") or 0) * 60
    last = max(eng.last_entry.get(cand.key, -1), eng.last_exit.get(cand.key, -1))
    if cd > 0 and last >= 0 and ctx.C - last < cd:
        return ("cooldown", f"last entry/exit {int((ctx.C - last) / 60)} min ago < cooldown "
                f"{cfg.params['cooldown_min']} min", None)
    return None


def _risk_gate(eng, ctx: StepContext, cand: EntryCandidate):
    """Position/portfolio limits and fractional-Kelly sizing (``ats.risk.limits.check_entry``)."""
    s, pos, intent, sym, marks = ctx.settings, cand.pos, cand.intent, cand.sym, eng.marks
    pos_value = abs(pos.value(marks[sym])) if (pos is not None and intent == "add") else 0.0
    pnl_pct = pos.pnl_pct(marks[sym]) if (pos is not None and intent == "add") else None
    corr = correlation(eng, sym, cand.pside, s, cand.i) if intent == "open" else None
    k = kelly_estimate(eng.trades.get(cand.strat.name, []), multiplier=float(s["risk.kelly_multiplier"]),
                       cap_pct=float(s["risk.kelly_cap_pct"]), floor_pct=float(s["risk.kelly_floor_pct"]),
                       min_trades=int(s["risk.kelly_min_trades"]), lookback=int(s["risk.kelly_lookback_trades"]))
    # pending orders reserve exposure and cash; positions being closed release theirs (the close fills first)
    cash = eng.pf.cash - sum(o.qty * o.decision_price for o in eng._pend
                             if o.intent != "close" and o.position_side == "long")
    gross = eng._reserved
    n_open = eng._pending_opens
    for p in eng.pf.positions.values():
        v = p.value(marks.get(p.symbol, p.avg_entry))
        if p.position_id in eng._closing:
            cash += v  # selling a long adds its value; buying back a short costs it (v < 0)
        else:
            gross += abs(v)
            n_open += 1
    d = check_entry(intent=intent, position_side=cand.pside, equity=ctx.equity, cash=cash,
                    gross_exposure_usd=gross, open_positions=n_open,
                    position_value_usd=pos_value, position_pnl_pct=pnl_pct,
                    position_adds=pos.adds if pos is not None else 0, params=cand.cfg.params, kelly=k,
                    correlation=corr, settings=s, taker_fee_bps=float(s["broker.taker_fee_bps"]))
    if not d.ok:
        return d.gate, d.reason, {"risk": d.context}
    return None, None, {"notional": d.notional, "risk": d.context}


def correlation(eng, sym: str, pside: str, s: dict, i: int) -> float | None:
    """Return correlation of ``sym`` with the existing exposure over ``risk.correlation_window_hours``.

    Parameters
    ----------
    eng : Engine
        The engine (positions, marks, log returns).
    sym : str
        Candidate symbol.
    pside : {'long', 'short'}
        Candidate side (same-side positions weigh +, opposite -).
    s : dict
        Settings in force.
    i : int
        Bar index of the decision bar of ``sym``.

    Returns
    -------
    float or None
        Pearson correlation (``ats.risk.limits.exposure_correlation``); None without exposure or history.
    """
    if not eng.pf.positions:
        return None
    n = max(10, int(round(float(s["risk.correlation_window_hours"]) * 3600 / eng.tf_s)))
    if i + 1 < n:
        return None
    cand = eng.logret[sym][i - n + 1:i + 1]
    total = 0.0
    exps = []
    for p in eng.pf.positions.values():
        if p.symbol == sym:
            continue
        j = eng.index_at(p.symbol, eng.last_bar_t.get(p.symbol, -1))
        if j + 1 < n:
            continue
        v = abs(p.value(eng.marks.get(p.symbol, p.avg_entry)))
        total += v
        exps.append((eng.logret[p.symbol][j - n + 1:j + 1], v if p.side == pside else -v))
    if not exps or total <= 0:
        return None
    return exposure_correlation(cand, [(r, w / total) for r, w in exps])
