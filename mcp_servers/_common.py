"""Shared plumbing of the ATS MCP servers: per-call JSON logging, error mapping and the per-call time budget.

Every tool call is logged at INFO to ``logs/<service>.log`` (``ats.log.setup_logging``: the file gets INFO and
above, stderr only WARNING and above) as one JSON line with ``tool``, ``arguments`` (long strings clipped to
2,000 chars), ``duration_ms``, ``rows`` (how many result rows the call returned; see :func:`count_rows`),
``ok`` and, on failure, ``error``. A refusal (AtsError, ToolError: the client's statement or arguments) is
still INFO; only an unexpected exception (a server bug) is logged at ERROR with its traceback, and so reaches
stderr. Failures reach the client as MCP tool errors (``is_error: true``) carrying one clear line.

Time budget: Claude Code abandons a tool call after its MCP tool timeout (60 s unless configured: the
per-server ``timeout`` field of ``.mcp.json`` or ``MCP_TOOL_TIMEOUT``), while a forensic tool runs several
statements. :class:`TimeBudget` gives one call a total budget (``ATS_MCP_TOOL_BUDGET_MS``, default 45,000 ms,
below both the 60 s default and the 90 s ``timeout`` that ``.mcp.json`` sets) and :class:`BudgetedConnection`
sets each statement's ``statement_timeout`` to what is left of it, so the call ends with a clear error before
the client gives up instead of a result nobody reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Annotated, Any, Callable

import psycopg
from mcp.server.mcpserver.exceptions import ToolError
from psycopg import errors as pgerrors
from mcp_types import CallToolResult, TextContent

from ats.errors import AtsError

_CLIP = 2000
DEFAULT_TOOL_BUDGET_MS = 45_000
MIN_STATEMENT_MS = 50  # below this, a statement is not started: the budget is used up

# Tool return annotation: the result is a JSON object (advertised as the output schema and sent as
# structured content) and its compact JSON text (what the model reads; the SDK default indents it).
ToolResult = Annotated[CallToolResult, dict[str, Any]]


def as_result(doc: dict) -> CallToolResult:
    """A tool result carrying ``doc`` as structured content and as compact JSON text."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=doc)


def _clip(v: Any) -> Any:
    if isinstance(v, str) and len(v) > _CLIP:
        return v[:_CLIP] + f"...[{len(v) - _CLIP} more chars]"
    if isinstance(v, dict):
        return {k: _clip(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clip(x) for x in v[:50]]
    return v


def count_rows(result: Any) -> int:
    """Rows a tool result carries: ``row_count`` when present, else the length of a list result, else the sum
    of the lengths of a dict's top-level lists (e.g. signals + orders + fills of an investigation), else 1."""
    if isinstance(result, dict):
        if isinstance(result.get("row_count"), int):
            return result["row_count"]
        if isinstance(result.get("results"), list):
            return len(result["results"])
        lists = [len(v) for k, v in result.items() if isinstance(v, list) and k != "queries"]
        return sum(lists) if lists else 1
    if isinstance(result, list):
        return len(result)
    return 0 if result is None else 1


class CallLog:
    """Runs tool bodies, logs each call, and maps errors to ToolError (one line for the client)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def run(self, tool: str, arguments: dict, fn: Callable[[], dict]) -> CallToolResult:
        """Call ``fn()`` (returning a JSON-serialisable dict); log tool/arguments/duration_ms/rows; return it as
        a :func:`as_result`. AtsError and unexpected errors become ToolError (an MCP tool error)."""
        t0 = time.perf_counter()
        fields: dict[str, Any] = {"tool": tool, "arguments": _clip(arguments)}
        try:
            result = fn()
        except ToolError as exc:
            self._log(fields, t0, ok=False, error=str(exc))
            raise
        except AtsError as exc:
            self._log(fields, t0, ok=False, error=str(exc))
            raise ToolError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the client gets one line; the log keeps the traceback
            msg = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            self._log(fields, t0, ok=False, error=msg, exc_info=True, level=logging.ERROR)
            raise ToolError(msg) from exc
        self._log(fields, t0, ok=True, rows=count_rows(result))
        return as_result(result)

    def _log(self, fields: dict, t0: float, *, ok: bool, rows: int | None = None, error: str | None = None,
             exc_info: bool = False, level: int = logging.INFO) -> None:
        fields = {**fields, "duration_ms": round((time.perf_counter() - t0) * 1000, 2), "ok": ok,
                  "rows": rows if rows is not None else 0}
        if error:
            fields["error"] = error
        self.logger.log(level, "tool call %s", fields["tool"], extra={"fields": fields}, exc_info=exc_info)


def tool_budget_ms() -> int:
    """Total time budget of one tool call in ms: ``ATS_MCP_TOOL_BUDGET_MS`` (default 45,000).

    Raises
    ------
    AtsError
        When the variable is set but is not a positive integer.
    """
    raw = os.environ.get("ATS_MCP_TOOL_BUDGET_MS", str(DEFAULT_TOOL_BUDGET_MS))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise AtsError(f"environment variable ATS_MCP_TOOL_BUDGET_MS={raw!r} is not a positive integer (ms)")
    return value


class BudgetExhausted(AtsError):
    """A tool call used up its time budget (not a psycopg.Error, so procedures that skip a failed optional
    query cannot swallow it)."""


class TimeBudget:
    """The wall-clock budget of one tool call.

    Parameters
    ----------
    tool : str
        Tool name, for the error message.
    budget_ms : int, optional
        Total budget in ms (default :func:`tool_budget_ms`).
    statement_cap_ms : int, optional
        Upper bound of any one statement's timeout in ms; default ``ATS_MCP_TOOL_TIMEOUT_MS`` when set (the
        forensic per-statement timeout), else none (each statement gets what is left).
    """

    def __init__(self, tool: str, budget_ms: int | None = None, statement_cap_ms: int | None = None):
        self.tool = tool
        self.budget_ms = int(budget_ms if budget_ms is not None else tool_budget_ms())
        cap = os.environ.get("ATS_MCP_TOOL_TIMEOUT_MS") if statement_cap_ms is None else statement_cap_ms
        self.cap_ms = int(cap) if cap and str(cap).isdigit() and int(cap) > 0 else None
        self.t0 = time.monotonic()

    def remaining_ms(self) -> int:
        """Milliseconds left (may be negative)."""
        return int(self.budget_ms - (time.monotonic() - self.t0) * 1000)

    def statement_timeout_ms(self) -> int:
        """The ``statement_timeout`` for the next statement: what is left, capped by ``statement_cap_ms``.

        Raises
        ------
        BudgetExhausted
            When less than MIN_STATEMENT_MS is left.
        """
        left = self.remaining_ms()
        if left < MIN_STATEMENT_MS:
            raise self.exhausted()
        return min(left, self.cap_ms) if self.cap_ms else left

    def exhausted(self) -> BudgetExhausted:
        """The error to raise when the budget is gone (also used for a statement cancelled by its timeout)."""
        used = int((time.monotonic() - self.t0) * 1000)
        return BudgetExhausted(
            f"{self.tool}: stopped after {used} ms: the tool's time budget is {self.budget_ms} ms "
            f"(ATS_MCP_TOOL_BUDGET_MS, kept below the client's MCP tool timeout); narrow the window "
            f"(since/until) or query the tables directly with limit")

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(conn, *a, **k)`` -> the same call on a :class:`BudgetedConnection`; a statement cancelled
        because the budget ran out becomes :class:`BudgetExhausted`."""
        def call(conn: psycopg.Connection, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(BudgetedConnection(conn, self), *args, **kwargs)
            except pgerrors.QueryCanceled as exc:
                if not self.cap_ms or self.cap_ms >= self.budget_ms or self.remaining_ms() < 1000:
                    raise self.exhausted() from exc  # the timeout in force was what was left of the budget
                raise
        call.__name__ = getattr(fn, "__name__", "procedure")
        return call


def _set_timeout(conn: psycopg.Connection, budget: TimeBudget) -> None:
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{budget.statement_timeout_ms()}ms",))


class _BudgetedCursor:
    """A cursor whose ``execute`` / ``executemany`` / ``stream`` first set the remaining budget as timeout."""

    def __init__(self, cur: psycopg.Cursor, conn: psycopg.Connection, budget: TimeBudget):
        object.__setattr__(self, "_cur", cur)
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_budget", budget)

    def execute(self, *args: Any, **kwargs: Any):
        _set_timeout(self._conn, self._budget)
        self._cur.execute(*args, **kwargs)
        return self

    def executemany(self, *args: Any, **kwargs: Any):
        _set_timeout(self._conn, self._budget)
        return self._cur.executemany(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any):
        _set_timeout(self._conn, self._budget)
        return self._cur.stream(*args, **kwargs)

    def __enter__(self):
        self._cur.__enter__()
        return self

    def __exit__(self, *exc: Any):
        return self._cur.__exit__(*exc)

    def __iter__(self):
        return iter(self._cur)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cur, name, value)


class BudgetedConnection:
    """A psycopg connection seen through a :class:`TimeBudget`: before every statement run with ``execute``
    (or a cursor's ``execute`` / ``executemany`` / ``stream``) its ``statement_timeout`` is set, transaction-
    locally, to the budget's remaining time; when nothing is left, :class:`BudgetExhausted` is raised instead
    of starting the statement. Everything else is the wrapped connection's.

    Parameters
    ----------
    conn : psycopg.Connection
        The connection (autocommit off: the timeout is a ``set_config(..., true)`` of the current transaction).
    budget : TimeBudget
        The call's budget.
    """

    def __init__(self, conn: psycopg.Connection, budget: TimeBudget):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_budget", budget)

    def execute(self, *args: Any, **kwargs: Any):
        """``Connection.execute`` after setting the remaining budget as ``statement_timeout``."""
        _set_timeout(self._conn, self._budget)
        return self._conn.execute(*args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> _BudgetedCursor:
        """``Connection.cursor`` whose statements are budgeted the same way."""
        return _BudgetedCursor(self._conn.cursor(*args, **kwargs), self._conn, self._budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)
