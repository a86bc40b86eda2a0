"""Hourly portfolio snapshots (``portfolio_hourly_snapshots``): cash, positions value, equity, realized and
unrealized P&L, fees and net_pnl_daily = equity - equity at 00:00 UTC (USD)."""

from __future__ import annotations


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
