"""Plain-text rendering of run / backtest summaries and P&L windows (the CLI and the demo print these)."""

from __future__ import annotations


def _f(v, fmt="{:,.2f}", none="n/a"):
    return none if v is None else fmt.format(v)


def format_pnl(p: dict | None) -> list[str]:
    """The P&L windows as readable lines.

    Parameters
    ----------
    p : dict or None
        ``ats.portfolio.pnl.pnl_windows`` output (None or empty: the single line "P&L: no snapshots").

    Returns
    -------
    list of str
    """
    if not p:
        return ["P&L: no snapshots"]
    out = [f"P&L (from portfolio_hourly_snapshots, as of {p['as_of']}):"]
    for k in ("today", "7d", "30d", "6m", "all_time"):
        w = p[k]
        out.append(f"  {k:<9} {w['pnl_usd']:>+12,.2f} USD  {_f(w['pnl_pct'], '{:+.2f}%'):>9}"
                   f"  (from {w['from_ts'][:16]}{'' if w['covered'] else ', run start'})")
    return out


def format_summary(s: dict, *, title: str | None = None) -> str:
    """A run summary as readable lines.

    Parameters
    ----------
    s : dict
        ``ats.engine.metrics.run_summary`` output or a backtest summary.
    title : str, optional
        Heading line.

    Returns
    -------
    str
        The lines joined by newlines (USD with thousands separators, percents).
    """
    lines = []
    if title:
        lines.append(title)
    if s.get("run_id"):
        lines.append(f"run id:          {s['run_id']}" + (f"   (backtest id {s['backtest_id']})" if s.get("backtest_id") else ""))
    if s.get("start_equity_usd") is not None:
        lines.append(f"equity:          {s['start_equity_usd']:,.2f} -> {s['end_equity_usd']:,.2f} USD "
                     f"({s['return_pct']:+.2f}%)")
    lines.append(f"max drawdown:    {_f(s.get('max_drawdown_pct'), '{:.2f}%')}    Sharpe: {_f(s.get('sharpe'), '{:.2f}')}")
    lines.append(f"trades:          {s.get('trades', 0)} closed, win rate {_f(s.get('win_rate'), '{:.1%}')}, "
                 f"fees {_f(s.get('fees_usd'))} USD" + (f", {s['open_positions']} still open"
                                                       if s.get("open_positions") else ""))
    if s.get("signals") is not None:
        lines.append(f"signals:         {s['signals']} ({s.get('orders', 0)} orders, {s.get('fills', 0)} fills, "
                     f"{s.get('orders_rejected_or_cancelled', 0)} rejected/cancelled)")
    bs = s.get("by_strategy") or {}
    if bs:
        lines.append("by strategy:     " + ", ".join(f"{k} {v['trades']} trades {v['pnl_usd']:+,.2f} USD"
                                                      for k, v in bs.items()))
    blocked = dict(sorted((s.get("blocked_by_gate") or s.get("blocked_by_reason") or {}).items(),
                          key=lambda kv: (-kv[1], kv[0])))
    total = sum(blocked.values())
    lines.append(f"blocked signals: {total}" + (" by gate: " + ", ".join(f"{g} {n}" for g, n in blocked.items())
                                                if blocked else ""))
    fu = s.get("funding")
    if fu and fu.get("payments"):
        lines.append(f"funding:         {fu['payments']} payments by open perp shorts, cost {fu['cost_usd']:+,.2f} USD"
                     + (f" ({fu['fallback']} without funding data: fallback rate broker.funding_fallback_bps)"
                        if fu.get("fallback") else ""))
    trips = dict(sorted((s.get("breaker_trips") or {}).items(), key=lambda kv: (-kv[1], kv[0])))
    lines.append(f"breaker trips:   {sum(trips.values())}" + (" (" + ", ".join(f"{b} {n}" for b, n in trips.items()) + ")"
                                                              if trips else ""))
    if s.get("pnl"):
        lines += format_pnl(s["pnl"])
    oos = s.get("oos")
    if oos:
        lines.append(f"walk-forward out-of-sample ({len(oos['folds'])} folds, TP/SL scales {oos['scales']}): return "
                     f"{oos['return_pct']:+.2f}%, max drawdown {oos['max_drawdown_pct']:.2f}%, Sharpe "
                     f"{_f(oos['sharpe'], '{:.2f}')}, trades {oos['trades']}, win rate {_f(oos['win_rate'], '{:.1%}')}")
        for f in oos["folds"]:
            lines.append(f"  fold {f['fold']}: IS {f['in_sample'][0][:10]}..{f['in_sample'][1][:10]} scale "
                         f"{f['chosen_tp_sl_scale']} (IS Sharpe {_f(f['is_sharpe'], '{:.2f}')}) -> OOS "
                         f"{f['out_of_sample'][0][:10]}..{f['out_of_sample'][1][:10]} {f['oos_return_pct']:+.2f}%, "
                         f"Sharpe {_f(f['oos_sharpe'], '{:.2f}')}, {f['oos_trades']} trades")
    return "\n".join(lines)
