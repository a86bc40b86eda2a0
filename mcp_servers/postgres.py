"""ats-postgres: the ATS database for Claude Code, least privilege (MCP server, stdio).

Read tools (always): ``query``, ``list_tables``, ``describe_table``, ``explain`` (ats.db.readonly_query, run as
role ``ats_readonly``: one statement enforced by PostgreSQL's extended query protocol, READ ONLY transaction,
statement timeout, row/byte limits) and the forensic tools ``investigate_symbol``, ``portfolio_pnl``,
``health_summary``, ``blocked_signals`` (the deterministic procedures, also run as ``ats_readonly``).

Write tools (only with ``--allow-writes``): ``append_lesson``, ``add_lesson`` (LL-NNN), ``record_report``,
``write_investigation_report``;
each is a parameterized INSERT (owner role) plus an audit row in ``system_events`` (component 'mcp').

Time: each forensic tool call has a total budget (``ATS_MCP_TOOL_BUDGET_MS``, default 45 s) and every statement
it runs gets the remaining budget as ``statement_timeout`` (``_common.TimeBudget``), so a call ends with a clear
error before Claude Code's MCP tool timeout (60 s by default; ``.mcp.json`` sets the per-server ``timeout``
field, which Claude Code 2.1.329's config schema documents as "Per-server tool-call timeout in milliseconds.
Overrides the MCP_TOOL_TIMEOUT environment variable for this server", to 90 s). ``query`` / ``explain``
run one statement under ATS_MCP_STATEMENT_TIMEOUT_MS (5 s).

Run: ``python -m mcp_servers.postgres [--allow-writes]`` (or ``mcp_servers/launch postgres``, as .mcp.json does).
Every call is logged at INFO to ``logs/mcp-postgres.log``.
"""

from __future__ import annotations

import argparse
import sys

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from ats.log import setup_logging
from ats.paths import bound_account
from ats.db.readonly_query import DEFAULT_LIMIT, ReadOnlyDB, jsonable

from ._common import CallLog, TimeBudget, ToolResult

SERVICE = "mcp-postgres"
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)

INSTRUCTIONS = """ATS PostgreSQL (role ats_readonly; one statement per call; READ ONLY; timeout; row limit).
Prefer the named forensic tools (investigate_symbol, health_summary, blocked_signals, portfolio_pnl) over
hand-written SQL; use list_tables / describe_table before query. Portfolio P&L comes from
portfolio_hourly_snapshots only (never sum balances or net_pnl_daily_usd). Times are UTC ISO-8601."""


def build_server(*, allow_writes: bool = False, readonly_url: str | None = None,
                 owner_url: str | None = None) -> MCPServer:
    """The ats-postgres MCPServer. ``readonly_url`` / ``owner_url`` default to ``ats.db.readonly_url()`` /
    ``ats.db.database_url()`` resolved on first use (so the server starts even before the database is up)."""
    log = CallLog(setup_logging(SERVICE))
    ro = ReadOnlyDB(readonly_url)
    server = MCPServer("ats-postgres", log_level="WARNING", instructions=INSTRUCTIONS + (
        "\nWrite tools enabled: append_lesson, add_lesson, record_report, write_investigation_report." if allow_writes else
        "\nStarted read-only: no write tools."))

    @server.tool(annotations=READ)
    def query(sql: str, limit: int = DEFAULT_LIMIT) -> ToolResult:
        """Run exactly ONE read-only SQL statement (SELECT / VALUES / WITH ... SELECT / SHOW / EXPLAIN) as role
        ats_readonly. Several statements, writes, DDL, SET/COMMIT and functions outside the role's rights are
        refused by PostgreSQL. Returns {columns, types, rows (JSON arrays), row_count, truncated,
        truncated_reason ('limit'|'bytes'|'cell'|null), limit, elapsed_ms}. limit: max rows (default 500, max
        10000). Statement timeout: ATS_MCP_STATEMENT_TIMEOUT_MS (5 s)."""
        return log.run("query", {"sql": sql, "limit": limit}, lambda: ro.query(sql, limit))

    @server.tool(annotations=READ)
    def list_tables() -> ToolResult:
        """Tables and views of schema public: name, kind, estimated_rows (planner estimate, null if never
        analyzed), size_bytes, comment."""
        return log.run("list_tables", {}, lambda: {"tables": ro.list_tables()})

    @server.tool(annotations=READ)
    def describe_table(name: str) -> ToolResult:
        """One table or view ('signals' or 'public.signals'): columns (name, type, nullable, default, comment),
        indexes (name, definition), constraints, estimated_rows, size_bytes, comment."""
        return log.run("describe_table", {"name": name}, lambda: ro.describe_table(name))

    @server.tool(annotations=READ)
    def explain(sql: str, analyze: bool = False, format: str = "text") -> ToolResult:
        """EXPLAIN plan of ONE statement (same guards as query). analyze=true executes it read-only under the
        statement timeout (EXPLAIN ANALYZE, BUFFERS). format: 'text' or 'json'."""
        return log.run("explain", {"sql": sql, "analyze": analyze, "format": format},
                       lambda: ro.explain(sql, analyze=analyze, fmt=format))

    @server.tool(annotations=READ)
    def investigate_symbol(symbol: str, since: str | None = None, until: str | None = None,
                           run_id: str | None = None) -> ToolResult:
        """Everything about one symbol in one engine run (latest run that touched it unless run_id): signals,
        blocked signals with gate and reason, orders, fills, position evaluations, TP/SL target history,
        system events, trades with P&L per trade (USD, net of fees), reconciliation against hourly snapshots,
        timeline, anomalies, open questions, and the SQL behind every figure. since/until: ISO-8601 UTC,
        inclusive, engine clock; omit for the whole run."""
        def body():
            from ats.forensics.queries import investigate_symbol as fn

            return _run_budgeted(ro, "investigate_symbol", fn, symbol, since=since, until=until, run_id=run_id)
        return log.run("investigate_symbol", {"symbol": symbol, "since": since, "until": until, "run_id": run_id},
                       body)

    @server.tool(annotations=READ)
    def portfolio_pnl(run_id: str | None = None) -> ToolResult:
        """Portfolio P&L windows (today, 7d, 30d, 6m, all_time; USD and percent) from
        portfolio_hourly_snapshots only, for the latest run of the account unless run_id is given."""
        def body():
            from ats.portfolio.pnl import pnl_windows

            return _run_budgeted(ro, "portfolio_pnl", pnl_windows, account_id=account_id, run_id=run_id)
        # the account is the server's (ATS_ACCOUNT when it was started), never a model's argument; its read-only
        # role (ats_ro_<id>) sees no other account's rows anyway (row-level security, migration 0130)
        account_id = bound_account()
        return log.run("portfolio_pnl", {"account_id": account_id, "run_id": run_id}, body)

    @server.tool(annotations=READ)
    def health_summary(run_id: str | None = None) -> ToolResult:
        """System health for the latest engine run (or run_id): circuit breaker states and trips, feed
        freshness per symbol/timeframe, coverage status, recent errors and warnings, last runs, latest
        portfolio snapshot."""
        def body():
            from ats.forensics.queries import health_summary as fn

            return _run_budgeted(ro, "health_summary", fn, run_id=run_id)
        return log.run("health_summary", {"run_id": run_id}, body)

    @server.tool(annotations=READ)
    def blocked_signals(since: str, strategy: str | None = None, until: str | None = None,
                        limit: int = 1000) -> ToolResult:
        """Blocked signals since `since` (ISO-8601 UTC, engine clock), optionally for one strategy and up to
        `until`: rows (newest first, at most limit) with gate ('buy_gate', 'regime', 'breaker:<name>', ...) and
        reason, plus counts by gate, reason, strategy, symbol and day over every matching row."""
        def body():
            from ats.forensics.queries import blocked_signals as fn

            return _run_budgeted(ro, "blocked_signals", fn, since, strategy=strategy, until=until, limit=limit)
        return log.run("blocked_signals", {"since": since, "strategy": strategy, "until": until, "limit": limit},
                       body)

    if allow_writes:
        _add_write_tools(server, log, owner_url)
    server._ats_readonly = ro  # for tests and clean shutdown
    return server


def _run_budgeted(ro: ReadOnlyDB, tool: str, fn, *args, **kwargs):
    """``ro.run(fn, ...)`` under one :class:`TimeBudget`: each statement's timeout is what is left of it."""
    budget = TimeBudget(tool)
    return ro.run(budget.wrap(fn), *args, timeout_ms=budget.statement_timeout_ms(), **kwargs)


def _owner_conn(owner_url: str | None):
    from ats.db import connect

    return connect(owner_url, application_name=SERVICE)


def _add_write_tools(server: MCPServer, log: CallLog, owner_url: str | None) -> None:
    from ats.knowledge import docs_records

    @server.tool(annotations=WRITE)
    def append_lesson(title: str, body: str, tags: list[str] | None = None, source: str = "mcp") -> ToolResult:
        """Append a lesson (append-only table `lessons`; searchable through ats-docs as lesson:<id>): a short
        title, the body (what happened, the wrong and the right way), tags. Audited in system_events."""
        def run():
            with _owner_conn(owner_url) as conn:
                return docs_records.append_lesson(conn, title, body, tags, source)
        return log.run("append_lesson", {"title": title, "body": body, "tags": tags, "source": source}, run)

    @server.tool(annotations=WRITE)
    def add_lesson(title: str, trigger: str, root_cause: str, fix_applied: str, prevention: str,
                   lesson_date: str | None = None, impact_usd: float | None = None, tags: list[str] | None = None,
                   links: dict | None = None, rule: str | None = None, correction_of: str | None = None) -> ToolResult:
        """Add a structured lesson LL-NNN (or, with correction_of = 'LL-NNN', its next version): trigger, root cause,
        fix applied, prevention, optional date (YYYY-MM-DD), impact in USD, tags (symbol:X, strategy:Y,
        order_type:Z, venue:V), links {incident_report, plan, commit} and a machine-checkable prevention rule
        ('block entries [in SYMBOL] [for strategy NAME] [side long|short] [during REGIME]' or 'require order_class =
        mleg for strategies with more than one leg'), enforced before every entry. Writes kb/lessons/LL-NNN.md.
        Audited in system_events. Returns {ll, version, title, rule, mirrored, event_id}."""
        def run():
            from ats.db.events import record_event
            from ats.knowledge import lessons as ls

            d = ls.LessonDraft(title=title, trigger=trigger, root_cause=root_cause, fix_applied=fix_applied,
                               prevention=prevention, lesson_date=ls._date(lesson_date, "add_lesson"),
                               impact_usd=ls._usd(impact_usd, "add_lesson"), tags=list(tags or []),
                               links=dict(links or {}), rule=rule or None,
                               ll_number=ls.parse_ll(correction_of) if correction_of else None, source="mcp")
            with _owner_conn(owner_url) as conn:
                row = ls.add_lesson(conn, d)
                ev = record_event(conn, "mcp", "lesson_added",
                                  payload={"ll": row["ll"], "version": row["version"], "title": row["title"],
                                           "rule": row.get("rule")})
                conn.commit()
                written = ls.mirror(conn)
            return jsonable({"ll": row["ll"], "version": row["version"], "title": row["title"],
                             "rule": row.get("rule"), "mirrored": [str(p) for p in written], "event_id": ev})
        return log.run("add_lesson", {"title": title, "rule": rule, "correction_of": correction_of, "tags": tags},
                       run)

    @server.tool(annotations=WRITE)
    def record_report(kind: str, path: str, summary: str = "") -> ToolResult:
        """Register a report file in `reports_registry` (kind: investigation | health_check | daily | weekly |
        watchlist | kb | plan | backtest | other; path relative to the project root; one-paragraph summary).
        Audited in system_events."""
        def run():
            with _owner_conn(owner_url) as conn:
                return docs_records.record_report(conn, kind, path, summary)
        return log.run("record_report", {"kind": kind, "path": path, "summary": summary}, run)

    @server.tool(annotations=WRITE)
    def write_investigation_report(symbol: str, since: str | None = None, until: str | None = None) -> ToolResult:
        """Write reports/investigations/<date>_<SYMBOL>.md and its .json twin (ats.forensics.investigate),
        register the report in reports_registry and audit it in system_events. Returns {paths, md_path,
        json_path, symbol, run_id, trades, realized_pnl_usd, reconciled, report_id, event_id}."""
        def run():
            from ats.db.events import record_event
            from ats.forensics.investigate import write_investigation

            with _owner_conn(owner_url) as conn:
                budgeted = TimeBudget("write_investigation_report").wrap(write_investigation)
                out = dict(budgeted(conn, symbol, since=since, until=until))
                conn.commit()  # end the procedure's (read) transaction before the audited writes
                reg = None
                if out.get("md_path"):
                    reg = docs_records.record_report(
                        conn, "investigation", out["md_path"],
                        f"Investigation of {out.get('symbol') or symbol.upper()} (run {out.get('run_id')}), "
                        f"since {since or 'run start'} until {until or 'run end'}: {out.get('trades')} closed trades, "
                        f"realized P&L {out.get('realized_pnl_usd')} USD, reconciled={out.get('reconciled')}")
                with conn.transaction():
                    ev = record_event(conn, "mcp", "investigation_written", symbol=(out.get("symbol") or symbol.upper()),
                                      payload={"symbol": symbol, "since": since, "until": until,
                                               "paths": out.get("paths"), "report_id": reg and reg["report_id"]})
            out.update(report_id=reg["report_id"] if reg else None, event_id=ev)
            return jsonable(out)
        return log.run("write_investigation_report", {"symbol": symbol, "since": since, "until": until}, run)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``--allow-writes`` and serve over stdio until the client disconnects."""
    p = argparse.ArgumentParser(prog="python -m mcp_servers.postgres", description=__doc__.splitlines()[0])
    p.add_argument("--allow-writes", action="store_true",
                   help="also expose append_lesson, add_lesson, record_report, write_investigation_report")
    args = p.parse_args(argv)
    server = build_server(allow_writes=args.allow_writes)
    try:
        server.run("stdio")
    finally:
        server._ats_readonly.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
