"""Reports-and-plans page and its API: markdown files under ``reports/`` and ``plans/`` (newest first), with the
figures of a report's JSON twin (``<same stem>.json``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Query, Request

from ..deps import param_error, render
from ..markdown import render_markdown

router = APIRouter()


def list_docs(root: Path) -> list[dict]:
    """Every ``reports/**/*.md`` and ``plans/*.md``: {kind ('report'|'plan'), path (relative), name, modified
    (ISO UTC), has_json}; newest first (by the date in the name, then mtime)."""
    out = []
    for kind, base, pattern in (("report", root / "reports", "**/*.md"), ("plan", root / "plans", "*.md")):
        if not base.is_dir():
            continue
        for f in base.glob(pattern):
            st = f.stat()
            out.append({"kind": kind, "path": f.relative_to(root).as_posix(), "name": f.name,
                        "folder": f.parent.relative_to(base).as_posix(),
                        "modified": datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat(timespec="seconds"),
                        "has_json": f.with_suffix(".json").is_file()})
    out.sort(key=lambda d: (d["name"], d["modified"]), reverse=True)
    return out


def figures(doc: dict, limit: int = 40) -> list[tuple[str, object]]:
    """Scalar figures of a JSON twin, flattened one level deep (``summary.trades``), at most ``limit``."""
    out: list[tuple[str, object]] = []
    for k, v in doc.items():
        if isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 80):
            out.append((k, v))
        elif isinstance(v, dict):
            out += [(f"{k}.{k2}", v2) for k2, v2 in v.items() if isinstance(v2, (int, float, bool))
                    or (isinstance(v2, str) and len(v2) <= 80)]
    return out[:limit]


def read_doc(root: Path, path: str) -> dict:
    """One report or plan: {path, html, figures}. Raises the 422 naming ``path`` when outside reports/ plans/."""
    f = (root / path).resolve()
    allowed = [(root / "reports").resolve(), (root / "plans").resolve()]
    if f.suffix != ".md" or not any(a in f.parents for a in allowed) or not f.is_file():
        raise param_error("path", f"not a markdown file under reports/ or plans/: {path!r}")
    twin = f.with_suffix(".json")
    figs = []
    if twin.is_file():
        try:
            figs = figures(json.loads(twin.read_text(encoding="utf-8")))
        except (ValueError, AttributeError):
            figs = [("error", "unreadable JSON twin")]
    return {"path": path, "html": render_markdown(f.read_text(encoding="utf-8")), "figures": figs}


@router.get("/api/reports", tags=["reports"])
def api_reports(request: Request) -> dict:
    """Reports and plans on disk, newest first."""
    return {"documents": list_docs(request.app.state.root)}


@router.get("/api/reports/doc", tags=["reports"])
def api_report(request: Request, path: str = Query(..., max_length=300)) -> dict:
    """One report or plan rendered to HTML with its JSON twin's figures."""
    return read_doc(request.app.state.root, path)


@router.get("/reports", include_in_schema=False)
def page_reports(request: Request, path: str | None = Query(None, max_length=300)):
    """The Reports-and-plans page (list, or one document)."""
    root = request.app.state.root
    doc = read_doc(root, path) if path else None
    return render(request, "reports.html", "reports", docs=list_docs(root), doc=doc)
