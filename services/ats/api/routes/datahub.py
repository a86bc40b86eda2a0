"""Data Hub page and its API: the coverage grid (``ats.market_data.coverage``, the thresholds of
``ats data coverage``) and the "Run backfill" action (``POST /api/backfill``, a background job)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...timeutil import TIMEFRAME_SECONDS
from ..deps import get_conn, param_error, render

router = APIRouter()


def grid(conn: psycopg.Connection, as_of: str | None = None) -> dict:
    """``coverage(conn, as_of)`` rows plus the symbol and timeframe axes of the grid."""
    from ...market_data.coverage import coverage

    rows = coverage(conn, as_of)
    syms = sorted({r["symbol"] for r in rows})
    tfs = sorted({r["timeframe"] for r in rows}, key=lambda t: TIMEFRAME_SECONDS.get(t, 0))
    return {"as_of": rows[0]["freshness"]["as_of"] if rows else as_of, "symbols": syms, "timeframes": tfs,
            "rows": rows}


def _as_of(as_of: str | None = Query(None, description="ISO-8601 UTC time to judge freshness at (default now)")):
    if as_of is None:
        return None
    from ...timeutil import parse_ts

    try:
        parse_ts(as_of, what="as_of")
    except Exception:
        raise param_error("as_of", f"not an ISO-8601 time: {as_of!r}")
    return as_of


@router.get("/api/coverage", tags=["datahub"])
def api_coverage(as_of: str | None = Depends(_as_of), conn=Depends(get_conn)) -> dict:
    """The coverage grid (symbol x timeframe) with gaps, freshness and green/amber/red status."""
    return grid(conn, as_of)


class BackfillRequest(BaseModel):
    """Body of ``POST /api/backfill``: one series; ``source`` defaults to bybit for crypto, alpaca otherwise."""

    symbol: str
    timeframe: str = "1h"
    source: str | None = None
    start: str | None = None
    end: str | None = None


@router.post("/api/backfill", tags=["datahub"], status_code=202)
def api_backfill(req: BackfillRequest, request: Request):
    """Start a backfill job: 202 ``{job_id}``; 409 ``{detail, holder}`` while another heavy run holds the lock."""
    import re

    if not re.match(r"^[A-Za-z0-9/._-]{1,32}$", req.symbol):
        raise param_error("symbol", "expected 1-32 letters, digits or /._- characters")
    if req.timeframe not in TIMEFRAME_SECONDS:
        raise param_error("timeframe", f"expected one of {', '.join(TIMEFRAME_SECONDS)}")
    if req.source not in (None, "bybit", "alpaca"):
        raise param_error("source", "expected bybit or alpaca")
    from ...errors import BusyError

    try:
        job = request.app.state.jobs.start_backfill(req.symbol.upper().replace("/", ""), req.timeframe, req.source,
                                                    req.start, req.end)
    except BusyError as exc:
        return JSONResponse(status_code=409, content={"detail": str(exc), "holder": str(exc).split("database: ", 1)[-1].split(";")[0]})
    return JSONResponse(status_code=202, content={"job_id": job.job_id, "status": job.status})


@router.get("/api/jobs/{job_id}", tags=["datahub"])
def api_job(job_id: str, request: Request) -> dict:
    """A dashboard job's state: {job_id, kind, status ('running'|'done'|'failed'), result, error}."""
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise param_error("job_id", f"no such job {job_id!r}")
    return job.doc()


@router.get("/datahub", include_in_schema=False)
def page_datahub(request: Request, as_of: str | None = Depends(_as_of), conn=Depends(get_conn)):
    """The Data Hub page."""
    g = grid(conn, as_of)
    cells = {(r["symbol"], r["timeframe"]): r for r in g["rows"]}
    return render(request, "datahub.html", "datahub", grid=g, cells=cells, as_of_input=as_of)
