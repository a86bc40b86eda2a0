"""Shared request plumbing: database connections, the account parameter, template rendering, JSON coercion."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import psycopg
from fastapi import HTTPException, Query, Request
from fastapi.templating import Jinja2Templates

from .i18n import DICTS, EN, LOCALES

PKG = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(PKG / "templates"))
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def param_error(name: str, msg: str) -> HTTPException:
    """A 422 whose detail names the offending parameter (``{"detail": "parameter 'x': ...", "parameter": x}``)."""
    return HTTPException(status_code=422, detail={"parameter": name, "message": f"parameter {name!r}: {msg}"})


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled autocommit connection (dict rows) to the dashboard's database for one request."""
    with request.app.state.pool().connection() as conn:
        yield conn


def accounts(conn: psycopg.Connection) -> list[str]:
    """Accounts with engine runs (distinct ``engine_runs.account_id``), 'default' first when present."""
    rows = conn.execute("SELECT DISTINCT account_id FROM engine_runs ORDER BY account_id").fetchall()
    ids = [r["account_id"] for r in rows]
    return sorted(ids, key=lambda a: (a != "default", a)) or ["default"]


def account_param(account: str = Query("default", description="account id (distinct engine_runs.account_id)")
                  ) -> str:
    """Validate the ``account`` query parameter's form (422 naming it otherwise)."""
    if not _ACCOUNT_RE.match(account):
        raise param_error("account", "expected 1-64 letters, digits or _.:- characters")
    return account


def check_account(conn: psycopg.Connection, account: str) -> None:
    """422 naming ``account`` when it has no engine run (and is not the default)."""
    if account != "default" and account not in accounts(conn):
        raise param_error("account", f"unknown account {account!r} (no engine_runs row)")


def run_param(run: str | None = Query(None, description="engine run id (default: the account's latest run, as "
                                                         "`ats pnl`)")) -> str | None:
    """Validate the ``run`` query parameter's form (422 naming it otherwise)."""
    if run is not None and not _ACCOUNT_RE.match(run):
        raise param_error("run", "expected 1-64 letters, digits or _.:- characters")
    return run or None


def account_runs(conn: psycopg.Connection, account: str) -> list[dict]:
    """Runs of ``account`` that have snapshots, newest first: [{run_id, mode, status, started_at}]."""
    return conn.execute(
        """SELECT r.run_id, r.mode, r.status, r.started_at FROM engine_runs r
            WHERE r.account_id = %s AND EXISTS (SELECT 1 FROM portfolio_hourly_snapshots s WHERE s.run_id = r.run_id)
            ORDER BY r.started_at DESC, r.run_id DESC LIMIT 50""", (account,)).fetchall()


def check_run(conn: psycopg.Connection, account: str, run: str | None) -> None:
    """422 naming ``run`` when it is not a run of ``account``."""
    if run is not None and conn.execute("SELECT 1 FROM engine_runs WHERE run_id = %s AND account_id = %s",
                                        (run, account)).fetchone() is None:
        raise param_error("run", f"no engine run {run!r} for account {account!r}")


def lang_of(request: Request) -> str:
    """Server-side render language: ``?lang=zh`` or the ``ats_lang`` cookie, else English."""
    lang = request.query_params.get("lang") or request.cookies.get("ats_lang") or "en"
    return lang if lang in DICTS else "en"


def render(request: Request, template: str, page: str, **ctx) -> object:
    """Render a page template with the translator ``t``, the language, both dictionaries and the nav state."""
    lang = lang_of(request)
    d = DICTS[lang]

    def t(key: str) -> str:
        return d[key] if key in d else EN[key]

    base = {"request": request, "t": t, "lang": lang, "locale": LOCALES[lang], "page": page,
            "dicts_json": json.dumps(DICTS, ensure_ascii=False), "locales_json": json.dumps(LOCALES)}
    return TEMPLATES.TemplateResponse(request, template, {**base, **ctx})


def plain(obj):
    """Recursively turn Decimals/datetimes into floats/ISO strings so the object is JSON-ready."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    return obj
