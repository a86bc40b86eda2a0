"""Analytics page and its API: hourly portfolio P&L (snapshots), hourly buy/sell volume and fees (fills), the
running cumulative net P&L (snapshot equity minus the run's first equity) and per-strategy results (positions)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
from fastapi import APIRouter, Depends, Query, Request

from ..deps import (account_param, account_runs, accounts, check_account, check_run, get_conn, param_error,
                    plain, render, run_param)
from .assets import pnl

router = APIRouter()


def analytics(conn: psycopg.Connection, account: str, days: int = 30, run: str | None = None) -> dict:
    """Series of the account's latest run over the last ``days`` days before its last snapshot.

    Returns ``{"run_id", "as_of", "days", "hours": [ISO UTC], "pnl_usd": [equity - first equity of the run, USD],
    "flow": {"hours", "buy_usd", "sell_usd", "fees_usd"} (sums of fills' qty x price and fee_usd per UTC hour),
    "strategies": [{strategy, trades, wins, win_rate (fraction), realized_pnl_usd (net of fees), fees_usd}] of the
    positions closed in the window}``.
    """
    p = pnl(conn, account, run)
    if p is None:
        return {"run_id": None, "as_of": None, "days": days, "hours": [], "pnl_usd": [],
                "flow": {"hours": [], "buy_usd": [], "sell_usd": [], "fees_usd": []}, "strategies": []}
    rid, as_of = p["run_id"], datetime.fromisoformat(p["as_of"])
    since = as_of - timedelta(days=days)
    base = p["all_time"]["from_equity_usd"]
    snaps = conn.execute("""SELECT ts, equity_usd::float8 AS eq FROM portfolio_hourly_snapshots
                             WHERE run_id = %s AND ts >= %s ORDER BY ts""", (rid, since)).fetchall()
    flow = conn.execute(
        """SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AS h,
                  coalesce(sum(qty * price) FILTER (WHERE side = 'buy'), 0)::float8 AS buy,
                  coalesce(sum(qty * price) FILTER (WHERE side = 'sell'), 0)::float8 AS sell,
                  sum(fee_usd)::float8 AS fees
             FROM fills WHERE run_id = %s AND ts >= %s GROUP BY 1 ORDER BY 1""", (rid, since)).fetchall()
    strat = conn.execute(
        """SELECT strategy_name AS strategy, count(*) AS trades, count(*) FILTER (WHERE realized_pnl_usd > 0) AS wins,
                  sum(realized_pnl_usd)::float8 AS realized_pnl_usd, sum(fees_usd)::float8 AS fees_usd
             FROM positions WHERE run_id = %s AND status = 'closed' AND closed_at >= %s
            GROUP BY 1 ORDER BY 1""", (rid, since)).fetchall()
    for s in strat:
        s["win_rate"] = round(s["wins"] / s["trades"], 4) if s["trades"] else None
        s["realized_pnl_usd"] = round(s["realized_pnl_usd"] or 0.0, 2)
        s["fees_usd"] = round(s["fees_usd"] or 0.0, 2)
    return {"run_id": rid, "as_of": p["as_of"], "days": days,
            "hours": [r["ts"].isoformat() for r in snaps], "pnl_usd": [round(r["eq"] - base, 2) for r in snaps],
            "flow": {"hours": [r["h"].isoformat() + "+00:00" for r in flow], "buy_usd": [round(r["buy"], 2) for r in flow],
                     "sell_usd": [round(r["sell"], 2) for r in flow], "fees_usd": [round(r["fees"], 4) for r in flow]},
            "strategies": plain(strat)}


def _days(days: int = Query(30, description="window in days before the last snapshot (1-3650)")) -> int:
    if not 1 <= days <= 3650:
        raise param_error("days", "must be between 1 and 3650")
    return days


@router.get("/api/analytics", tags=["analytics"])
def api_analytics(account: str = Depends(account_param), days: int = Depends(_days),
                  run: str | None = Depends(run_param), conn=Depends(get_conn)) -> dict:
    """Hourly P&L, volume, fees and per-strategy results of the account's latest run (or ``run``)."""
    check_account(conn, account)
    check_run(conn, account, run)
    return analytics(conn, account, days, run)


@router.get("/analytics", include_in_schema=False)
def page_analytics(request: Request, account: str = Depends(account_param), days: int = Depends(_days),
                   run: str | None = Depends(run_param), conn=Depends(get_conn)):
    """The Analytics page (charts drawn client side by the bundled plotly.js)."""
    check_account(conn, account)
    check_run(conn, account, run)
    data = analytics(conn, account, days, run)
    return render(request, "analytics.html", "analytics", account=account, accounts=accounts(conn), data=data,
                  runs=account_runs(conn, account), run=data["run_id"])
