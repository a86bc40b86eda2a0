"""Shared plumbing of the ATS MCP servers: per-call JSON logging and error mapping.

Every tool call is logged to ``logs/<service>.log`` (``ats.log.setup_logging``) as one JSON line with
``tool``, ``arguments`` (long strings clipped to 2,000 chars), ``duration_ms``, ``rows`` (how many result rows
the call returned; see :func:`count_rows`), ``ok`` and, on failure, ``error``. Failures reach the client as
MCP tool errors (``is_error: true``) carrying one clear line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any, Callable

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from ats.errors import AtsError

_CLIP = 2000

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
            self._log(fields, t0, ok=False, error=msg, exc_info=True)
            raise ToolError(msg) from exc
        self._log(fields, t0, ok=True, rows=count_rows(result))
        return as_result(result)

    def _log(self, fields: dict, t0: float, *, ok: bool, rows: int | None = None, error: str | None = None,
             exc_info: bool = False) -> None:
        fields = {**fields, "duration_ms": round((time.perf_counter() - t0) * 1000, 2), "ok": ok,
                  "rows": rows if rows is not None else 0}
        if error:
            fields["error"] = error
        self.logger.log(logging.INFO if ok else logging.WARNING, "tool call %s", fields["tool"],
                        extra={"fields": fields}, exc_info=exc_info)
