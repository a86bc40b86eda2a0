"""Read-only SQL for agents: the core behind the ats-postgres MCP tools `query`, `list_tables`,
`describe_table` and `explain`.

Least privilege is enforced by PostgreSQL, never by inspecting the SQL text:

1. **Role.** Every statement runs as ``ats_readonly`` (``ats.db.readonly_url()``): SELECT on the project's
   tables only, ``default_transaction_read_only = on``, no file / large-object / backend-signalling functions
   (migration 0001).
2. **Transaction.** Each call runs in its own ``READ ONLY`` transaction with ``SET LOCAL statement_timeout``
   and is always rolled back, so even session-level ``set_config(..., false)`` changes do not survive it;
   session advisory locks are released after every call.
3. **Protocol.** The text is first parsed as an unnamed server-side prepared statement (Parse + Describe of the
   extended query protocol). PostgreSQL refuses to prepare more than one command ("cannot insert multiple
   commands into a prepared statement"), so stacked statements such as ``SELECT 1; COMMIT; DROP TABLE x`` are
   rejected by the server before anything runs. A statement the server describes as returning no columns
   (``COMMIT``, ``SET``, ``DO``, ``COPY``, DDL, DML without RETURNING) is refused without being executed. The
   statement is then executed through the extended protocol again (``Cursor.stream``, which always uses it) in
   chunks, and only ``limit + 1`` rows are read; the rest is cancelled.
4. **Size.** Results stop at ``limit`` rows (max ``MAX_LIMIT``) or ``ATS_MCP_MAX_RESULT_BYTES`` of JSON
   (default 1 MB); single text values longer than ``ATS_MCP_MAX_CELL_CHARS`` (default 20,000) are clipped.
   Either sets ``truncated: true`` with the reason.

Environment: ``ATS_MCP_STATEMENT_TIMEOUT_MS`` (default 5000) for `query`/`explain`/catalog tools,
``ATS_MCP_TOOL_TIMEOUT_MS`` (default 60000) for the forensic procedures run through :func:`ReadOnlyDB.run`.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row, tuple_row

from ..errors import AtsError
from ..jsonutil import jsonable as _jsonable

DEFAULT_LIMIT = 500
MAX_LIMIT = 10_000


class QueryRefused(AtsError):
    """The server (or a size/row guard) refused the statement; the message names the reason and SQLSTATE."""


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise AtsError(f"environment variable {name}={os.environ.get(name)!r} is not an integer") from None


def statement_timeout_ms() -> int:
    """Per-statement timeout (ms) for `query`, `explain` and the catalog tools: ``ATS_MCP_STATEMENT_TIMEOUT_MS``."""
    return _env_int("ATS_MCP_STATEMENT_TIMEOUT_MS", 5000)


def tool_timeout_ms() -> int:
    """Per-statement timeout (ms) for forensic procedures: ``ATS_MCP_TOOL_TIMEOUT_MS`` (default 60000)."""
    return _env_int("ATS_MCP_TOOL_TIMEOUT_MS", 60000)


def jsonable(value: Any) -> Any:
    """A query result cell (or row, or catalog document) in JSON-safe form: :func:`ats.jsonutil.jsonable`
    with integral NUMERIC values kept as ints, as the query tool shows values as stored."""
    return _jsonable(value, integral_decimals_as_int=True)


def _pg_message(exc: BaseException) -> str:
    """One line: the server's primary message plus SQLSTATE when there is one."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    state = getattr(exc, "sqlstate", None)
    return f"{msg} (SQLSTATE {state})" if state else msg


class ReadOnlyDB:
    """A small pool of ``ats_readonly`` connections and the guarded operations on them.

    ``url`` is the read-only DSN (default: ``ats.db.readonly_url()`` resolved lazily on first use, so a server
    can start before the database is reachable). Thread-safe: MCP tools run in worker threads.
    """

    def __init__(self, url: str | None = None, *, max_size: int = 4, application_name: str = "ats-mcp-postgres"):
        self._url = url
        self._max_size = max_size
        self._app = application_name
        self._pool = None
        self._lock = threading.Lock()
        self._type_names: dict[tuple[int, int], str] = {}

    # ---- connections -------------------------------------------------------------------------------------
    def url(self) -> str:
        """The read-only DSN in use (resolved on first call)."""
        if self._url is None:
            from ..db import readonly_url

            self._url = readonly_url()
        return self._url

    def _get_pool(self):
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url(), min_size=0, max_size=self._max_size, open=True, timeout=15,
                    kwargs={"autocommit": False, "row_factory": dict_row, "prepare_threshold": None,
                            "application_name": self._app})
            return self._pool

    def close(self) -> None:
        """Close the pool (idempotent)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    @contextmanager
    def transaction(self, timeout_ms: int) -> Iterator[psycopg.Connection]:
        """A dict-row ``ats_readonly`` connection inside a READ ONLY transaction with ``statement_timeout``;
        always rolled back afterwards (and session advisory locks released)."""
        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except psycopg.OperationalError as exc:
            from ..db.connection import describe_url

            raise AtsError(f"cannot connect to PostgreSQL as ats_readonly ({describe_url(self.url())}): "
                           f"{_pg_message(exc)}") from exc
        except Exception as exc:  # pool timeout: the server did not answer
            raise AtsError(f"no read-only database connection available: {exc}") from exc
        try:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout_ms)}ms",))
            yield conn
        finally:
            try:
                conn.rollback()
                conn.execute("SELECT pg_advisory_unlock_all()")
                conn.rollback()
            except psycopg.Error:
                pass  # a broken connection is discarded by the pool (state check on return)
            pool.putconn(conn)

    def run(self, fn: Callable[..., Any], *args: Any, timeout_ms: int | None = None, **kwargs: Any) -> Any:
        """Call ``fn(conn, *args, **kwargs)`` on a read-only connection (forensic procedures); returns its result.

        Database errors become AtsError with the server's message.
        """
        try:
            with self.transaction(timeout_ms or tool_timeout_ms()) as conn:
                return fn(conn, *args, **kwargs)
        except psycopg.Error as exc:
            raise AtsError(f"{getattr(fn, '__name__', 'procedure')} failed: {_pg_message(exc)}") from exc

    # ---- the guarded statement ---------------------------------------------------------------------------
    def _describe(self, conn: psycopg.Connection, sql: str) -> list[tuple[str, int, int]]:
        """Parse ``sql`` as the unnamed prepared statement and describe it: [(name, type oid, typmod)].

        Raises QueryRefused for: several commands (refused by the server), a parse/permission error, bind
        parameters, or a statement that returns no rows.
        """
        pgconn = conn.pgconn
        enc = conn.info.encoding
        res = pgconn.prepare(b"", sql.encode(enc))
        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
            err = pgerrors.error_from_result(res, encoding=enc)
            raise QueryRefused(f"refused by PostgreSQL: {_pg_message(err)}")
        desc = pgconn.describe_prepared(b"")
        if desc.status != psycopg.pq.ExecStatus.COMMAND_OK:
            err = pgerrors.error_from_result(desc, encoding=enc)
            raise QueryRefused(f"refused by PostgreSQL: {_pg_message(err)}")
        if desc.nparams:
            raise QueryRefused(f"the statement has {desc.nparams} bind parameter(s) ($1...): inline the values")
        if desc.nfields == 0:
            raise QueryRefused("refused: the statement returns no rows (only queries are allowed: SELECT, VALUES, "
                               "TABLE, WITH ... SELECT, SHOW, EXPLAIN); writes go through the narrow write tools")
        return [((desc.fname(i) or b"?").decode(enc, "replace"), desc.ftype(i), desc.fmod(i))
                for i in range(desc.nfields)]

    def _type_names_for(self, conn: psycopg.Connection, cols: list[tuple[str, int, int]]) -> list[str]:
        want = [(oid, mod) for _, oid, mod in cols if (oid, mod) not in self._type_names]
        if want:
            rows = conn.execute(
                """SELECT u.t::int AS oid, u.m AS mod, format_type(u.t, nullif(u.m, -1)) AS name
                   FROM unnest(%s::oid[], %s::int4[]) AS u(t, m)
                   JOIN pg_type ON pg_type.oid = u.t""",
                ([o for o, _ in want], [m for _, m in want])).fetchall()
            for r in rows:
                self._type_names[(r["oid"], r["mod"])] = r["name"]
        return [self._type_names.get((oid, mod), str(oid)) for _, oid, mod in cols]

    def query(self, sql: str, limit: int = DEFAULT_LIMIT, *, timeout_ms: int | None = None,
              max_bytes: int | None = None, max_cell_chars: int | None = None) -> dict:
        """Run one read-only statement.

        Returns ``{"columns": [names], "types": [pg type names], "rows": [[json values]], "row_count": n,
        "truncated": bool, "truncated_reason": None|"limit"|"bytes"|"cell", "limit": limit,
        "elapsed_ms": float}``. Raises QueryRefused (not one statement, no rows, parameters, server error,
        timeout) and UsageError-like QueryRefused for a bad limit.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise QueryRefused("empty statement")
        if not isinstance(limit, int) or limit < 1:
            raise QueryRefused(f"limit must be a positive integer (got {limit!r})")
        limit = min(limit, MAX_LIMIT)
        max_bytes = max_bytes or _env_int("ATS_MCP_MAX_RESULT_BYTES", 1_000_000)
        max_cell = max_cell_chars or _env_int("ATS_MCP_MAX_CELL_CHARS", 20_000)
        timeout = timeout_ms or statement_timeout_ms()
        import time as _time

        t0 = _time.perf_counter()
        with self.transaction(timeout) as conn:
            try:
                cols = self._describe(conn, sql)
                types = self._type_names_for(conn, cols)
                rows: list[list[Any]] = []
                size = 2
                reason = None
                cur = conn.cursor(row_factory=tuple_row)
                for row in cur.stream(sql, size=min(limit + 1, 500)):
                    if len(rows) >= limit:
                        reason = "limit"
                        break
                    out = []
                    for v in row:
                        j = jsonable(v)
                        if isinstance(j, str) and len(j) > max_cell:
                            j = j[:max_cell] + f"...[clipped {len(j) - max_cell} chars]"
                            reason = reason or "cell"
                        out.append(j)
                    row_bytes = len(json.dumps(out, default=str)) + 1
                    if size + row_bytes > max_bytes:
                        reason = "bytes"
                        break
                    size += row_bytes
                    rows.append(out)
            except QueryRefused:
                raise
            except pgerrors.QueryCanceled as exc:
                raise QueryRefused(f"cancelled: statement_timeout of {timeout} ms reached ({_pg_message(exc)})") from exc
            except psycopg.Error as exc:
                raise QueryRefused(f"refused by PostgreSQL: {_pg_message(exc)}") from exc
        return {"columns": [c[0] for c in cols], "types": types, "rows": rows, "row_count": len(rows),
                "truncated": reason is not None, "truncated_reason": reason, "limit": limit,
                "elapsed_ms": round((_time.perf_counter() - t0) * 1000, 2)}

    def explain(self, sql: str, *, analyze: bool = False, fmt: str = "text") -> dict:
        """EXPLAIN (optionally ANALYZE, which executes the statement read-only under the timeout) of one statement.

        Returns ``{"plan": text or JSON plan, "format": fmt, "analyze": bool}``; same guards as :meth:`query`.
        """
        if fmt not in ("text", "json"):
            raise QueryRefused(f"format must be 'text' or 'json' (got {fmt!r})")
        opts = ["FORMAT JSON" if fmt == "json" else "FORMAT TEXT"]
        if analyze:
            opts += ["ANALYZE", "BUFFERS"]
        res = self.query(f"EXPLAIN ({', '.join(opts)}) {sql}", limit=MAX_LIMIT)
        if fmt == "json":
            plan = res["rows"][0][0] if res["rows"] else None
            if isinstance(plan, str):
                plan = json.loads(plan)
        else:
            plan = "\n".join(r[0] for r in res["rows"])
        return {"plan": plan, "format": fmt, "analyze": analyze}

    # ---- catalog -----------------------------------------------------------------------------------------
    def list_tables(self, schema: str = "public") -> list[dict]:
        """Tables, views and materialized views of ``schema``: name, kind, estimated_rows (pg_class.reltuples;
        None when never analyzed), size_bytes, comment."""
        sql = """SELECT c.relname AS name,
                        CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                             WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END AS kind,
                        CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS estimated_rows,
                        pg_total_relation_size(c.oid) AS size_bytes,
                        obj_description(c.oid, 'pg_class') AS comment
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                 ORDER BY c.relname"""
        try:
            with self.transaction(statement_timeout_ms()) as conn:
                return [jsonable(dict(r)) for r in conn.execute(sql, (schema,)).fetchall()]
        except psycopg.Error as exc:
            raise AtsError(f"list_tables failed: {_pg_message(exc)}") from exc

    def describe_table(self, name: str) -> dict:
        """Columns (name, type, nullable, default, comment), indexes (name, definition), constraints,
        estimated_rows, size_bytes and comment of table/view ``name`` ('table' or 'schema.table').

        Raises AtsError when the relation does not exist (or is not visible to ats_readonly).
        """
        try:
            with self.transaction(statement_timeout_ms()) as conn:
                try:
                    rel = conn.execute(
                        """SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind,
                                  CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS estimated_rows,
                                  pg_total_relation_size(c.oid) AS size_bytes,
                                  obj_description(c.oid, 'pg_class') AS comment
                           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.oid = to_regclass(%s)""", (name,)).fetchone()
                except pgerrors.InvalidName as exc:  # e.g. a.b.c.d
                    raise AtsError(f"describe_table: invalid name {name!r}: {_pg_message(exc)}") from exc
                if rel is None:
                    raise AtsError(f"describe_table: no table or view named {name!r} (try list_tables)")
                oid = rel["oid"]
                cols = conn.execute(
                    """SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
                              NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS "default",
                              col_description(a.attrelid, a.attnum) AS comment
                       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                       WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
                       ORDER BY a.attnum""", (oid,)).fetchall()
                idx = conn.execute(
                    """SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition,
                              x.indisprimary AS primary, x.indisunique AS unique
                       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                       WHERE x.indrelid = %s ORDER BY i.relname""", (oid,)).fetchall()
                cons = conn.execute(
                    """SELECT conname AS name, contype AS type, pg_get_constraintdef(oid) AS definition
                       FROM pg_constraint WHERE conrelid = %s ORDER BY conname""", (oid,)).fetchall()
                kinds = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
                         "f": "foreign table"}
                return jsonable({
                    "schema": rel["schema"], "name": rel["name"], "kind": kinds.get(rel["relkind"], rel["relkind"]),
                    "estimated_rows": rel["estimated_rows"], "size_bytes": rel["size_bytes"],
                    "comment": rel["comment"], "columns": [dict(c) for c in cols], "indexes": [dict(i) for i in idx],
                    "constraints": [{**dict(c), "type": {"p": "primary key", "f": "foreign key", "u": "unique",
                                                         "c": "check", "x": "exclusion", "t": "trigger"}.get(
                                                             c["type"], c["type"])} for c in cons],
                })
        except psycopg.Error as exc:
            raise AtsError(f"describe_table failed: {_pg_message(exc)}") from exc
