"""Knowledge-base page and its API: the ``kb_registry`` table (by SQL) and article bodies read from ``kb/``."""

from __future__ import annotations

from pathlib import Path

import psycopg
from fastapi import APIRouter, Depends, Query, Request

from ..deps import get_conn, param_error, plain, render
from ..markdown import render_markdown

router = APIRouter()
STATUSES = ("active", "stale", "pending", "failed", "orphaned")


def kb_status(conn: psycopg.Connection) -> dict:
    """Counters by status (every status present, 0 when none) and per category."""
    rows = conn.execute("SELECT category, status, count(*) AS n FROM kb_registry GROUP BY 1, 2").fetchall()
    total = {s: 0 for s in STATUSES}
    cats: dict[str, dict] = {}
    for r in rows:
        total[r["status"]] = total.get(r["status"], 0) + r["n"]
        cats.setdefault(r["category"], {s: 0 for s in STATUSES})[r["status"]] = r["n"]
    return {"counts": total, "categories": dict(sorted(cats.items()))}


def kb_articles(conn: psycopg.Connection, category: str | None = None) -> list[dict]:
    """Registry rows (source_path, article_path, category, status, version, built_at, drift) by category."""
    rows = conn.execute(
        """SELECT source_path, article_path, category, status, version, built_at, builder, error,
                  (CASE WHEN built_md5 IS NULL THEN NULL ELSE md5 IS DISTINCT FROM built_md5 END) AS drift
             FROM kb_registry WHERE (%(c)s::text IS NULL OR category = %(c)s)
            ORDER BY category, article_path""", {"c": category}).fetchall()
    return plain(rows)


def article_html(root: Path, article_path: str) -> str | None:
    """The article's markdown (front matter dropped) rendered to HTML; None when the file is missing."""
    kb = (root / "kb").resolve()
    f = (root / article_path).resolve()
    if kb not in f.parents or f.suffix != ".md" or not f.is_file():
        return None
    return render_markdown(f.read_text(encoding="utf-8"))


@router.get("/api/kb/status", tags=["kb"])
def api_kb_status(conn=Depends(get_conn)) -> dict:
    """Article counters by status (active / stale / pending / failed / orphaned), overall and per category."""
    return kb_status(conn)


@router.get("/api/kb/articles", tags=["kb"])
def api_kb_articles(category: str | None = Query(None, max_length=64), conn=Depends(get_conn)) -> dict:
    """Registry rows with their drift flag (source MD5 differs from the MD5 the article was built from)."""
    return {"articles": kb_articles(conn, category)}


@router.get("/kb", include_in_schema=False)
def page_kb(request: Request, article: str | None = Query(None, max_length=300), conn=Depends(get_conn)):
    """The Knowledge-base page (list grouped by category, or one article)."""
    body = None
    row = None
    if article:
        row = conn.execute("SELECT * FROM kb_registry WHERE article_path = %s", (article,)).fetchone()
        if row is None:
            raise param_error("article", f"no kb_registry row with article_path {article!r}")
        body = article_html(request.app.state.root, article)
    arts = kb_articles(conn)
    groups: dict[str, list] = {}
    for a in arts:
        groups.setdefault(a["category"], []).append(a)
    return render(request, "kb.html", "kb", status=kb_status(conn), groups=groups, article=plain(row) if row else None,
                  body=body)
