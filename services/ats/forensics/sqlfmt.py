"""Helpers shared by the forensic reports: queries recorded for report appendices, markdown tables, money.

JSON-safe values come from :func:`ats.jsonutil.jsonable` (re-exported here).

Every figure in a report must be reproducible by a query printed in its appendix. Procedures therefore run
their SQL through a :class:`QueryLog`, which executes the statement and keeps the statement with its parameters
inlined as SQL literals (``render_sql``) so an operator can paste it into ``psql`` or the
``mcp__ats-postgres__query`` tool.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

import psycopg

from ..jsonutil import UTC, iso_utc, jsonable  # noqa: F401 - jsonable is re-exported for the reports


def iso(ts: datetime | None) -> str | None:
    """An aware datetime as ISO-8601 UTC (``2021-05-19T13:00:00+00:00``); naive values are taken as UTC."""
    return None if ts is None else iso_utc(ts)


def dumps(obj: Any, **kw) -> str:
    """``json.dumps(jsonable(obj))`` with stable key order and indentation by default."""
    kw.setdefault("indent", 2)
    kw.setdefault("sort_keys", False)
    return json.dumps(jsonable(obj), **kw)


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, Decimal)):
        return str(v)
    if isinstance(v, datetime):
        return f"'{iso(v)}'::timestamptz"
    if isinstance(v, (list, tuple)):
        return "ARRAY[" + ", ".join(_literal(x) for x in v) + "]"
    s = str(v).replace("'", "''")
    return f"'{s}'"


def render_sql(sql: str, params: dict | None) -> str:
    """Inline ``%(name)s`` parameters as SQL literals (strings quoted, datetimes as ``'...'::timestamptz``).

    Only for display in report appendices; execution always uses bound parameters.
    """
    text = " ".join(line.strip() for line in sql.strip().splitlines())
    if not params:
        return text.replace("%%", "%")
    out = text
    for k, v in params.items():
        ph = f"%({k})s"
        if ph in out:  # a literal is rendered only for a placeholder the statement uses (arrays can be long)
            out = out.replace(ph, _literal(v))
    return out.replace("%%", "%")


class QueryLog:
    """Runs queries on one connection and remembers them (name, sql with literals, row count)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.entries: list[dict] = []

    def all(self, name: str, sql: str, params: dict | None = None, *, record: bool = True) -> list[dict]:
        """Execute and return every row (dicts); records the query under ``name`` unless ``record`` is False."""
        rows = self.conn.execute(sql, params or {}).fetchall()
        if record:
            self.entries.append({"name": name, "sql": render_sql(sql, params), "rows": len(rows)})
        return [dict(r) for r in rows]

    def record(self, name: str, sql: str, params: dict | None, rows: int) -> None:
        """Add an appendix entry for a statement that already ran (``rows``: how many rows it returned)."""
        self.entries.append({"name": name, "sql": render_sql(sql, params), "rows": rows})

    def batch(self, stmts: list[tuple[str, str, dict | None, bool]]) -> list[list[dict]]:
        """Run several independent statements in ONE round trip (libpq pipeline mode) and return their rows.

        ``stmts``: ``[(name, sql, params, record)]``; each is recorded like :meth:`all` (in the order given) when
        its ``record`` is True. Returns one list of row dicts per statement, in order. The statements run in
        the connection's current transaction exactly as :meth:`all` would run them one by one; a database
        error aborts the batch (and the transaction) and is raised, as it would be for the failing statement.
        """
        if not stmts:
            return []
        if len(stmts) == 1 or not psycopg.Pipeline.is_supported():
            return [self.all(n, s, p, record=r) for n, s, p, r in stmts]
        conn = self.conn
        with conn.pipeline() as pipe:
            curs = [conn.execute(s, p or {}) for _, s, p, _ in stmts]
            pipe.sync()  # send everything with one Sync: the results and ReadyForQuery come back together
            out = [[r if type(r) is dict else dict(r) for r in c.fetchall()] for c in curs]
        for (n, s, p, r), rows in zip(stmts, out):
            if r:
                self.entries.append({"name": n, "sql": render_sql(s, p), "rows": len(rows)})
        return out

    def one(self, name: str, sql: str, params: dict | None = None, *, record: bool = True) -> dict | None:
        """Execute and return the first row or None."""
        rows = self.all(name, sql, params, record=record)
        return rows[0] if rows else None


def table_exists(conn: psycopg.Connection, name: str) -> bool:
    """True when a table (or view) ``name`` exists in the search path."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS e", (name,)).fetchone()
    return bool(row["e"] if isinstance(row, dict) else row[0])


def fnum(v: Any) -> float | None:
    """A numeric DB value as float (None stays None)."""
    if v is None:
        return None
    return float(v)


def money(v: Any, nd: int = 2) -> str:
    """Format a USD amount for markdown: ``+12.34`` / ``-5.00`` (``n/a`` for None)."""
    if v is None:
        return "n/a"
    return f"{float(v):+,.{nd}f}"


def usd(v: Any, nd: int = 2) -> str:
    """Format a USD level (equity, notional, fees) without a sign: ``10,017.89`` (``n/a`` for None)."""
    if v is None:
        return "n/a"
    return f"{float(v):,.{nd}f}"


def md_table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A GitHub-flavoured markdown table (cells have '|' and newlines escaped)."""
    hs = list(headers)

    def cell(x: Any) -> str:
        s = "" if x is None else str(x)
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(hs) + " |", "|" + "|".join("---" for _ in hs) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(x) for x in r) + " |")
    return "\n".join(lines)
