"""Hourly portfolio snapshots (``portfolio_hourly_snapshots``): cash, positions value, equity, realized and
unrealized P&L, fees and net_pnl_daily = equity - equity at 00:00 UTC (USD)."""

from __future__ import annotations

import json
import math

import numpy as np

from .sink import FloatJson


def write_snapshot(eng, C: int, positions, marks: dict, day_ref: float) -> None:
    """Write the ``portfolio_hourly_snapshots`` row at ``C``.

    Parameters
    ----------
    eng : Engine
        The engine (portfolio, sink).
    C : int
        Decision time, Unix s (a top of the hour).
    positions : iterable of Position
        The open positions.
    marks : dict
        Symbol -> price (USD); a missing symbol is marked at its average entry.
    day_ref : float
        Equity at 00:00 UTC (USD): net_pnl_daily = equity - day_ref.
    """
    pf = eng.pf
    pv = 0.0
    unreal = 0.0
    rows = []
    for p in positions:
        m = marks.get(p.symbol, p.avg_entry)
        v = p.value(m)
        u = p.unrealized(m)
        pv += v
        unreal += u
        rows.append({"strategy": p.strategy, "symbol": p.symbol, "side": p.side, "qty": p.qty, "mark": m,
                     "value_usd": round(v, 6), "unrealized_usd": round(u, 6), "position_id": p.position_id})
    eq = pf.cash + pv
    eng.sink.add("portfolio_hourly_snapshots", (eng.run_id, eng.account, C, pf.cash, pv, eq, pf.realized_usd,
                                                unreal, pf.fees_usd, eq - day_ref, len(pf.positions), rows))


def _lit(s: str) -> str:
    """A JSON string literal for a FloatJson template (``%`` doubled)."""
    return json.dumps(s).replace("%", "%%")


def write_snapshots(eng, C: np.ndarray, positions, closes: dict, day_ref: np.ndarray) -> None:
    """Write the snapshots of several steps of a quiet span at once (cash and positions unchanged between them),
    column-wise (``sink.add_columns``): exactly the rows ``write_snapshot`` would write step by step - the same float
    operations in the same order, elementwise over the steps.

    Parameters
    ----------
    eng : Engine
        The engine (portfolio, sink).
    C : numpy.ndarray of int64, shape (S,)
        Decision times, Unix s (tops of the hour).
    positions : list of Position
        The open positions, in the portfolio's order.
    closes : dict
        Symbol -> marks at those steps, float arrays of shape (S,) (USD); every position's symbol is present.
    day_ref : numpy.ndarray, shape (S,)
        Equity at 00:00 UTC per step (USD).
    """
    if not getattr(eng.sink, "persistent", False):  # a MemorySink keeps objects: the one-row path builds them anyway
        for j in range(len(C)):
            write_snapshot(eng, int(C[j]), positions, {p.symbol: float(closes[p.symbol][j]) for p in positions},
                           float(day_ref[j]))
        return
    pf = eng.pf
    S = len(C)
    pv = np.zeros(S)
    unreal = np.zeros(S)
    parts, vals = [], []
    for p in positions:
        m = closes[p.symbol]
        v = p.sign * p.qty * m
        u = p.sign * (m - p.avg_entry) * p.qty - p.open_entry_fees
        pv = pv + v
        unreal = unreal + u
        if not (np.isfinite(m).all() and np.isfinite(v).all() and np.isfinite(u).all() and math.isfinite(p.qty)):
            for j in range(S):  # a non-finite number: the one-row path (its JSON writes null)
                write_snapshot(eng, int(C[j]), positions, {q.symbol: float(closes[q.symbol][j]) for q in positions},
                               float(day_ref[j]))
            return
        parts.append('{"strategy":%s,"symbol":%s,"side":%s,"qty":%s,"mark":%%s,"value_usd":%%s,"unrealized_usd":%%s,'
                     '"position_id":%d}' % (_lit(p.strategy), _lit(p.symbol), _lit(p.side),
                                           float.__repr__(float(p.qty)), p.position_id))
        vals += [m, np.array([round(x, 6) for x in v.tolist()]), np.array([round(x, 6) for x in u.tolist()])]
    eq = pf.cash + pv
    rows = FloatJson("[" + ",".join(parts) + "]", *vals, decode=True)
    eng.sink.add_columns("portfolio_hourly_snapshots", [(S, (eng.run_id, eng.account, C, pf.cash, pv, eq,
                                                             pf.realized_usd, unreal, pf.fees_usd, eq - day_ref,
                                                             len(pf.positions), rows))])
