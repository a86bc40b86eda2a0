"""Backtests page and its API: ``backtest_runs`` with their summaries, trades, equity curves, blocked signals by
gate and reason, and side-by-side comparisons (computed on read; nothing is written)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Depends, Query, Request

from ..deps import get_conn, param_error, plain, render

router = APIRouter()
METRICS = ("return_pct", "max_drawdown_pct", "sharpe", "trades", "win_rate", "fees_usd")


def runs(conn: psycopg.Connection, limit: int = 100) -> list[dict]:
    """The latest backtest runs with the metrics of their summary."""
    rows = conn.execute("""SELECT backtest_id, run_id, strategies, symbols, timeframe, start_time, end_time,
                                  walk_forward, status, started_at, finished_at, summary
                             FROM backtest_runs ORDER BY backtest_id DESC LIMIT %s""", (limit,)).fetchall()
    out = []
    for r in rows:
        s = r.pop("summary") or {}
        r["metrics"] = {m: s.get(m) for m in METRICS}
        out.append(plain(r))
    return out


def detail(conn: psycopg.Connection, backtest_id: int) -> dict | None:
    """One backtest: run row, trades (first 500), equity curve, blocked signals grouped by gate and reason."""
    run = conn.execute("SELECT * FROM backtest_runs WHERE backtest_id = %s", (backtest_id,)).fetchone()
    if run is None:
        return None
    trades = conn.execute("""SELECT strategy_name, symbol, side, entry_time, exit_time, entry_price::float8 AS entry_price,
                                    exit_price::float8 AS exit_price, qty::float8 AS qty, pnl_usd::float8 AS pnl_usd,
                                    exit_reason FROM backtest_trades WHERE backtest_id = %s
                              ORDER BY entry_time, trade_id LIMIT 500""", (backtest_id,)).fetchall()
    curve = conn.execute("""SELECT ts, equity_usd::float8 AS equity_usd, drawdown_pct FROM backtest_equity_curve
                             WHERE backtest_id = %s ORDER BY ts""", (backtest_id,)).fetchall()
    blocked = conn.execute("""SELECT gate, reason, count(*) AS n FROM backtest_blocked_signals WHERE backtest_id = %s
                               GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 200""", (backtest_id,)).fetchall()
    return plain({"run": run, "trades": trades, "equity": {"ts": [c["ts"] for c in curve],
                                                         "equity_usd": [c["equity_usd"] for c in curve]},
                  "blocked": blocked})


def compare(conn: psycopg.Connection, ids: list[int]) -> dict:
    """{backtest_id: {metric: value}} for the given ids (metrics of each summary)."""
    rows = conn.execute("SELECT backtest_id, summary FROM backtest_runs WHERE backtest_id = ANY(%s) ORDER BY 1",
                        (ids,)).fetchall()
    return {str(r["backtest_id"]): {m: (r["summary"] or {}).get(m) for m in METRICS} for r in rows}


def _ids(ids: str | None = Query(None, description="comma-separated backtest ids to compare")) -> list[int]:
    if not ids:
        return []
    try:
        out = [int(x) for x in ids.split(",") if x.strip()]
    except ValueError:
        raise param_error("ids", f"expected comma-separated integers, got {ids!r}")
    if len(out) > 10:
        raise param_error("ids", "at most 10 backtests at once")
    return out


@router.get("/api/backtests", tags=["backtests"])
def api_backtests(conn=Depends(get_conn), ids: list[int] = Depends(_ids)) -> dict:
    """Backtest runs (newest first) and, with ``ids``, their comparison."""
    return {"runs": runs(conn), "comparison": compare(conn, ids) if ids else None}


@router.get("/api/backtests/{backtest_id}", tags=["backtests"])
def api_backtest(backtest_id: int, conn=Depends(get_conn)) -> dict:
    """One backtest's trades, equity curve and blocked signals."""
    d = detail(conn, backtest_id)
    if d is None:
        raise param_error("backtest_id", f"no backtest {backtest_id}")
    return d


@router.get("/backtests", include_in_schema=False)
def page_backtests(request: Request, id: int | None = Query(None), ids: list[int] = Depends(_ids),
                   conn=Depends(get_conn)):
    """The Backtests page."""
    rs = runs(conn)
    sel = id if id is not None else (rs[0]["backtest_id"] if rs else None)
    d = detail(conn, sel) if sel is not None else None
    if id is not None and d is None:
        raise param_error("id", f"no backtest {id}")
    cmp_ids = ids or [r["backtest_id"] for r in rs[:2]]
    return render(request, "backtests.html", "backtests", runs=rs, detail=d, selected=sel,
                  comparison=compare(conn, cmp_ids) if len(cmp_ids) > 1 else None, metrics=METRICS)
