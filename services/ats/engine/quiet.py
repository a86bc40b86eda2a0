"""The quiet-span fast path of replays: runs of steps in which nothing but marking to market can happen are done
in bulk, with exactly the rows and state the step-by-step path would leave.

A step is quiet when no order is pending (so no fill), the breakers say none of them trips or resets
(``BreakerBoard.quiet_steps`` / ``static_events``), the regime does not change, no watchlisted strategy triggers
an entry, no open position would exit (``exits.first_exit_step``), no funding time passes while a perp position
is open (``ats.portfolio.funding.first_funding_step``), every symbol has its next bar, and neither the
settings nor a strategy configuration change. Such a step only writes a 'hold' evaluation per open position and
the hourly snapshot (``apply_span``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..portfolio.funding import first_funding_step
from ..regime.rules import NAME as REGIME_NAME
from ..risk.breakers import SpanInputs
from ..strategies import get_strategy
from .exits import first_exit_step
from .sink import FloatJson
from .snapshots import write_snapshots


@dataclass
class SpanEnv:
    """The replay feed's step index: ``timeline`` shape (K,) of open times (Unix s), ``order`` the symbols,
    ``idx`` symbol -> bar index per step (shape (K,), -1 = no bar), plus list copies for the per-step loop."""

    timeline: np.ndarray
    order: list
    idx: dict
    tl_l: list
    idx_l: list


def _ffill(a: np.ndarray) -> np.ndarray:
    """NaNs replaced by the last non-NaN value before them (a[0] must not be NaN)."""
    i = np.where(np.isnan(a), 0, np.arange(len(a)))
    return a[np.maximum.accumulate(i)]


def static_events(eng, s: dict, cfgs: tuple) -> np.ndarray:
    """Per step, the first step at or after it where something may happen whatever the engine state is.

    Events: a symbol without a bar or after a gap, a NaN close, an entry trigger of a watchlisted strategy, a
    breaker's static event (``BreakerBoard.static_events``), a regime change or no regime yet.

    Parameters
    ----------
    eng : Engine
        The engine (``_span_env`` set by the indexed loop).
    s : dict
        Settings in force.
    cfgs : tuple
        The strategies' configurations in force.

    Returns
    -------
    numpy.ndarray of int, shape (K,)
        Per step k the first event step >= k (K when none). Cached per (settings, configurations).
    """
    key = (id(s), cfgs)
    hit = eng._ev_cache
    if hit is not None and hit[0] == key and hit[1] is s:
        return hit[2]
    env = eng._span_env
    tl, K = env.timeline, len(env.timeline)
    ev = np.zeros(K, dtype=bool)
    if K > 1:
        ev[1:] |= np.diff(tl) != eng.tf_s
    for sym in env.order:
        ii = env.idx[sym]
        miss = ii < 0
        ev |= miss
        iv = np.where(miss, 0, ii)
        with np.errstate(invalid="ignore"):
            ev |= np.isnan(eng.bars[sym].close[iv])
        for cfg in cfgs:
            if cfg is not None and cfg.watchlist:
                ev |= eng.prepared(sym, get_strategy(cfg.name), cfg).entry[iv] != 0
    bev = eng.board.static_events(env, s, eng.market)
    if bev is not None:
        ev |= bev
    if eng.regime is not None:
        rs = eng.regime
        jr = np.searchsorted(rs.t, tl, side="right") - 1
        ok = jr >= 0
        ev |= ~ok
        code = np.where(ok, rs.effective[np.maximum(jr, 0)].astype(np.int64), -99)
        conf = np.where(ok, rs.confirmed[np.maximum(jr, 0)], False)
        if K > 1:
            ev[1:] |= (code[1:] != code[:-1]) | (conf[1:] != conf[:-1])
        eng._span_reg = (jr, code, conf)
    pos = np.where(ev, np.arange(K), K)
    nxt = np.minimum.accumulate(pos[::-1])[::-1]
    eng._ev_cache = (key, s, nxt)
    return nxt


def _span_end(eng, k: int, lim: int, C0: int, s: dict) -> tuple[int, list] | None:
    """(end step, configurations) bounded by events, settings/configuration changes and the regime; None if < 2."""
    until = eng.settings.valid_until(C0)
    cfgs = []
    for strat in eng.strats:
        cfgs.append(eng.gates.get(strat.name, C0))
        until = min(until, eng.gates.valid_until(strat.name, C0))
    for pos in eng.pf.positions.values():
        if pos.strategy not in eng.spec.strategies:
            return None
    nxt = static_events(eng, s, tuple(cfgs))
    e = min(k + lim, int(nxt[k]))
    if until <= C0:  # settings/configuration changes: the last quiet step must decide before ``until``
        return None
    e = min(e, k + int((until - C0 - 1) // eng.tf_s) + 1)
    if e - k < 2:
        return None
    if eng.regime is not None:
        _jr, code, conf = eng._span_reg
        if eng.regime_last != (int(code[k]), bool(conf[k])):
            return None
    return e, cfgs


def _equity_path(eng, k: int, W: int, C: np.ndarray):
    """(equity, 00:00 UTC reference, UTC day) per step of the span (same float operations as the step path)."""
    idx = eng._span_env.idx
    if eng.pf.positions:
        pv = None
        for pos in eng.pf.positions.values():
            i0 = idx[pos.symbol][k]
            v = pos.sign * pos.qty * eng.bars[pos.symbol].close[i0:i0 + W]
            pv = v if pv is None else pv + v
        eq = eng.pf.cash + pv
    else:
        eq = np.full(W, eng.pf.cash)
    day = C // 86400
    new_day = np.empty(W, dtype=bool)
    new_day[0] = eng.day != int(day[0])
    new_day[1:] = day[1:] != day[:-1]
    ref = np.where(new_day, eq, np.nan)
    if not new_day[0]:
        ref[0] = eng.day_start_equity
    return eq, _ffill(ref), day


def quiet_span(eng, k: int, lim: int) -> int:
    """How many steps from step k are quiet (see the module docstring).

    Parameters
    ----------
    eng : Engine
        The engine.
    k : int
        First step (index into the feed timeline).
    lim : int
        At most this many steps (the next flush, the end, ``max_steps``).

    Returns
    -------
    int
        The span length (>= 2), or 0 when step k must go through ``Engine.step``. Leaves the span's equity
        path in ``eng._span`` for ``apply_span``.
    """
    if eng.broker.pending() or eng.board.any_tripped() or eng.board.has_news():
        return 0
    env = eng._span_env
    tf = eng.tf_s
    T0 = env.tl_l[k]
    C0 = T0 + tf
    lbt = eng.last_bar_t
    for sym in env.order:
        if lbt.get(sym) != T0 - tf:
            return 0
    s = eng.settings.at(C0)
    hit = _span_end(eng, k, lim, C0, s)
    if hit is None:
        return 0
    e, cfgs = hit
    W = e - k
    C = env.timeline[k:e] + tf
    cut = first_funding_step(eng, C)  # W, or the first step paying funding of a perp position (Engine.step does)
    for pos in eng.pf.positions.values():  # open positions: the first step where an exit would fire
        first = first_exit_step(eng, pos, cfgs[eng.spec.strategies.index(pos.strategy)], env.idx[pos.symbol][k], C)
        if first is not None:
            cut = min(cut, first)
            if cut < 2:
                return 0
    eq, ref, day = _equity_path(eng, k, W, C)
    span = SpanInputs(k=k, W=W, T0=T0, C0=C0, tf=tf, settings=s, equity=eq, day_ref=ref, market=eng.market,
                      symbols=env.order, gaps=eng.gaps)
    cut = min(cut, eng.board.quiet_steps(span))
    if cut < 2:
        return 0
    eng._span = (eq[:cut], ref[:cut], day[:cut])
    return cut


def apply_span(eng, k: int, L: int) -> None:
    """Do steps k .. k+L-1, all quiet, in bulk, with the rows and state ``Engine.step`` would leave.

    Per step a 'hold' ``position_evaluations`` row per open position (best price tracked), the hourly snapshot at
    each top of the hour, the regime singleton refresh every 24 steps; then the marks, clocks, day reference and
    counters after the last step.

    Parameters
    ----------
    eng : Engine
        The engine.
    k : int
        First step.
    L : int
        Span length (what ``quiet_span`` returned).
    """
    env = eng._span_env
    tf = eng.tf_s
    eq, ref, day = eng._span
    C_l = [t + tf for t in env.tl_l[k:k + L]]
    positions = list(eng.pf.positions.values())
    closes = _hold_evaluations(eng, positions, k, L, C_l)
    first = (-(C_l[0] % 3600)) % 3600 // tf if 3600 % tf == 0 else None
    snap_steps = (range(first, L, 3600 // tf) if first is not None
                  else [m for m, C in enumerate(C_l) if C % 3600 == 0])
    if len(snap_steps):
        sel = np.asarray(snap_steps, dtype=np.int64)
        write_snapshots(eng, np.asarray(C_l, dtype=np.int64)[sel], positions,
                        {sym: c[sel] for sym, c in closes.items()}, ref[sel])
    if eng.regime is not None:
        _regime_refresh(eng, k, L, C_l)
    _finish_span(eng, k, L, int(day[-1]), float(ref[-1]))


def _hold_evaluations(eng, positions, k: int, L: int, C_l: list) -> dict:
    """Write the span's 'hold' evaluations (step-major order, as the step path) column-wise
    (``sink.add_columns``: one block of arrays per position, no Python object per row); returns symbol -> closes."""
    idx, rid = eng._span_env.idx, eng.run_id
    blocks = []
    closes = {}
    C = np.asarray(C_l, dtype=np.int64)
    for pos in positions:
        i0 = idx[pos.symbol][k]
        c = eng.bars[pos.symbol].close[i0:i0 + L]
        closes[pos.symbol] = c
        long = pos.side == "long"
        best = (np.maximum if long else np.minimum).accumulate(np.concatenate(([pos.best_price], c)))[1:]
        pnl = pos.sign * (c / pos.avg_entry - 1.0) * 100.0 if pos.avg_entry else np.zeros(L)
        hold = (C - pos.opened_at) / 60.0
        blocks.append((L, (pos.position_id, rid, C, c, pnl, pos.tp_price, pos.sl_price, None, hold, "hold", None,
                           FloatJson('{"best_price":%s}', best))))
        pos.best_price = float(best[-1])
    if blocks:
        eng.sink.add_columns("position_evaluations", blocks)
        eng.stats["evaluations"] += L * len(blocks)
    return closes


def _regime_refresh(eng, k: int, L: int, C_l: list) -> None:
    """The regime singleton refresh of the last step m with (steps_done + m) % 24 == 0 (unchanged regime)."""
    sd0 = eng.steps_done
    for m in range(L - 1, -1, -1):
        if (sd0 + m) % 24 == 0:
            jr = int(eng._span_reg[0][k + m])
            code, conf = eng.regime_last
            eng.sink.regime({"ts": C_l[m], "regime": REGIME_NAME[code], "confirmed": conf,
                             "metrics": eng.regime.metrics(jr)})
            return


def _finish_span(eng, k: int, L: int, day: int, day_ref: float) -> None:
    """The engine state after the span's last step."""
    env = eng._span_env
    Tl = env.tl_l[k + L - 1]
    eng.clock.advance(Tl + eng.tf_s)
    cur = {}
    for sym in env.order:
        i = env.idx[sym][k + L - 1]
        eng.last_bar_t[sym] = Tl
        eng.marks[sym] = float(eng.bars[sym].close[i])
        cur[sym] = int(i)
    eng.cur_index = cur
    eng.day, eng.day_start_equity = day, day_ref
    eng._pend = []
    eng._closing = set()
    eng._reserved = 0.0
    eng._pending_opens = 0
    eng.last_T = Tl
    eng.steps_done += L
    eng.bars_done += L * len(env.order)
    eng.bulk_steps += L
