"""Events page and its API: ``system_events`` (breaker trips and resets, anomalies, cron runs, dashboard
actions), filterable by kind, severity and symbol, newest first."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Depends, Query, Request

from ..deps import get_conn, param_error, plain, render

router = APIRouter()
KINDS = {"breaker": "event_type LIKE 'breaker%%'",
         "anomaly": "(event_type LIKE '%%anomal%%' OR component = 'market_data')",
         "cron": "component = 'cron'", "dashboard": "component = 'dashboard'"}
SEVERITIES = ("debug", "info", "warning", "error", "critical")


def events(conn: psycopg.Connection, kind: str | None = None, severity: str | None = None,
           symbol: str | None = None, limit: int = 200) -> list[dict]:
    """Newest ``limit`` events matching the filters (kind ∈ KINDS, severity ∈ SEVERITIES, exact symbol)."""
    conds, params = ["true"], {"lim": limit}
    if kind:
        conds.append(KINDS[kind])
    if severity:
        conds.append("severity = %(sev)s")
        params["sev"] = severity
    if symbol:
        conds.append("symbol = %(sym)s")
        params["sym"] = symbol
    rows = conn.execute(f"""SELECT event_id, ts, recorded_at, account_id, component, event_type, severity, symbol,
                                   payload FROM system_events WHERE {' AND '.join(conds)}
                             ORDER BY event_id DESC LIMIT %(lim)s""", params).fetchall()
    return plain(rows)


def _filters(kind: str | None = Query(None, description=f"one of {', '.join(KINDS)}"),
             severity: str | None = Query(None, description=f"one of {', '.join(SEVERITIES)}"),
             symbol: str | None = Query(None, max_length=32),
             limit: int = Query(200, description="1-1000")) -> dict:
    if kind and kind not in KINDS:
        raise param_error("kind", f"expected one of {', '.join(KINDS)}")
    if severity and severity not in SEVERITIES:
        raise param_error("severity", f"expected one of {', '.join(SEVERITIES)}")
    if not 1 <= limit <= 1000:
        raise param_error("limit", "must be between 1 and 1000")
    return {"kind": kind or None, "severity": severity or None, "symbol": (symbol or "").upper() or None,
            "limit": limit}


@router.get("/api/events", tags=["events"])
def api_events(f: dict = Depends(_filters), conn=Depends(get_conn)) -> dict:
    """Filtered ``system_events``, newest first."""
    return {"events": events(conn, **f)}


@router.get("/events", include_in_schema=False)
def page_events(request: Request, f: dict = Depends(_filters), conn=Depends(get_conn)):
    """The Events page."""
    return render(request, "events.html", "events", events=events(conn, **f), filters=f, kinds=KINDS,
                  severities=SEVERITIES)
