"""The knowledge base with MD5 drift: `ats kb scan`, `ats kb update [--agent]`, `ats kb status [--json]`.

One article per source file, ``kb/<CATEGORY>/<module>.md``, tracked in ``kb_registry`` (migration 0005):

- :func:`scan` walks the source roots (``SOURCE_ROOTS`` under :func:`ats.paths.project_root`), re-hashes a file
  only when its size or mtime changed, marks an article ``stale`` when its source's MD5 drifted from the MD5 it
  was built from, adds ``pending`` rows for new files and marks articles of deleted files ``orphaned``. On an
  empty registry (a clean clone) it first restores the registry from the committed articles' YAML front
  matter (source_path, source_md5, version, builder, built_at), so only real drift shows up.
- :func:`update` rebuilds stale, pending and failed articles with the deterministic builder
  (:mod:`ats.knowledge.kb_builder`: module docstring, public API, imports and reverse imports, tables read and
  written, invariants marked in comments, covering tests) or, with ``agent=True``, through the
  knowledge-base agent in headless Claude Code (``/update-knowledge-base``), falling back to the deterministic
  builder when no model is available; each article and registry row records its builder.
- :func:`status` counts rows per status and per category.

Invariant: the registry never says ``active`` for an article whose file does not exist or whose front matter
names a different source MD5 than the source has now. Scans and updates are serialised with a PostgreSQL
advisory lock (a concurrent one raises BusyError).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import psycopg

from .. import frontmatter, paths
from ..errors import AtsError, BusyError

UTC = timezone.utc

#: directories (relative to the project root) whose files get articles
SOURCE_ROOTS = ("services", "mcp_servers", ".claude-cron", ".claude/agents", ".claude/commands", ".claude/skills",
                "bench")
#: file types that are sources (logs, state and caches are not)
SOURCE_SUFFIXES = (".py", ".sql", ".sh", ".md", ".toml", ".json", ".yaml", ".yml")
SKIP_DIRS = {"__pycache__", ".git", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache", "state", "logs"}
STATUSES = ("active", "stale", "pending", "failed", "orphaned")
_LOCK_KEY = 0x415453_4B42  # "ATS" "KB"
DETERMINISTIC = "deterministic"
AGENT = "agent:knowledge-base-agent"

# first matching prefix wins (paths relative to the root, '/' separators)
_CATEGORY_PREFIXES = (
    ("services/ats/market_data/", "MARKET-DATA"),
    ("services/ats/engine/", "ENGINE"),
    ("services/ats/risk/", "RISK"),
    ("services/ats/strategies/", "STRATEGIES"),
    ("services/ats/regime/", "STRATEGIES"),
    ("services/ats/execution/", "EXECUTION"),
    ("services/ats/portfolio/", "PORTFOLIO"),
    ("services/ats/forensics/", "FORENSICS"),
    ("services/ats/knowledge/", "KNOWLEDGE"),
    ("services/ats/ops/", "OPERATIONS"),
    ("services/ats/db/", "DATABASE"),
    ("services/ats/api/", "API"),
    ("services/", "CORE"),
    ("mcp_servers/", "MCP-SERVERS"),
    (".claude/agents/", "AGENTS"),
    (".claude/commands/", "COMMANDS"),
    (".claude/skills/", "COMMANDS"),
    (".claude-cron/", "OPERATIONS"),
    ("bench/", "BENCH"),
)


def category_for(source_path: str) -> str:
    """The KB category of a source path (e.g. ``services/ats/risk/breakers.py`` -> ``RISK``); ``OTHER`` if none."""
    for prefix, cat in _CATEGORY_PREFIXES:
        if source_path.startswith(prefix):
            return cat
    return "OTHER"


def module_name(source_path: str) -> str:
    """Dotted module name of a Python source (``services/ats/db/migrate.py`` -> ``ats.db.migrate``; a package's
    ``__init__.py`` -> the package); for other files the path with '/' -> '.' and leading dots dropped
    (``.claude/agents/investigate-agent.md`` -> ``claude.agents.investigate-agent.md``)."""
    p = source_path[len("services/"):] if source_path.startswith("services/") else source_path
    if p.endswith(".py"):
        p = p[:-3]
        if p.endswith("/__init__"):
            p = p[: -len("/__init__")]
        return p.replace("/", ".")
    return ".".join(part.lstrip(".") for part in p.split("/"))


def article_path_for(source_path: str) -> str:
    """``kb/<CATEGORY>/<module>.md`` relative to the project root."""
    name = module_name(source_path)
    if name.endswith(".md"):
        name = name[:-3]
    return f"kb/{category_for(source_path)}/{name}.md"


def md5_file(path: Path) -> str:
    """MD5 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_sources(root: Path) -> Iterable[tuple[str, os.stat_result]]:
    """(relative path, stat) of every source file under the SOURCE_ROOTS (non-empty; a known suffix or an
    extension-less ``#!`` script).

    Plain strings and os.scandir (no pathlib in the loop): a scan of 10,000 files is dominated by this walk."""
    root_s = str(root)
    cut = len(root_s) + 1
    for top in SOURCE_ROOTS:
        base = os.path.join(root_s, top)
        if not os.path.isdir(base):
            continue
        stack = [base]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        if e.name not in SKIP_DIRS and not e.name.endswith(".egg-info"):
                            stack.append(e.path)
                    elif (e.name.endswith(SOURCE_SUFFIXES) or ("." not in e.name and _is_script(e.path))) \
                            and e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        if st.st_size == 0:
                            continue
                        rel = e.path[cut:]
                        yield (rel if os.sep == "/" else rel.replace(os.sep, "/")), st


def _is_script(path: str) -> bool:
    """An extension-less executable script (``#!`` first line), e.g. ``mcp_servers/launch``."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def existing_articles(root: Path) -> set[str]:
    """Relative paths (``kb/<CATEGORY>/<name>.md``) of the article files present under ``kb/``."""
    out: set[str] = set()
    kb = os.path.join(str(root), "kb")
    if not os.path.isdir(kb):
        return out
    with os.scandir(kb) as cats:
        for c in cats:
            if c.is_dir(follow_symlinks=False):
                with os.scandir(c.path) as arts:
                    out.update(f"kb/{c.name}/{a.name}" for a in arts if a.name.endswith(".md") and a.is_file())
    return out


# ---------------------------------------------------------------------------------------------------------
# front matter

FRONT_KEYS = ("source_path", "source_md5", "category", "module", "version", "builder", "builder_note", "built_at")


def render_front_matter(meta: dict) -> str:
    """YAML front matter (``---`` fenced), values JSON-quoted so any YAML parser reads them back."""
    lines = ["---"]
    for k in FRONT_KEYS:
        if meta.get(k) is not None:
            v = meta[k]
            lines.append(f"{k}: {json.dumps(v) if not isinstance(v, int) else v}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def parse_front_matter(text: str) -> tuple[dict, str]:
    """(metadata, body) of an article (:func:`ats.frontmatter.split`); ({}, text) when it has no front matter
    or the block cannot be read (the article is then rebuilt)."""
    try:
        return frontmatter.split(text)
    except AtsError:
        return {}, text


# ---------------------------------------------------------------------------------------------------------
# registry helpers

def _lock(conn: psycopg.Connection, what: str) -> None:
    row = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_LOCK_KEY,)).fetchone()
    ok = row["ok"] if isinstance(row, dict) else row[0]
    if not ok:
        raise BusyError(f"kb {what}: another `ats kb scan/update` holds the knowledge-base lock; try again")


def ensure_schema(conn: psycopg.Connection) -> None:
    """Raise AtsError when kb_registry is missing (run `ats db migrate`)."""
    row = conn.execute("SELECT to_regclass('kb_registry') IS NOT NULL AS e").fetchone()
    if not (row["e"] if isinstance(row, dict) else row[0]):
        raise AtsError("table kb_registry does not exist: run `ats db migrate` (migration 0005_kb_registry.sql)")


def _rows(conn: psycopg.Connection) -> dict[str, dict]:
    return {r["source_path"]: r for r in conn.execute(
        "SELECT source_path, md5, size, mtime, built_md5, article_path, status FROM kb_registry").fetchall()}


def restore_from_articles(conn: psycopg.Connection, root: Path, known: set[str],
                          known_articles: set[str] | None = None, present: set[str] | None = None) -> int:
    """Insert registry rows for committed articles whose source_path the registry lacks (clean clone), from their
    front matter. Articles already registered (``known_articles``, relative paths) are not read; ``present`` is
    the set of article files (default: listed now). The rows are provisional (md5 unknown) until the scan
    hashes the sources. Returns the count."""
    n = 0
    known_articles = known_articles or set()
    for rel in sorted((present if present is not None else existing_articles(root)) - known_articles):
        art = root / rel
        if rel == "kb/README.md":
            continue
        try:
            meta, _ = parse_front_matter(art.read_text(encoding="utf-8"))
        except OSError:
            continue
        sp = meta.get("source_path")
        if not sp or sp in known or not meta.get("source_md5"):
            continue
        conn.execute(
            """INSERT INTO kb_registry (source_path, md5, built_md5, article_path, category, version, status,
                                        built_at, builder, builder_note)
               VALUES (%s, NULL, %s, %s, %s, %s, 'active', %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (sp, meta["source_md5"], rel, meta.get("category") or category_for(sp), int(meta.get("version") or 1),
             meta.get("built_at"), meta.get("builder") or DETERMINISTIC, meta.get("builder_note")))
        known.add(sp)
        n += 1
    return n


def scan(conn: psycopg.Connection, root: Path | None = None) -> dict:
    """Hash the sources and update kb_registry (see module docstring); one transaction, committed.

    Returns ``{root, files, hashed, unchanged, new: [paths], stale: [paths newly stale], orphaned: [paths newly
    orphaned], restored: n, counts: {status: n}, duration_s}``. Raises BusyError when another scan/update runs.
    """
    root = (root or paths.project_root()).resolve()
    t0 = time.perf_counter()
    ensure_schema(conn)
    new: list[str] = []
    stale: list[str] = []
    orphaned: list[str] = []
    hashed = unchanged = 0
    with conn.transaction():
        _lock(conn, "scan")
        rows = _rows(conn)
        present = existing_articles(root)
        restored = restore_from_articles(conn, root, set(rows), {r["article_path"] for r in rows.values()}, present)
        if restored:
            rows = _rows(conn)
        seen: set[str] = set()
        inserts, updates = [], []
        now = datetime.now(tz=UTC)
        for rel, st in iter_sources(root):
            seen.add(rel)
            mtime = st.st_mtime_ns / 1e9
            row = rows.get(rel)
            if row is not None and row["md5"] and row["size"] == st.st_size and row["mtime"] == mtime:
                md5 = row["md5"]
                unchanged += 1
            else:
                md5 = md5_file(root / rel)
                hashed += 1
            if row is None:
                inserts.append((rel, md5, st.st_size, mtime, article_path_for(rel), category_for(rel), now))
                new.append(rel)
                continue
            status = row["status"]
            article_exists = row["article_path"] in present
            if status in ("active", "stale", "orphaned"):
                if row["built_md5"] is None or not article_exists:
                    status = "pending"
                else:
                    status = "active" if row["built_md5"] == md5 else "stale"
            if status == "stale" and row["status"] != "stale":
                stale.append(rel)
            if (md5, st.st_size, mtime, status) != (row["md5"], row["size"], row["mtime"], row["status"]):
                updates.append((md5, st.st_size, mtime, status, now, rel))
        gone = [p for p, r in rows.items() if p not in seen and r["status"] != "orphaned"]
        # a source that moved (a module that became a package, a git mv) keeps its article: the registry row of the
        # vanished source is handed to the new path (rebuilt as pending) instead of a duplicate article_path
        vanished = {r["article_path"]: p for p, r in rows.items() if p not in seen}
        moved = []
        for ins in list(inserts):
            old_src = vanished.pop(ins[4], None)
            if old_src is not None:
                inserts.remove(ins)
                moved.append((ins[0], ins[1], ins[2], ins[3], ins[6], old_src))
                if old_src in gone:
                    gone.remove(old_src)
        with conn.cursor() as cur:
            if moved:
                cur.executemany("""UPDATE kb_registry SET source_path = %s, md5 = %s, size = %s, mtime = %s,
                                   status = 'pending', scanned_at = %s WHERE source_path = %s""", moved)
            if inserts:
                cur.executemany(
                    """INSERT INTO kb_registry (source_path, md5, size, mtime, article_path, category, status, scanned_at)
                       VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s)""", inserts)
            if updates:
                cur.executemany("""UPDATE kb_registry SET md5 = %s, size = %s, mtime = %s, status = %s,
                                   scanned_at = %s WHERE source_path = %s""", updates)
            if gone:
                cur.execute("UPDATE kb_registry SET status = 'orphaned', scanned_at = %s WHERE source_path = ANY(%s)",
                            (now, gone))
                orphaned = sorted(gone)
        counts = _counts(conn)
    return {"root": str(root), "files": len(seen), "hashed": hashed, "unchanged": unchanged, "new": sorted(new),
            "stale": sorted(stale), "orphaned": orphaned, "restored": restored, "counts": counts,
            "duration_s": round(time.perf_counter() - t0, 4)}


def _counts(conn: psycopg.Connection) -> dict:
    out = {s: 0 for s in STATUSES}
    for r in conn.execute("SELECT status, count(*) AS n FROM kb_registry GROUP BY status").fetchall():
        out[r["status"]] = int(r["n"])
    return out


def status(conn: psycopg.Connection) -> dict:
    """``{"active": n, "stale": n, "pending": n, "failed": n, "orphaned": n, "total": n,
    "categories": {CAT: {status: n}}, "needs_work": [{source_path, status, article_path, error}],
    "last_update": {batch_id, built_at, articles: [{source_path, article_path, builder, version}]}}``."""
    ensure_schema(conn)
    counts = _counts(conn)
    cats: dict[str, dict] = defaultdict(lambda: {s: 0 for s in STATUSES})
    for r in conn.execute("SELECT category, status, count(*) AS n FROM kb_registry GROUP BY 1, 2 ORDER BY 1").fetchall():
        cats[r["category"]][r["status"]] = int(r["n"])
    needs = [dict(r) for r in conn.execute(
        """SELECT source_path, status, article_path, error FROM kb_registry WHERE status <> 'active'
            ORDER BY status, source_path""").fetchall()]
    last = conn.execute("SELECT batch_id, max(built_at) AS built_at FROM kb_registry WHERE batch_id IS NOT NULL "
                        "GROUP BY batch_id ORDER BY max(built_at) DESC LIMIT 1").fetchone()
    last_update = None
    if last:
        arts = conn.execute("""SELECT source_path, article_path, builder, version FROM kb_registry
                                WHERE batch_id = %s ORDER BY source_path""", (last["batch_id"],)).fetchall()
        last_update = {"batch_id": last["batch_id"], "built_at": last["built_at"].isoformat(),
                       "articles": [dict(a) for a in arts]}
    return {**counts, "total": sum(counts.values()), "categories": dict(cats), "needs_work": needs,
            "last_update": last_update}


# ---------------------------------------------------------------------------------------------------------
# update

def update(conn: psycopg.Connection, root: Path | None = None, *, agent: bool = False,
           only: Iterable[str] | None = None, prune_orphans: bool = False) -> dict:
    """Rebuild every stale, pending and failed article (``only``: restrict to these source paths).

    ``agent=True`` runs ``/update-knowledge-base <paths>`` through headless Claude Code
    (``ats.ops.headless.run_task``) and falls back to the deterministic builder when the claude binary is
    missing, not logged in or fails; the builder used (and why it fell back) is recorded per article.
    ``prune_orphans`` deletes orphaned articles and their rows. Returns ``{batch_id, built: [...], failed:
    [...], pruned: [...], builder, builder_note, counts, index}``. Raises BusyError when another scan/update
    runs.
    """
    root = (root or paths.project_root()).resolve()
    ensure_schema(conn)
    only_set = set(only) if only else None
    note = None
    used = DETERMINISTIC
    if agent:
        todo = _todo(conn, only_set)
        if todo:
            used, note = _run_agent(conn, root, [r["source_path"] for r in todo])
    batch = f"{datetime.now(tz=UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    built, failed, pruned = [], [], []
    with conn.transaction():
        _lock(conn, "update")
        todo = _todo(conn, only_set)
        if todo:
            from .kb_builder import ProjectIndex, build_article

            index = ProjectIndex(root)
            for row in todo:
                src = root / row["source_path"]
                try:
                    md5 = md5_file(src)
                    st = src.stat()
                    body = build_article(index, row["source_path"])
                    art = root / row["article_path"]
                    old_notes = _carry_notes(art)
                    meta = {"source_path": row["source_path"], "source_md5": md5, "category": row["category"],
                            "module": module_name(row["source_path"]), "version": int(row["version"]) + 1,
                            "builder": DETERMINISTIC, "builder_note": note,
                            "built_at": datetime.now(tz=UTC).isoformat(timespec="seconds")}
                    art.parent.mkdir(parents=True, exist_ok=True)
                    art.write_text(render_front_matter(meta) + body + old_notes, encoding="utf-8")
                    conn.execute(
                        """UPDATE kb_registry SET md5 = %s, built_md5 = %s, size = %s, mtime = %s, status = 'active',
                                  version = version + 1, built_at = %s, builder = %s, builder_note = %s, error = NULL,
                                  batch_id = %s WHERE source_path = %s""",
                        (md5, md5, st.st_size, st.st_mtime_ns / 1e9, meta["built_at"], DETERMINISTIC, note, batch,
                         row["source_path"]))
                    built.append({"source_path": row["source_path"], "article_path": row["article_path"],
                                  "version": meta["version"]})
                except Exception as exc:  # noqa: BLE001 - one bad source must not stop the sweep; it is recorded
                    conn.execute("""UPDATE kb_registry SET status = 'failed', error = %s, batch_id = %s
                                     WHERE source_path = %s""",
                                 (f"{type(exc).__name__}: {exc}"[:1000], batch, row["source_path"]))
                    failed.append({"source_path": row["source_path"], "error": f"{type(exc).__name__}: {exc}"})
        if prune_orphans:
            for r in conn.execute("SELECT source_path, article_path FROM kb_registry WHERE status = 'orphaned'").fetchall():
                (root / r["article_path"]).unlink(missing_ok=True)
                pruned.append(r["source_path"])
            conn.execute("DELETE FROM kb_registry WHERE status = 'orphaned'")
        index_path = write_index(conn, root)
        counts = _counts(conn)
    return {"batch_id": batch, "built": built, "failed": failed, "pruned": pruned, "builder": used,
            "builder_note": note, "counts": counts, "index": index_path}


def _todo(conn: psycopg.Connection, only: set[str] | None) -> list[dict]:
    rows = [dict(r) for r in conn.execute(
        """SELECT * FROM kb_registry WHERE status IN ('stale', 'pending', 'failed')
            ORDER BY category, source_path""").fetchall()]
    return [r for r in rows if only is None or r["source_path"] in only]


def _carry_notes(article: Path) -> str:
    """A reviewer's ``## Notes`` section from the previous version of an article (kept across rebuilds, flagged
    for re-verification)."""
    if not article.is_file():
        return ""
    meta, body = parse_front_matter(article.read_text(encoding="utf-8"))
    i = body.find("\n## Notes")
    if i < 0:
        return ""
    notes = body[i + 1:].rstrip() + "\n"
    flag = (f"_Notes carried over from version {meta.get('version')}; the source changed since: re-verify._\n")
    if flag.split(";")[0] in notes:
        return "\n" + notes
    return "\n" + notes.replace("## Notes\n", "## Notes\n\n" + flag, 1)


def _run_agent(conn: psycopg.Connection, root: Path, todo_paths: list[str]) -> tuple[str, str | None]:
    """Run the knowledge-base agent headless. Returns (builder, note): (AGENT, None) when the agent ran and
    rebuilt articles (they are re-labelled below), else (DETERMINISTIC, why it fell back)."""
    try:
        from ..ops.headless import find_claude, run_task
    except ImportError as exc:
        return DETERMINISTIC, f"agent unavailable: ats.ops.headless not importable ({exc})"
    if find_claude() is None:
        return DETERMINISTIC, "agent unavailable: claude binary not found (ATS_CLAUDE_BIN / PATH)"
    conn.commit()  # the agent's own `ats kb update` runs in another process and needs the lock
    before = {r["source_path"]: r["batch_id"] for r in conn.execute(
        "SELECT source_path, batch_id FROM kb_registry WHERE source_path = ANY(%s)", (todo_paths,)).fetchall()}
    conn.commit()

    def rebuilt_during_run() -> list[dict]:
        rows = conn.execute("""SELECT source_path, article_path, batch_id FROM kb_registry
                                WHERE source_path = ANY(%s) AND status = 'active'""", (todo_paths,)).fetchall()
        return [r for r in rows if r["batch_id"] is not None and r["batch_id"] != before.get(r["source_path"])]

    try:
        res = run_task("update-knowledge-base", todo_paths, echo=None)
    except Exception as exc:  # noqa: BLE001 - busy, usage or launch errors: fall back, and say so
        return DETERMINISTIC, f"agent failed to start: {type(exc).__name__}: {exc}"
    if res.mode == "claude" and res.exit_code == 0:
        rows = rebuilt_during_run()
        for r in rows:
            art = root / r["article_path"]
            meta, body = parse_front_matter(art.read_text(encoding="utf-8"))
            meta["builder"] = AGENT
            meta.pop("builder_note", None)
            art.write_text(render_front_matter(meta) + body, encoding="utf-8")
        if rows:
            conn.execute("UPDATE kb_registry SET builder = %s, builder_note = NULL WHERE source_path = ANY(%s)",
                         (AGENT, [r["source_path"] for r in rows]))
        conn.commit()
        return AGENT, None
    reason = res.fallback_reason or f"claude run failed (mode {res.mode}, exit {res.exit_code}): {res.summary[:200]}"
    if res.mode == "core":
        # the headless runner already ran the deterministic core (`ats kb scan`, `ats kb update`); label it
        rows = rebuilt_during_run()
        for r in rows:
            art = root / r["article_path"]
            if art.is_file():
                meta, body = parse_front_matter(art.read_text(encoding="utf-8"))
                meta["builder_note"] = f"agent unavailable: {reason}"
                art.write_text(render_front_matter(meta) + body, encoding="utf-8")
        if rows:
            conn.execute("UPDATE kb_registry SET builder_note = %s WHERE source_path = ANY(%s)",
                         (f"agent unavailable: {reason}", [r["source_path"] for r in rows]))
        conn.commit()
    return DETERMINISTIC, f"agent unavailable: {reason}"


def write_index(conn: psycopg.Connection, root: Path) -> str:
    """Regenerate ``kb/README.md``: counts per status and category and one line per article."""
    rows = conn.execute("""SELECT source_path, article_path, category, status, version, builder FROM kb_registry
                            ORDER BY category, article_path""").fetchall()
    counts = Counter(r["status"] for r in rows)
    L = ["# ATS knowledge base", "",
         "One article per source file, rebuilt when the source's MD5 drifts (`ats kb scan && ats kb update`). "
         "Generated; do not edit this index by hand.", "",
         "Status: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES), ""]
    by_cat: dict[str, list] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    for cat in sorted(by_cat):
        L += [f"## {cat}", ""]
        for r in by_cat[cat]:
            rel = Path(r["article_path"]).relative_to("kb").as_posix()
            flag = "" if r["status"] == "active" else f" **({r['status']})**"
            L.append(f"- [{Path(rel).stem}]({rel}) - `{r['source_path']}`{flag}")
        L.append("")
    out = root / "kb" / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L), encoding="utf-8")
    return str(out)
