"""Run and backtest statistics: return, max drawdown, Sharpe, trades, win rate, blocked signals, breaker trips.

Sharpe ratio = mean / standard deviation (ddof=1) of the per-period simple returns of the equity curve, times
sqrt(periods per year); the period is the curve's median spacing (hourly snapshots -> 8,760 periods a year, a
24/7 market). Risk-free rate 0. Max drawdown = largest peak-to-trough fall of equity, percent of the peak.
"""

from __future__ import annotations

import math

import numpy as np
import psycopg


def equity_metrics(ts: list[int], equity: list[float]) -> dict:
    """Headline metrics of an equity curve.

    Drawdown = (running peak - equity) / running peak x 100; Sharpe = mean / std (ddof=1) of the per-period simple
    returns x sqrt(periods per year), periods per year = 365 x 86400 / median spacing (24/7 market, no risk-free
    rate).

    Parameters
    ----------
    ts : list of int
        Times, Unix s ascending.
    equity : list of float
        Equity per time (USD), same length.

    Returns
    -------
    dict
        return_pct, max_drawdown_pct (percent), sharpe (None when undefined), start_equity_usd, end_equity_usd,
        periods. Empty/one-point curves give zeros (sharpe None).
    """
    if len(equity) < 2:
        e = equity[0] if equity else 0.0
        return {"return_pct": 0.0, "max_drawdown_pct": 0.0, "sharpe": None, "start_equity_usd": e,
                "end_equity_usd": e, "periods": len(equity)}
    e = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(e)
    dd = (peak - e) / peak * 100.0
    r = e[1:] / e[:-1] - 1.0
    step = float(np.median(np.diff(np.asarray(ts, dtype=np.float64)))) or 3600.0
    per_year = 365 * 86400 / step
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    sharpe = float(r.mean() / sd * math.sqrt(per_year)) if sd > 0 else None
    return {"return_pct": round(float(e[-1] / e[0] - 1.0) * 100.0, 4), "max_drawdown_pct": round(float(dd.max()), 4),
            "sharpe": None if sharpe is None else round(sharpe, 4), "start_equity_usd": round(float(e[0]), 2),
            "end_equity_usd": round(float(e[-1]), 2), "periods": len(e)}


def drawdown_series(equity: list[float]) -> list[float]:
    """Drawdown from the running peak per point.

    Parameters
    ----------
    equity : list of float
        Equity (USD).

    Returns
    -------
    list of float
        Percent, same length.
    """
    if not equity:
        return []
    e = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(e)
    return [float(x) for x in (peak - e) / peak * 100.0]


def trade_metrics(pnls: list[float]) -> dict:
    """Closed-trade metrics.

    Parameters
    ----------
    pnls : list of float
        Net P&L per closed trade (USD).

    Returns
    -------
    dict
        trades, wins, losses, win_rate (0..1 or None), avg_pnl_usd, total_pnl_usd.
    """
    n = len(pnls)
    wins = sum(1 for p in pnls if p > 0)
    return {"trades": n, "wins": wins, "losses": n - wins, "win_rate": round(wins / n, 4) if n else None,
            "avg_pnl_usd": round(sum(pnls) / n, 4) if n else None, "total_pnl_usd": round(sum(pnls), 4)}


def funding_and_micro(cur, run_id: str) -> dict:
    """Funding paid by the run's perp positions and its microstructure-gate blocks per strategy.

    Returns
    -------
    dict
        ``funding``: {payments, fallback (payments without a funding_rates row), cost_usd (paid, negative =
        received; USD)}; ``microstructure_blocked``: strategy -> {no_data, condition} (blocked_signals with gate
        'microstructure', by whether the reason is ``microstructure:no_data``).
    """
    n, fb, cost = cur.execute(
        """SELECT count(*), count(*) FILTER (WHERE rate_source = 'fallback'), coalesce(sum(cost_usd), 0)::float8
             FROM funding_payments WHERE run_id=%s""", (run_id,)).fetchone()
    micro = {r[0]: {"no_data": r[1], "condition": r[2]} for r in cur.execute(
        """SELECT strategy_name, count(*) FILTER (WHERE reason LIKE 'microstructure:no_data%%'),
                  count(*) FILTER (WHERE reason NOT LIKE 'microstructure:no_data%%')
             FROM blocked_signals WHERE run_id=%s AND gate='microstructure' GROUP BY 1 ORDER BY 1""",
        (run_id,)).fetchall()}
    return {"funding": {"payments": n, "fallback": fb, "cost_usd": round(cost, 6)}, "microstructure_blocked": micro}


def run_summary(conn: psycopg.Connection, run_id: str) -> dict:
    """Summary of a run from its audit rows (JSON-ready).

    Equity metrics from portfolio_hourly_snapshots, closed-trade metrics from positions, blocked signals by gate,
    breaker trips (count per breaker and per UTC day), orders/fills counts and the P&L windows (ats.portfolio.pnl).

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    run_id : str
        The run.

    Returns
    -------
    dict
        See ``equity_metrics``, ``trade_metrics`` plus blocked_by_gate, breaker_trips, breaker_trips_by_day, pnl,
        funding and microstructure_blocked (``funding_and_micro``), ...
    """
    from ..portfolio.pnl import pnl_windows

    cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
    snaps = cur.execute("SELECT extract(epoch from ts)::bigint, equity_usd::float8 FROM portfolio_hourly_snapshots "
                        "WHERE run_id=%s ORDER BY ts", (run_id,)).fetchall()
    eqm = equity_metrics([r[0] for r in snaps], [r[1] for r in snaps])
    pnls = [r[0] for r in cur.execute("SELECT realized_pnl_usd::float8 FROM positions WHERE run_id=%s AND "
                                      "status='closed' ORDER BY closed_at, position_id", (run_id,)).fetchall()]
    tm = trade_metrics(pnls)
    by_strategy = {r[0]: {"trades": r[1], "wins": r[2], "pnl_usd": round(r[3] or 0.0, 2)} for r in cur.execute(
        """SELECT strategy_name, count(*), count(*) FILTER (WHERE realized_pnl_usd > 0), sum(realized_pnl_usd)::float8
             FROM positions WHERE run_id=%s AND status='closed' GROUP BY 1 ORDER BY 1""", (run_id,)).fetchall()}
    blocked = {r[0]: r[1] for r in cur.execute(
        "SELECT gate, count(*) FROM blocked_signals WHERE run_id=%s GROUP BY gate ORDER BY count(*) DESC, gate",
        (run_id,)).fetchall()}
    trips = cur.execute(
        """SELECT payload->>'breaker', count(*) FROM system_events WHERE component='risk' AND
                  event_type='breaker_tripped' AND payload->>'run_id'=%s GROUP BY 1 ORDER BY 2 DESC, 1""",
        (run_id,)).fetchall()
    trips_by_day = cur.execute(
        """SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d, payload->>'breaker', count(*)
             FROM system_events WHERE component='risk' AND event_type='breaker_tripped' AND payload->>'run_id'=%s
            GROUP BY 1, 2 ORDER BY 1, 2""", (run_id,)).fetchall()
    counts = cur.execute(
        """SELECT (SELECT count(*) FROM signals WHERE run_id=%(r)s),
                  (SELECT count(*) FROM order_executions WHERE run_id=%(r)s),
                  (SELECT count(*) FROM fills WHERE run_id=%(r)s),
                  (SELECT count(*) FROM order_executions WHERE run_id=%(r)s AND status IN ('rejected','cancelled')),
                  (SELECT count(*) FROM positions WHERE run_id=%(r)s AND status='open'),
                  (SELECT coalesce(sum(fee_usd), 0)::float8 FROM fills WHERE run_id=%(r)s),
                  (SELECT count(*) FROM position_evaluations WHERE run_id=%(r)s)""", {"r": run_id}).fetchone()
    run = conn.execute("SELECT account_id, mode, params, last_bar_time, bars_processed FROM engine_runs WHERE run_id=%s",
                       (run_id,)).fetchone()
    by_day: dict[str, dict] = {}
    for d, b, n in trips_by_day:
        by_day.setdefault(d, {})[b] = n
    out = {"run_id": run_id, "mode": run["mode"] if run else None, "account_id": run["account_id"] if run else None,
           "params": run["params"] if run else None,
           "last_bar_time": run["last_bar_time"].isoformat() if run and run["last_bar_time"] else None,
           "bars_processed": run["bars_processed"] if run else 0, **eqm, **tm, "by_strategy": by_strategy,
           "signals": counts[0], "orders": counts[1], "fills": counts[2], "orders_rejected_or_cancelled": counts[3],
           "open_positions": counts[4], "fees_usd": round(counts[5], 2), "position_evaluations": counts[6],
           "blocked_by_gate": blocked, "breaker_trips": {b: n for b, n in trips}, "breaker_trips_by_day": by_day}
    out.update(funding_and_micro(cur, run_id))
    try:
        out["pnl"] = pnl_windows(conn, out["account_id"] or "default", run_id)
    except Exception:  # noqa: BLE001 - a run without snapshots has no P&L windows
        out["pnl"] = None
    return out
