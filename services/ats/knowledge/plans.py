"""Plans: ``ats plan save "title" --from FILE`` and ``ats plan list``.

A plan approved in Claude Code's plan mode is copied verbatim into ``plans/YYYY-MM-DD_HHMM_<slug>.md`` (UTC
time of saving; slug from the title) before the code it describes is written, and committed with it. A plan
file is never overwritten: when the name exists, ``-2``, ``-3``, ... is appended (created with O_EXCL, so two
concurrent saves cannot clobber each other).
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from datetime import datetime
from pathlib import Path

from .. import paths
from ..errors import AtsError, UsageError
from ..timeutil import UTC, utcnow

_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{4})_(.+?)(?:-(\d+))?\.md$")


def slugify(title: str, max_len: int = 60) -> str:
    """Lower-case ASCII words joined by '-' (``"Fix P&L double-count!"`` -> ``fix-p-l-double-count``)."""
    s = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-zA-Z0-9]+", "-", s).strip("-").lower()
    s = s[:max_len].rstrip("-")
    return s or "plan"


def save_plan(title: str, source: str | Path, *, now: datetime | None = None, plans_dir: Path | None = None) -> dict:
    """Copy the plan at ``source`` (``-`` = stdin) verbatim to ``plans/<date>_<HHMM>_<slug>.md``.

    Returns ``{"path", "name", "bytes", "title"}``. Raises UsageError for an empty title or empty plan, AtsError
    when the source cannot be read.
    """
    if not title or not title.strip():
        raise UsageError("plan save: the title must not be empty")
    if str(source) == "-":
        text = sys.stdin.read()
    else:
        p = Path(source).expanduser()
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise AtsError(f"plan save: cannot read plan file {p}: {exc.strerror or exc}") from exc
    if not text.strip():
        raise UsageError(f"plan save: the plan file {source} is empty")
    when = (now or utcnow()).astimezone(UTC)
    d = plans_dir or paths.plans_dir()
    d.mkdir(parents=True, exist_ok=True)
    base = f"{when:%Y-%m-%d_%H%M}_{slugify(title)}"
    data = text.encode("utf-8")
    n = 1
    while True:
        name = f"{base}.md" if n == 1 else f"{base}-{n}.md"
        target = d / name
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return {"path": str(target), "name": name, "bytes": len(data), "title": title.strip()}


def list_plans(plans_dir: Path | None = None) -> list[dict]:
    """Saved plans, newest first: ``[{name, path, date, time, slug, title, bytes}]`` (title = the first
    markdown heading, else the slug)."""
    d = plans_dir or paths.plans_dir()
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("*.md"):
        m = _NAME_RE.match(p.name)
        if not m:
            continue
        title = m.group(3).replace("-", " ")
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("#"):
                        title = line.lstrip("#").strip()
                        break
        except OSError:
            pass
        out.append({"name": p.name, "path": str(p), "date": m.group(1), "time": f"{m.group(2)[:2]}:{m.group(2)[2:]}",
                    "slug": m.group(3), "suffix": int(m.group(4)) if m.group(4) else 1, "title": title,
                    "bytes": p.stat().st_size})
    out.sort(key=lambda r: (r["date"], r["time"], r["suffix"], r["name"]), reverse=True)
    return out
