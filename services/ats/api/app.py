"""The dashboard application: ``create_app(db_url=None, root=None)``.

Security: when ``token`` is given (required for a non-loopback bind, see ``cli.py``) every request must carry it
(``Authorization: Bearer <token>``, the ``ats_token`` cookie, or ``?token=`` once, which sets the cookie); it is
compared with ``hmac.compare_digest``. The API writes only to start a job (audited in ``system_events``).
"""

from __future__ import annotations

import hmac
import threading
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .deps import PKG
from .jobs import JobManager
from .routes import analytics, assets, backtests, datahub, events, kb, reports


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _validation_422(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as one line naming the parameter."""
    errs = exc.errors()
    first = errs[0] if errs else {}
    loc = [str(x) for x in first.get("loc", ()) if x not in ("query", "body", "path")]
    name = ".".join(loc) or "request"
    return JSONResponse(status_code=422, content={"detail": f"parameter {name!r}: {first.get('msg', 'invalid')}",
                                                  "parameter": name, "errors": errs}, )


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    d = exc.detail
    if isinstance(d, dict) and "message" in d:
        return JSONResponse(status_code=exc.status_code, content={"detail": d["message"], "parameter": d["parameter"]})
    return JSONResponse(status_code=exc.status_code, content={"detail": d}, headers=getattr(exc, "headers", None))


def _token_guard(app: FastAPI, token: str):
    expected = token.encode()

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        got = ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            got = auth[7:].strip()
        got = got or request.cookies.get("ats_token", "") or request.query_params.get("token", "")
        if not hmac.compare_digest(got.encode(), expected):
            return JSONResponse(status_code=401, content={"detail": "missing or wrong dashboard token "
                                                          "(ATS_DASHBOARD_TOKEN)"})
        resp = await call_next(request)
        if request.query_params.get("token"):
            resp.set_cookie("ats_token", token, httponly=True, samesite="strict")
        return resp


def create_app(db_url: str | None = None, root: Path | str | None = None, token: str | None = None) -> FastAPI:
    """Build the dashboard app.

    Parameters
    ----------
    db_url : str, optional
        PostgreSQL DSN (default: ``ats.db.connection.database_url()``: ATS_DATABASE_URL or the embedded server).
    root : path, optional
        Project root holding ``kb/``, ``reports/`` and ``plans/`` (default ``ats.paths.project_root()``).
    token : str, optional
        When set, every request must present it (constant-time comparison); 401 otherwise.

    Returns
    -------
    FastAPI
        The app; ``app.state`` holds ``db_url``, ``root``, ``pool`` (a function returning the connection pool,
        opened on first use, closed at shutdown) and ``jobs`` (the JobManager).
    """
    from ..db.connection import database_url
    from ..paths import project_root

    holder: dict = {}
    lock = threading.Lock()

    def get_pool():
        """The app's connection pool (psycopg_pool, 1-4 connections), opened on first use."""
        with lock:
            if "pool" not in holder:
                from ..db.connection import pool

                holder["pool"] = pool(app.state.db_url, min_size=1, max_size=4)
            return holder["pool"]

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if "pool" in holder:
            holder.pop("pool").close()

    app = FastAPI(title="ATS dashboard", description="Read-only views of the ATS database and documents; the only "
                  "writes start a backfill (audited).", version="1", lifespan=lifespan)
    app.state.db_url = db_url or database_url()
    app.state.pool = get_pool
    app.state.root = Path(root).resolve() if root else project_root()
    app.state.jobs = JobManager(app.state.db_url)
    app.add_exception_handler(RequestValidationError, _validation_422)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if token:
        _token_guard(app, token)
    app.mount("/static", StaticFiles(directory=str(PKG / "static")), name="static")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    for mod in (assets, analytics, datahub, kb, reports, backtests, events):
        app.include_router(mod.router)
    return app
