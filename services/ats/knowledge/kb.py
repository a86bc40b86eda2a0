"""The knowledge base with MD5 drift: `ats kb scan`, `ats kb update [--agent]`, `ats kb status [--json]`.

One article per source file, ``kb/<CATEGORY>/<module>.md``, tracked in ``kb_registry`` (migration 0005):

- :func:`scan` asks git which files under the source roots (``SOURCE_ROOTS`` under
  :func:`ats.paths.project_root`) and ``kb/`` may have changed since the last scan (:mod:`ats.knowledge.kb_git`,
  state in ``kb_scan_state``, migration 0170) and re-checks only those; outside a git checkout, on the first
  scan or with ``method="full"`` it walks every root instead. Either way a file is re-hashed only when its size
  or mtime changed; an article is marked ``stale`` when its source's MD5 drifted from the MD5 it was built from,
  new files get ``pending`` rows and articles of deleted files are marked ``orphaned`` (both ways leave the same
  rows: tests/knowledge/test_kb_git.py). On an
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

import functools
import hashlib
import json
import os
import time
import uuid
import weakref
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import psycopg

from .. import frontmatter, paths
from ..errors import AtsError, BusyError, UsageError

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


@functools.lru_cache(maxsize=1 << 16)
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


@functools.lru_cache(maxsize=1 << 16)
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


def iter_sources(root: Path, dirs: dict | None = None, t_ns: int = 0) -> Iterable[tuple[str, os.stat_result]]:
    """(relative path, stat) of every source file under the SOURCE_ROOTS (non-empty; a known suffix or an
    extension-less ``#!`` script).

    ``dirs``: when given, every directory walked is recorded as ``{relative dir: mark}`` (its st_mtime_ns taken
    before the listing, or the racy marker of :func:`ats.knowledge.kb_git.dir_mark` when within 2 s of ``t_ns``,
    UTC ns) and a missing root as ``None``: the directory cache of the git scan.

    Plain strings and os.scandir (no pathlib in the loop): a scan of 10,000 files is dominated by this walk."""
    root_s = str(root)
    cut = len(root_s) + 1
    mark = None
    if dirs is not None:
        from .kb_git import dir_mark as mark
    for top in SOURCE_ROOTS:
        base = os.path.join(root_s, top)
        if not os.path.isdir(base):
            if dirs is not None:
                dirs[top] = None
            continue
        stack = [base]
        while stack:
            d = stack.pop()
            if mark is not None:
                try:
                    rel_d = d[cut:] if os.sep == "/" else d[cut:].replace(os.sep, "/")
                    dirs[rel_d] = mark(os.lstat(d), t_ns)
                except OSError:
                    continue
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


def existing_articles(root: Path, dirs: dict | None = None, t_ns: int = 0) -> set[str]:
    """Relative paths (``kb/<CATEGORY>/<name>.md``) of the article files present under ``kb/``. ``dirs``: as in
    :func:`iter_sources` (``kb`` and each ``kb/<CATEGORY>`` directory)."""
    out: set[str] = set()
    kb = os.path.join(str(root), "kb")
    mark = None
    if dirs is not None:
        from .kb_git import dir_mark as mark
        try:
            dirs["kb"] = mark(os.lstat(kb), t_ns)
        except OSError:
            dirs["kb"] = None
    if not os.path.isdir(kb):
        return out
    with os.scandir(kb) as cats:
        for c in cats:
            if c.is_dir(follow_symlinks=False):
                if mark is not None:
                    dirs[f"kb/{c.name}"] = mark(os.lstat(c.path), t_ns)
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
                          known_articles: set[str] | None = None, present: set[str] | None = None,
                          inserted: list[str] | None = None) -> int:
    """Insert registry rows for committed articles whose source_path the registry lacks (clean clone), from their
    front matter. Articles already registered (``known_articles``, relative paths) are not read; ``present`` is
    the set of article files (default: listed now). The rows are provisional (md5 unknown) until the scan
    hashes the sources. Returns the count of rows inserted (their source paths are appended to ``inserted``)."""
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
        ins = conn.execute(
            """INSERT INTO kb_registry (source_path, md5, built_md5, article_path, category, version, status,
                                        built_at, builder, builder_note)
               VALUES (%s, NULL, %s, %s, %s, %s, 'active', %s, %s, %s)
               ON CONFLICT DO NOTHING RETURNING source_path""",
            (sp, meta["source_md5"], rel, meta.get("category") or category_for(sp), int(meta.get("version") or 1),
             meta.get("built_at"), meta.get("builder") or DETERMINISTIC, meta.get("builder_note"))).fetchone()
        known.add(sp)
        if ins is not None:
            n += 1
            if inserted is not None:
                inserted.append(sp)
    return n


SCAN_METHODS = ("auto", "full")
_SCHEMA_OK: "weakref.WeakKeyDictionary[psycopg.Connection, bool]" = weakref.WeakKeyDictionary()


def scan(conn: psycopg.Connection, root: Path | None = None, *, method: str = "auto") -> dict:
    """Bring kb_registry up to date with the sources (see module docstring); one transaction, committed.

    ``method``: 'auto' asks git which files changed since the last scan (:mod:`ats.knowledge.kb_git`) and
    re-hashes only those, falling back to the full scan (every file stat'ed, re-hashed when size or mtime moved)
    when git cannot answer; 'full' always walks. Both leave the same registry rows. The transaction commits with
    ``synchronous_commit = off``: the registry and the scan state are derived data, a scan lost in a crash is
    redone by the next one, and both are written in the same transaction.

    Returns ``{root, method: 'git'|'full', fallback_reason, files, hashed, unchanged, candidates (git: paths
    re-checked), new: [paths], stale: [paths newly stale], orphaned: [paths newly orphaned], restored: n, counts:
    {status: n}, duration_s}``. Raises BusyError when another scan/update runs, UsageError for a bad method.
    """
    if method not in SCAN_METHODS:
        raise UsageError(f"kb scan: method must be one of {', '.join(SCAN_METHODS)} (got {method!r})")
    from . import kb_git

    root = (root or paths.project_root()).resolve()
    t0 = time.perf_counter()
    t_ns = time.time_ns()
    # git first: its stat of the index entries runs while the database round trips below do
    repo = dq = None
    git_reason = None
    try:
        repo = kb_git.open_repo(root)
        dq = kb_git.DirtyQuery(repo)
    except kb_git.GitUnusable as exc:
        repo, git_reason = None, str(exc)
    try:
        with conn.transaction():  # a real transaction (committed at the end) unless the caller has one open
            has_state_table = _SCHEMA_OK.get(conn)
            if has_state_table is None:  # once per connection: tables are not dropped under a running process
                row = conn.execute("SELECT to_regclass('kb_registry') IS NOT NULL AS r, "
                                   "to_regclass('kb_scan_state') IS NOT NULL AS s").fetchone()
                if not row["r"]:
                    ensure_schema(conn)  # raises with the migration to run
                has_state_table = bool(row["s"])
                if has_state_table:
                    _SCHEMA_OK[conn] = True
            locked, state, has_rows = kb_git.begin_scan(conn, _LOCK_KEY, has_state_table)
            if not locked:
                raise BusyError("kb scan: another `ats kb scan/update` holds the knowledge-base lock; try again")
            with conn.pipeline():  # statements without a result are sent together with the next fetch
                reason = git_reason
                if not has_state_table:
                    reason = "table kb_scan_state is missing: run `ats db migrate` (migration 0170_kb_scan_state.sql)"
                    repo = None
                if reason is None:
                    if method == "full":
                        reason = "full scan requested"
                    elif not has_rows:
                        reason = "empty registry"
                    elif state is None:
                        reason = "no previous scan state"
                    elif state.root != str(root):
                        reason = f"the last scan was of another root ({state.root})"
                    elif state.head is None:
                        reason = f"the last scan left no git state ({state.fallback_reason})"
                out = None
                if reason is None:
                    try:
                        ch = kb_git.changes(repo, root, state, t_ns, dq)
                    except kb_git.GitUnusable as exc:
                        reason = str(exc)
                    else:
                        out = _scan_git(conn, root, repo, state, ch, t_ns)
                if out is None:
                    out = _scan_full(conn, root, repo, reason, t_ns, state, has_state_table, dq)
                counts = _counts(conn)
    finally:
        if dq is not None:
            dq.close()
    files = out.pop("files", None)
    if files is None:
        files = sum(counts.values()) - counts["orphaned"]
    return {"root": str(root), "method": out.pop("method"), "fallback_reason": reason, "files": files,
            "hashed": out["hashed"], "unchanged": files - out["hashed"], "candidates": out.get("candidates"),
            "new": sorted(out["new"]), "stale": sorted(out["stale"]), "orphaned": sorted(out["orphaned"]),
            "restored": out["restored"], "counts": counts, "duration_s": round(time.perf_counter() - t0, 4)}


def _next_status(row: dict, md5: str, article_exists: bool) -> str:
    """The status a scan gives a registry row whose source is present with ``md5``."""
    status = row["status"]
    if status in ("active", "stale", "orphaned"):
        if row["built_md5"] is None or not article_exists:
            return "pending"
        return "active" if row["built_md5"] == md5 else "stale"
    return status


class _Changes:
    """Registry writes of one scan (shared by the full and the git scan)."""

    def __init__(self, now: datetime):
        self.now = now
        self.inserts: list[tuple] = []
        self.updates: list[tuple] = []
        self.new: list[str] = []
        self.stale: list[str] = []
        self.orphaned: list[str] = []
        self.hashed = 0
        self.recent: set[str] = set()   # hashed files modified within kb_git.RACY_NS of the scan

    def present(self, row: dict | None, rel: str, md5: str, size: int, mtime: float, article_exists: bool) -> None:
        """Record a present source (``row`` None: new)."""
        if row is None:
            self.inserts.append((rel, md5, size, mtime, article_path_for(rel), category_for(rel), self.now))
            self.new.append(rel)
            return
        status = _next_status(row, md5, article_exists)
        if status == "stale" and row["status"] != "stale":
            self.stale.append(rel)
        if (md5, size, mtime, status) != (row["md5"], row["size"], row["mtime"], row["status"]):
            self.updates.append((md5, size, mtime, status, rel))

    def apply(self, conn: psycopg.Connection, rows: dict[str, dict], seen: set[str]) -> None:
        """Orphan the rows not seen, hand a vanished source's row to a new source with the same article path (a
        module that became a package, a git mv: rebuilt as pending instead of a duplicate article_path), write."""
        gone = [p for p, r in rows.items() if p not in seen and r["status"] != "orphaned"]
        vanished = {r["article_path"]: p for p, r in rows.items() if p not in seen}
        moved = []
        for ins in list(self.inserts):
            old_src = vanished.pop(ins[4], None)
            if old_src is not None:
                self.inserts.remove(ins)  # still listed in ``new``: a new source path
                moved.append((ins[0], ins[1], ins[2], ins[3], ins[6], old_src))
                if old_src in gone:
                    gone.remove(old_src)
        with conn.cursor() as cur:
            if moved:
                cur.executemany("""UPDATE kb_registry SET source_path = %s, md5 = %s, size = %s, mtime = %s,
                                   status = 'pending', scanned_at = %s WHERE source_path = %s""", moved)
            if self.inserts:
                cur.executemany(
                    """INSERT INTO kb_registry (source_path, md5, size, mtime, article_path, category, status, scanned_at)
                       VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s)""", self.inserts)
            if self.updates:
                cols = list(zip(*self.updates))
                cur.execute("""UPDATE kb_registry r SET md5 = u.md5, size = u.size, mtime = u.mtime, status = u.status,
                                      scanned_at = %s
                                 FROM unnest(%s::text[], %s::bigint[], %s::float8[], %s::text[], %s::text[])
                                      AS u(md5, size, mtime, status, p)
                                WHERE r.source_path = u.p""", (self.now, *[list(c) for c in cols]))
            if gone:
                cur.execute("UPDATE kb_registry SET status = 'orphaned', scanned_at = %s WHERE source_path = ANY(%s)",
                            (self.now, gone))
                self.orphaned = sorted(gone)

    def result(self, restored: int, **extra) -> dict:
        return {"hashed": self.hashed, "new": self.new, "stale": self.stale, "orphaned": self.orphaned,
                "restored": restored, **extra}


def _scan_full(conn: psycopg.Connection, root: Path, repo, reason: str | None, t_ns: int, old_state,
               has_state_table: bool, dirty_query=None) -> dict:
    """Walk every source root, hash what changed by size + mtime; in a git checkout also record the git state
    the next scan starts from (git queried before the walk, so a change during the walk shows up next time)."""
    from . import kb_git

    git_snap = None
    if repo is not None:
        try:
            git_snap = (kb_git.head_sha(repo), kb_git.index_sig(repo),
                        dirty_query.result() if dirty_query is not None else kb_git.git_dirty(repo),
                        kb_git.git_staged(repo))
        except kb_git.GitUnusable as exc:
            reason = f"{reason}; git state not recorded: {exc}" if reason else str(exc)
            git_snap = None
    dirs: dict | None = {} if git_snap is not None else None
    ch = _Changes(datetime.now(tz=UTC))
    rows = _rows(conn)
    present = existing_articles(root, dirs, t_ns)
    restored = restore_from_articles(conn, root, set(rows), {r["article_path"] for r in rows.values()}, present)
    if restored:
        rows = _rows(conn)
    seen: set[str] = set()
    racy_from = t_ns - kb_git.RACY_NS
    for rel, st in iter_sources(root, dirs, t_ns):
        seen.add(rel)
        mtime = st.st_mtime_ns / 1e9
        row = rows.get(rel)
        if row is not None and row["md5"] and row["size"] == st.st_size and row["mtime"] == mtime:
            md5 = row["md5"]
        else:
            md5 = md5_file(root / rel)
            ch.hashed += 1
            if st.st_mtime_ns >= racy_from:
                ch.recent.add(rel)
        ch.present(row, rel, md5, st.st_size, mtime, row is not None and row["article_path"] in present)
    ch.apply(conn, rows, seen)
    if has_state_table:
        st_row = kb_git.ScanState(str(root), "full", fallback_reason=reason)
        if git_snap is not None:
            head, sig, dirty, staged = git_snap
            try:
                tracked = kb_git.git_tracked(repo, list(kb_git.WATCH_ROOTS))
            except kb_git.GitUnusable as exc:
                st_row.fallback_reason = f"{reason}; git state not recorded: {exc}"
            else:
                st_row = kb_git.ScanState(str(root), "full", head, sig, [p for _, p in staged],
                                          sorted(set(dirty) | ch.recent), sorted((seen | present) - tracked), dirs,
                                          reason)
        kb_git.save_state(conn, st_row)
    return ch.result(restored, method="full", files=len(seen))


def _scan_git(conn: psycopg.Connection, root: Path, repo, state, gc, t_ns: int) -> dict:
    """Re-check only the candidates of ``gc`` (:class:`ats.knowledge.kb_git.Changes`): their registry rows and
    the rows whose article may have appeared or gone; every other row keeps the status the last scan gave it."""
    from . import kb_git

    root_s = str(root)
    src: set[str] = set()
    arts: set[str] = set()
    for p in gc.candidates:
        if kb_git.source_root_of(p):
            src.add(p)
        elif kb_git.is_article_path(p):
            arts.add(p)
    like_src = [d + "/%" for d in sorted(gc.relisted | gc.vanished) if not (d == "kb" or d.startswith("kb/"))]
    like_art = [d + "/%" for d in sorted(gc.relisted | gc.vanished) if d == "kb" or d.startswith("kb/")]
    q_arts = arts | {article_path_for(p) for p in src}
    # one branch per condition, so each = ANY(...) is an index scan (an OR of them is a sequential scan that
    # compares every row with every array element)
    cols = "SELECT source_path, md5, size, mtime, built_md5, article_path, status FROM kb_registry"
    parts, params = [f"{cols} WHERE source_path = ANY(%s)", f"{cols} WHERE article_path = ANY(%s)"], \
        [sorted(src), sorted(q_arts)]
    if like_src:
        parts.append(f"{cols} WHERE source_path LIKE ANY(%s)")
        params.append(like_src)
    if like_art:
        parts.append(f"{cols} WHERE article_path LIKE ANY(%s)")
        params.append(like_art)
    fetched = conn.execute(" UNION ".join(parts), params).fetchall()
    # rows under a re-listed directory (direct children) or a vanished one (any depth) are re-checked too
    relisted = {d for d in gc.relisted}
    vanished = tuple(d + "/" for d in gc.vanished)
    for r in fetched:
        sp, ap = r["source_path"], r["article_path"]
        if sp.rsplit("/", 1)[0] in relisted or sp.startswith(vanished):
            src.add(sp)
        if ap.rsplit("/", 1)[0] in relisted or ap.startswith(vanished):
            arts.add(ap)
    q_arts = arts | {article_path_for(p) for p in src}
    rows = {r["source_path"]: r for r in fetched if r["source_path"] in src or r["article_path"] in q_arts}
    art_cache: dict[str, bool] = {}
    cat_ok: dict[str, bool] = {}

    def art_exists(a: str) -> bool:
        v = art_cache.get(a)
        if v is None:
            v = art_cache[a] = kb_git.is_article_path(a) and kb_git.article_present(root_s, a, cat_ok)
        return v

    registered_arts = {r["article_path"] for r in rows.values()}
    unregistered = {a for a in arts if a not in registered_arts and art_exists(a)}
    restored_paths: list[str] = []
    restored = 0
    if unregistered:
        restored = restore_from_articles(conn, root, set(), set(), unregistered, inserted=restored_paths)
        if restored_paths:
            src.update(restored_paths)
            for r in conn.execute("""SELECT source_path, md5, size, mtime, built_md5, article_path, status
                                       FROM kb_registry WHERE source_path = ANY(%s)""", (restored_paths,)):
                rows[r["source_path"]] = r
    ch = _Changes(datetime.now(tz=UTC))
    seen: set[str] = set()
    dir_ok: dict[str, bool] = {}
    racy_from = t_ns - kb_git.RACY_NS
    for rel in sorted(src):
        st = kb_git.source_stat(root_s, rel, dir_ok)
        if st is None:
            continue
        seen.add(rel)
        mtime = st.st_mtime_ns / 1e9
        row = rows.get(rel)
        if row is not None and row["md5"] and row["size"] == st.st_size and row["mtime"] == mtime:
            if row["status"] != "orphaned" and row["article_path"] not in arts:
                continue  # same source, same article presence: the status the last scan gave it stands
            md5 = row["md5"]
        else:
            md5 = md5_file(root / rel)
            ch.hashed += 1
            if st.st_mtime_ns >= racy_from:
                ch.recent.add(rel)
        ch.present(row, rel, md5, st.st_size, mtime, row is not None and art_exists(row["article_path"]))
    for p, r in rows.items():  # fetched for their article only: the source is as the last scan left it
        if p in src or r["status"] == "orphaned":
            continue
        seen.add(p)
        if r["article_path"] in arts:
            ch.present(r, p, r["md5"], r["size"], r["mtime"], art_exists(r["article_path"]))
    ch.apply(conn, rows, seen)
    # the next scan's state
    untracked = set(state.untracked) | gc.deleted_in_git
    fresh = {p for p in gc.listed if p not in gc.reported and p not in untracked
             and (p in seen or art_exists(p))}
    if fresh:
        specs = sorted(fresh) if len(fresh) <= 200 else sorted({p.rsplit("/", 1)[0] for p in fresh})
        try:
            fresh -= kb_git.git_tracked(repo, specs)
        except kb_git.GitUnusable:
            pass  # conservative: treated as untracked (re-stat'ed every scan)
        untracked |= fresh
    untracked = {p for p in untracked if p in seen or (kb_git.is_article_path(p) and art_exists(p))}
    nxt = kb_git.ScanState(root_s, "git", gc.head, gc.index_sig, list(gc.staged), sorted(set(gc.dirty) | ch.recent),
                           sorted(untracked), gc.dirs, None)
    if not nxt.same_as(state):
        kb_git.save_state(conn, nxt)
    return ch.result(restored, method="git", candidates=len(src) + len(arts))


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
