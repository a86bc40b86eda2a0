"""The narrow writes agents are allowed: append a lesson, register a report.

Each is one parameterized INSERT into an append-only table (migration 0004) plus an audit row in
``system_events`` (component ``'mcp'`` by default), in the same transaction. They are exposed as the
ats-postgres MCP tools ``append_lesson`` / ``record_report`` only when that server runs with ``--allow-writes``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from ..db.events import record_event
from ..errors import AtsError, UsageError
from ..paths import project_root

MAX_TITLE = 300
MAX_BODY = 20_000
REPORT_KINDS = ("investigation", "health_check", "daily", "weekly", "watchlist", "kb", "plan", "backtest", "other")


def _clean_tags(tags) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in tags.replace(";", ",").split(",")]
    out = []
    for t in tags:
        t = str(t).strip().lower()
        if t and t not in out:
            out.append(t[:64])
    return out[:20]


def append_lesson(conn: psycopg.Connection, title: str, body: str, tags=None, source: str = "mcp", *,
                  component: str = "mcp") -> dict:
    """Append one lesson; returns ``{"lesson_id", "title", "tags", "source", "created_at", "event_id"}``.

    ``tags``: list of strings or one comma-separated string (lower-cased, de-duplicated, max 20).
    Raises UsageError on an empty/too long title (max 300 chars) or body (max 20,000 chars).
    Commits on success (the INSERT and its audit event together), rolls back on failure.
    """
    title = (title or "").strip()
    body = (body or "").strip()
    if not title or len(title) > MAX_TITLE:
        raise UsageError(f"lesson title must be 1..{MAX_TITLE} characters (got {len(title)})")
    if not body or len(body) > MAX_BODY:
        raise UsageError(f"lesson body must be 1..{MAX_BODY} characters (got {len(body)})")
    tags_l = _clean_tags(tags)
    source = (source or "mcp").strip()[:100]
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO lessons (title, body, tags, source) VALUES (%s, %s, %s, %s) "
            "RETURNING lesson_id, created_at", (title, body, tags_l, source)).fetchone()
        lesson_id, created_at = (row["lesson_id"], row["created_at"]) if isinstance(row, dict) else row
        event_id = record_event(conn, component, "lesson_appended",
                                payload={"lesson_id": lesson_id, "title": title, "tags": tags_l, "source": source})
    return {"lesson_id": lesson_id, "title": title, "tags": tags_l, "source": source,
            "created_at": created_at.isoformat(), "event_id": event_id}


def normalize_report_path(path: str) -> str:
    """A report path relative to the project root with '/' separators. Absolute paths inside the root are made
    relative; paths outside the root or containing '..' raise UsageError."""
    p = (path or "").strip()
    if not p:
        raise UsageError("report path is empty")
    root = project_root().resolve()
    pp = Path(p)
    if pp.is_absolute():
        try:
            pp = pp.resolve().relative_to(root)
        except ValueError:
            raise UsageError(f"report path {path!r} is outside the project root {root}") from None
    if ".." in pp.parts:
        raise UsageError(f"report path {path!r} must not contain '..'")
    return pp.as_posix()


def record_report(conn: psycopg.Connection, kind: str, path: str, summary: str = "", source: str = "mcp", *,
                  component: str = "mcp") -> dict:
    """Register a written report; returns ``{"report_id", "kind", "path", "exists", "created_at", "event_id"}``.

    ``kind`` one of REPORT_KINDS; ``path`` relative to the project root (``exists`` says whether the file is
    there now: registering a report that is written later is allowed). Commits on success.
    """
    kind = (kind or "").strip().lower()
    if kind not in REPORT_KINDS:
        raise UsageError(f"report kind {kind!r} is not one of {', '.join(REPORT_KINDS)}")
    rel = normalize_report_path(path)
    summary = (summary or "").strip()
    if len(summary) > MAX_BODY:
        raise UsageError(f"report summary is longer than {MAX_BODY} characters")
    exists = (project_root() / rel).is_file()
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO reports_registry (kind, path, summary, source) VALUES (%s, %s, %s, %s) "
            "RETURNING report_id, created_at", (kind, rel, summary, (source or "mcp")[:100])).fetchone()
        report_id, created_at = (row["report_id"], row["created_at"]) if isinstance(row, dict) else row
        event_id = record_event(conn, component, "report_recorded",
                                payload={"report_id": report_id, "kind": kind, "path": rel, "exists": exists})
    return {"report_id": report_id, "kind": kind, "path": rel, "exists": exists,
            "created_at": created_at.isoformat(), "event_id": event_id}


def lessons(conn: psycopg.Connection, *, limit: int | None = None) -> list[dict]:
    """The plain lessons (notes), newest last: lesson_id, title, body, tags, source, created_at (used by the docs
    index). LL-NNN lessons (``ll_number`` NOT NULL) are skipped: their ``kb/lessons/LL-NNN.md`` mirror is indexed
    instead, so each appears once (and only in its version in force)."""
    try:
        rows = conn.execute("SELECT lesson_id, title, body, tags, source, created_at FROM lessons "
                            "WHERE ll_number IS NULL ORDER BY lesson_id" + (" LIMIT %s" if limit else ""),
                            (limit,) if limit else None).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise AtsError("table lessons is missing: run `ats db migrate`") from exc
    return [dict(r) if isinstance(r, dict) else dict(zip(("lesson_id", "title", "body", "tags", "source",
                                                          "created_at"), r)) for r in rows]
