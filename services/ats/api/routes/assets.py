"""Assets page and its API: portfolio value, P&L windows (``pnl_windows``, snapshots only), holdings by symbol
(positions, fills), and the circuit-breaker trading state (``breaker_states``)."""

from __future__ import annotations

from datetime import datetime

import psycopg
from fastapi import APIRouter, Depends, Request

from ...errors import AtsError
from ..deps import (account_param, account_runs, accounts, check_account, check_run, get_conn, plain, render,
                    run_param)

router = APIRouter()
GLOBAL_HALT = ("daily_drawdown", "manual_stop", "market_volatility", "consecutive_losses")


def pnl(conn: psycopg.Connection, account: str, run: str | None = None) -> dict | None:
    """``ats.portfolio.pnl.pnl_windows`` for ``run`` (default: the account's latest run, as ``ats pnl``); None
    when it has no snapshots."""
    from ...portfolio.pnl import pnl_windows

    try:
        return pnl_windows(conn, account_id=account, run_id=run)
    except AtsError:
        return None


def breaker_status(conn: psycopg.Connection, run_id: str) -> dict:
    """Trading state of a run from ``breaker_states``: HALTED when a portfolio-wide breaker (scope '*') is
    tripped, REDUCING when only per-symbol breakers are, else ACTIVE. Returns {state, causes, breakers}."""
    rows = conn.execute("""SELECT breaker, scope, state, since, reason FROM breaker_states
                            WHERE run_id = %s ORDER BY state DESC, breaker, scope""", (run_id,)).fetchall()
    tripped = [r for r in rows if r["state"] == "tripped"]
    if any(r["scope"] == "*" for r in tripped):
        state = "HALTED"
    elif tripped:
        state = "REDUCING"
    else:
        state = "ACTIVE"
    return {"state": state, "causes": [f"{r['breaker']} ({r['scope']}): {r['reason']}" for r in tripped],
            "breakers": plain(rows)}


def positions(conn: psycopg.Connection, account: str, run: str | None = None) -> dict:
    """Holdings by symbol for the account's latest run.

    Returns ``{"run_id", "as_of", "symbols": [{symbol, state ('owned'|'traded'|'watched'), qty (base units,
    signed: shorts negative, sum of open ``positions.qty``), price (USD: the last snapshot's mark, else the
    last candle close at or before as_of), value_usd (qty x price), invested_today_usd (buy fills' qty x price
    since 00:00 UTC of as_of), recent_trades [last 5 fills]}]}``; empty when the account has no run.
    """
    p = pnl(conn, account, run)
    if p is None:
        return {"run_id": None, "as_of": None, "symbols": []}
    rid, as_of = p["run_id"], datetime.fromisoformat(p["as_of"])
    run = conn.execute("SELECT params FROM engine_runs WHERE run_id = %s", (rid,)).fetchone()
    params = run["params"] or {}
    tf = params.get("timeframe", "1h")
    open_q = {r["symbol"]: float(r["qty"]) for r in conn.execute(
        """SELECT symbol, sum(CASE side WHEN 'short' THEN -qty ELSE qty END) AS qty FROM positions
            WHERE run_id = %s AND status = 'open' GROUP BY symbol""", (rid,))}
    candidates = sorted(set(params.get("symbols", [])) | set(open_q))
    traded = {r["symbol"] for r in conn.execute(  # one index probe per symbol (positions_run_symbol)
        """SELECT s AS symbol FROM unnest(%s::text[]) AS s
            WHERE EXISTS (SELECT 1 FROM positions p WHERE p.run_id = %s AND p.symbol = s)""", (candidates, rid))}
    snap = conn.execute("""SELECT positions FROM portfolio_hourly_snapshots WHERE run_id = %s
                            ORDER BY ts DESC LIMIT 1""", (rid,)).fetchone()
    marks = {e["symbol"]: float(e["mark"]) for e in (snap["positions"] if snap else []) if e.get("mark") is not None}
    day0 = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    invested = {r["symbol"]: float(r["usd"]) for r in conn.execute(
        """SELECT symbol, sum(qty * price) AS usd FROM fills WHERE run_id = %s AND side = 'buy'
              AND ts >= %s AND ts <= %s GROUP BY symbol""", (rid, day0, as_of))}
    syms = candidates
    out = []
    for s in syms:
        price = marks.get(s)
        if price is None:
            c = conn.execute("""SELECT close FROM candles WHERE symbol = %s AND timeframe = %s AND open_time <= %s
                                 ORDER BY open_time DESC LIMIT 1""", (s, tf, as_of)).fetchone()
            price = float(c["close"]) if c else None
        qty = open_q.get(s, 0.0)
        state = "owned" if abs(qty) > 0 else ("traded" if s in traded else "watched")
        trades = conn.execute("""SELECT ts, side, qty::float8 AS qty, price::float8 AS price, fee_usd::float8 AS fee_usd
                                   FROM fills WHERE run_id = %s AND symbol = %s ORDER BY ts DESC, fill_id DESC
                                   LIMIT 5""", (rid, s)).fetchall()
        out.append({"symbol": s, "state": state, "qty": qty, "price": price,
                    "value_usd": None if price is None else round(qty * price, 2),
                    "invested_today_usd": round(invested.get(s, 0.0), 2), "recent_trades": plain(trades)})
    return {"run_id": rid, "as_of": p["as_of"], "symbols": out}


@router.get("/api/accounts", tags=["assets"])
def api_accounts(conn=Depends(get_conn)) -> dict:
    """Accounts with engine runs (the account tabs)."""
    return {"accounts": accounts(conn)}


@router.get("/api/pnl", tags=["assets"])
def api_pnl(account: str = Depends(account_param), run: str | None = Depends(run_param), conn=Depends(get_conn)) -> dict:
    """P&L windows of the account's latest run (or ``run``): exactly ``ats pnl --json`` (``pnl_windows``)."""
    check_account(conn, account)
    check_run(conn, account, run)
    p = pnl(conn, account, run)
    return {"account_id": account, "pnl": p}


@router.get("/api/positions", tags=["assets"])
def api_positions(account: str = Depends(account_param), run: str | None = Depends(run_param),
                  conn=Depends(get_conn)) -> dict:
    """Holdings by symbol (state, quantity, price, value, invested today, recent trades) and breaker state."""
    check_account(conn, account)
    check_run(conn, account, run)
    out = positions(conn, account, run)
    out["breakers"] = breaker_status(conn, out["run_id"]) if out["run_id"] else None
    return out


@router.get("/", include_in_schema=False)
@router.get("/assets", include_in_schema=False)
def page_assets(request: Request, account: str = Depends(account_param), run: str | None = Depends(run_param),
                conn=Depends(get_conn)):
    """The Assets page."""
    check_account(conn, account)
    check_run(conn, account, run)
    p = pnl(conn, account, run)
    pos = positions(conn, account, run)
    br = breaker_status(conn, pos["run_id"]) if pos["run_id"] else {"state": "ACTIVE", "causes": [], "breakers": []}
    return render(request, "assets.html", "assets", account=account, accounts=accounts(conn), pnl=p, pos=pos,
                  runs=account_runs(conn, account), run=p["run_id"] if p else None,
                  breakers=br, windows=("today", "7d", "30d", "6m", "all_time"))
