"""Which knowledge-base files may have changed since the last `ats kb scan`, asked of git: the scan's fast path.

:func:`ats.knowledge.kb.scan` calls :func:`changes` when the last scan left a usable state (``kb_scan_state``,
migration 0170) for the same root and the root is the top of a git work tree. The candidate set is every path
whose content or existence may differ from what the registry recorded at the last scan:

- ``git diff-files`` (work tree vs index, through git's stat cache; C speed, no hashing of clean files);
- ``git diff-index --cached HEAD`` (staged changes), re-run only when the index file's (mtime, size, inode) or HEAD
  moved, else the stored list;
- ``git diff HEAD_last HEAD`` when HEAD moved (commits, checkouts, resets);
- the paths that were dirty or staged at the last scan (a file reverted to HEAD since is no longer reported);
- the registry paths git does not track (untracked or ignored: git has no stat cache for them, so each is
  re-stat'ed as the full scan would);
- the files of every watched directory whose mtime moved (a file created or removed there), and of new directories.

Why that is complete: a path outside the last dirty/staged sets had its HEAD content in the work tree at the last
scan; outside the HEAD diff its HEAD content is unchanged; and outside the current dirty/staged sets the work tree
still holds it. Untracked files are covered by the re-stat and the directory mtimes. Directory mtimes equal to the
scan time within 2 s (``RACY_NS``; file systems stamp with a coarse clock) are not trusted: such a directory is
re-listed by the next scan, as git does for racily clean index entries.

Not usable (the scan falls back to the full MD5 scan and says why): GitPython missing, the root not the top of a
non-bare work tree, no commit yet, a ``.gitmodules`` file (submodules: git reports a submodule as one path), a
watched root that is a symlink, or any git command failing (corrupt index, last scanned commit gone).
Every git command runs with ``--literal-pathspecs`` in the root, limited to ``WATCH_ROOTS``.
"""

from __future__ import annotations

import json
import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path

from .kb import SKIP_DIRS, SOURCE_ROOTS, SOURCE_SUFFIXES, _is_script

#: the source roots plus the article tree: a change in either can move a registry row's status
WATCH_ROOTS = SOURCE_ROOTS + ("kb",)
#: directory mtimes this close (ns) to the scan start are not trusted (coarse file-system clocks)
RACY_NS = 2_000_000_000
#: mtime marker of a directory to re-list on the next scan
RACY = -1


class GitUnusable(Exception):
    """The git fast path cannot be used here; ``str(exc)`` is the one-line reason (recorded by the scan)."""


# ---------------------------------------------------------------------------------------------------------
# state (kb_scan_state, migration 0170)

@dataclass
class ScanState:
    """The row of ``kb_scan_state``: see migration 0170 for each field. ``head`` None = no usable git state."""

    root: str
    method: str
    head: str | None = None
    index_sig: list[int] | None = None
    staged: list[str] = field(default_factory=list)
    dirty: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    dirs: dict[str, int | None] = field(default_factory=dict)
    fallback_reason: str | None = None

    def same_as(self, other: "ScanState | None") -> bool:
        """True when writing ``self`` over ``other`` would change nothing (then the scan skips the write)."""
        return other is not None and all(getattr(self, k) == getattr(other, k) for k in (
            "root", "method", "head", "index_sig", "fallback_reason", "dirs")) and all(
            sorted(getattr(self, k)) == sorted(getattr(other, k)) for k in ("staged", "dirty", "untracked"))


def begin_scan(conn, lock_key: int, has_table: bool) -> tuple[bool, ScanState | None, bool]:
    """The scan's first statement in its transaction, one round trip: take the advisory lock ``lock_key``
    (try, transaction-scoped), set ``synchronous_commit = off`` for the transaction, read whether kb_registry has
    rows and (when ``has_table``) the kb_scan_state row. Returns (locked, state or None, registry has rows)."""
    sql = ("SELECT pg_try_advisory_xact_lock(%s) AS ok, set_config('synchronous_commit', 'off', true) AS sc, "
           "EXISTS (SELECT 1 FROM kb_registry) AS has_rows")
    if has_table:
        sql += ", (SELECT to_jsonb(s) FROM kb_scan_state s WHERE singleton) AS state"
    row = conn.execute(sql, (lock_key,)).fetchone()
    ok, has_rows = _get(row, "ok"), _get(row, "has_rows")
    j = _get(row, "state") if has_table else None
    if not ok or j is None:
        return ok, None, has_rows
    sig = j.get("index_sig")
    return ok, ScanState(j["root"], j["method"], j.get("head_commit"), [int(x) for x in sig] if sig else None,
                         list(j.get("staged") or []), list(j.get("dirty") or []), list(j.get("untracked") or []),
                         dict(j.get("dirs") or {}), j.get("fallback_reason")), has_rows


def save_state(conn, st: ScanState) -> None:
    """Upsert the single ``kb_scan_state`` row (inside the scan's transaction)."""
    from psycopg.types.json import Jsonb

    conn.execute(
        """INSERT INTO kb_scan_state (singleton, root, method, head_commit, index_sig, staged, dirty, untracked, dirs,
                                      fallback_reason, scanned_at)
           VALUES (true, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (singleton) DO UPDATE SET root = EXCLUDED.root, method = EXCLUDED.method,
               head_commit = EXCLUDED.head_commit, index_sig = EXCLUDED.index_sig, staged = EXCLUDED.staged,
               dirty = EXCLUDED.dirty, untracked = EXCLUDED.untracked, dirs = EXCLUDED.dirs,
               fallback_reason = EXCLUDED.fallback_reason, scanned_at = now()""",
        (st.root, st.method, st.head, st.index_sig, sorted(st.staged), sorted(st.dirty), sorted(st.untracked),
         Jsonb(st.dirs), st.fallback_reason))


def _get(row, key):
    return row[key] if isinstance(row, dict) else getattr(row, key)


# ---------------------------------------------------------------------------------------------------------
# git

_REPOS: dict[str, object] = {}


def open_repo(root: Path):
    """The GitPython ``Repo`` of ``root`` (cached per root). Raises GitUnusable (with the reason) when the git
    fast path cannot serve this root; see the module docstring."""
    try:
        import git
    except ImportError as exc:  # pragma: no cover - gitpython is a dependency
        raise GitUnusable(f"GitPython is not importable ({exc})") from None
    key = str(root)
    repo = _REPOS.get(key)
    if repo is None:
        if not os.path.exists(os.path.join(key, ".git")):
            raise GitUnusable(f"{root} is not the top of a git work tree (no .git)")
        try:
            repo = git.Repo(key, search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitUnusable(f"{root} is not a usable git work tree ({type(exc).__name__})") from None
        if repo.bare:
            raise GitUnusable(f"{root} is a bare repository")
        _REPOS[key] = repo
    if os.path.exists(os.path.join(key, ".gitmodules")):
        raise GitUnusable("the checkout has submodules (.gitmodules): git reports a submodule as one path")
    for top in WATCH_ROOTS:
        if os.path.islink(os.path.join(key, top)):
            raise GitUnusable(f"watched root {top!r} is a symlink: git does not look through it")
    return repo


def head_sha(repo) -> str:
    """HEAD's commit id (read from the refs, no git process). Raises GitUnusable on an unborn branch."""
    try:
        return repo.head.commit.hexsha
    except ValueError as exc:
        raise GitUnusable(f"HEAD has no commit yet ({exc})") from None


def _git(repo, *args: str) -> bytes:
    import git

    try:
        return repo.git.execute(["git", "--literal-pathspecs", *args], stdout_as_string=False,
                                strip_newline_in_stdout=False)
    except git.GitCommandError as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        first = (err.strip().splitlines() or [f"exit {exc.status}"])[0].removeprefix("stderr: ").strip("' ")
        raise GitUnusable(f"git {args[0]} failed: {first[:200]}") from None
    except OSError as exc:
        raise GitUnusable(f"git could not run: {exc}") from None


def _names(out: bytes) -> list[str]:
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _name_status(out: bytes) -> list[tuple[str, str]]:
    parts = [p for p in out.split(b"\0") if p]
    return [(os.fsdecode(parts[i])[:1], os.fsdecode(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]


_DIRTY_ARGS = ("diff-files", "--name-only", "-z", "--", *WATCH_ROOTS)


def git_dirty(repo) -> list[str]:
    """Paths under WATCH_ROOTS whose work-tree file differs from the index by git's stat cache (deleted ones too)."""
    return _names(_git(repo, *_DIRTY_ARGS))


class DirtyQuery:
    """``git diff-files`` started in the background (:func:`git_dirty`'s answer), so the scan's first database
    round trips and the directory stats overlap with git's stat of the index entries; :meth:`result` waits."""

    def __init__(self, repo):
        import git

        self._repo = repo
        self._out: list[str] | None = None
        try:
            self._proc = repo.git.execute(["git", "--literal-pathspecs", *_DIRTY_ARGS], as_process=True)
        except (git.GitCommandError, OSError) as exc:
            raise GitUnusable(f"git diff-files could not start: {exc}") from None

    def result(self) -> list[str]:
        """The dirty paths; raises GitUnusable when git failed."""
        import git

        if self._out is None:
            try:
                out = self._proc.stdout.read()
                self._proc.wait()
            except git.GitCommandError as exc:
                err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
                first = (err.strip().splitlines() or [f"exit {exc.status}"])[0].removeprefix("stderr: ").strip("' ")
                raise GitUnusable(f"git diff-files failed: {first[:200]}") from None
            self._out = _names(out)
        return self._out

    def close(self) -> None:
        """Reap the process when the scan did not need the answer."""
        if self._out is None:
            try:
                self.result()
            except GitUnusable:
                pass


def git_staged(repo) -> list[tuple[str, str]]:
    """(status letter, path) of index entries that differ from HEAD, under WATCH_ROOTS (no rename detection)."""
    return _name_status(_git(repo, "diff-index", "--cached", "--no-renames", "--name-status", "-z", "HEAD", "--",
                             *WATCH_ROOTS))


def git_committed(repo, old: str, new: str) -> list[tuple[str, str]]:
    """(status letter, path) of files that differ between commits ``old`` and ``new`` under WATCH_ROOTS."""
    return _name_status(_git(repo, "diff", "--no-renames", "--name-status", "-z", old, new, "--", *WATCH_ROOTS))


def git_tracked(repo, pathspecs: list[str]) -> set[str]:
    """Index paths matching ``pathspecs`` (literal paths or directories)."""
    out: set[str] = set()
    for i in range(0, len(pathspecs), 500):
        out.update(_names(_git(repo, "ls-files", "-z", "--", *pathspecs[i:i + 500])))
    return out


def index_sig(repo) -> list[int] | None:
    """[st_mtime_ns, st_size, st_ino] of the git index file, None when it does not exist."""
    try:
        st = os.stat(os.path.join(repo.git_dir, "index"))
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


# ---------------------------------------------------------------------------------------------------------
# which paths are sources / articles (the same rules as kb.iter_sources and kb.existing_articles)

def source_root_of(rel: str) -> str | None:
    """The SOURCE_ROOTS entry ``rel`` lies under, else None."""
    for top in SOURCE_ROOTS:
        if rel.startswith(top) and rel[len(top):len(top) + 1] == "/":
            return top
    return None


def is_article_path(rel: str) -> bool:
    """``kb/<CATEGORY>/<name>.md`` (what kb.existing_articles lists)."""
    parts = rel.split("/")
    return len(parts) == 3 and parts[0] == "kb" and parts[2].endswith(".md") and bool(parts[1]) and bool(parts[2])


def article_present(root_s: str, rel: str, cat_ok: dict[str, bool] | None = None) -> bool:
    """True when kb.existing_articles would list ``rel``: a real category directory, a file (symlinks followed).
    ``cat_ok``: a per-scan cache of the category directory checks."""
    cat = rel.split("/")[1]
    ok = cat_ok.get(cat) if cat_ok is not None else None
    if ok is None:
        try:
            ok = stat_mod.S_ISDIR(os.lstat(f"{root_s}/kb/{cat}").st_mode)
        except OSError:
            ok = False
        if cat_ok is not None:
            cat_ok[cat] = ok
    return ok and os.path.isfile(f"{root_s}/{rel}")


def source_stat(root_s: str, rel: str, dir_ok: dict[str, bool]) -> os.stat_result | None:
    """lstat of ``rel`` when kb.iter_sources would yield it (under a source root, no skipped or symlinked
    directory on the way, a non-empty regular file with a source suffix or a ``#!`` line), else None."""
    top = source_root_of(rel)
    if top is None:
        return None
    inner = rel[len(top) + 1:].split("/")
    name = inner[-1]
    for d in inner[:-1]:
        if d in SKIP_DIRS or d.endswith(".egg-info"):
            return None
    prefix = top
    for d in inner[:-1]:
        prefix = f"{prefix}/{d}"
        ok = dir_ok.get(prefix)
        if ok is None:
            try:
                ok = stat_mod.S_ISDIR(os.lstat(os.path.join(root_s, prefix)).st_mode)
            except OSError:
                ok = False
            dir_ok[prefix] = ok
        if not ok:
            return None
    path = os.path.join(root_s, rel)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat_mod.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    if not (name.endswith(SOURCE_SUFFIXES) or ("." not in name and _is_script(path))):
        return None
    return st


def dir_mark(st: os.stat_result, t_ns: int) -> int:
    """The mtime to store for a directory listed now: its st_mtime_ns, or RACY when too close to ``t_ns``."""
    return RACY if st.st_mtime_ns >= t_ns - RACY_NS else st.st_mtime_ns


def _dir_kind(rel_dir: str) -> str:
    if rel_dir == "kb":
        return "kb"
    if rel_dir.startswith("kb/"):
        return "cat"
    return "src"


def list_dir(root_s: str, rel_dir: str, known: dict, dirs_out: dict, files_out: set[str], t_ns: int) -> bool:
    """List one watched directory (stat before the listing), recording its mark in ``dirs_out`` and its candidate
    files in ``files_out``; sub-directories not in ``known`` are listed recursively. False when it is not a
    directory (anymore)."""
    path = os.path.join(root_s, rel_dir)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat_mod.S_ISDIR(st.st_mode):
        return False
    dirs_out[rel_dir] = dir_mark(st, t_ns)
    kind = _dir_kind(rel_dir)
    subdirs = []
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if kind == "src" and (e.name in SKIP_DIRS or e.name.endswith(".egg-info")):
                        continue
                    if kind in ("src", "kb"):
                        subdirs.append(f"{rel_dir}/{e.name}")
                elif kind == "src" or (kind == "cat" and e.name.endswith(".md")):
                    files_out.add(f"{rel_dir}/{e.name}")
    except OSError:
        return False
    for sub in subdirs:
        if sub not in known:
            list_dir(root_s, sub, known, dirs_out, files_out, t_ns)
    return True


# ---------------------------------------------------------------------------------------------------------
# the change set

@dataclass
class Changes:
    """What git and the directory cache say since the last scan (see the module docstring).

    ``candidates``: every path to re-check (unfiltered: sources, articles and anything else git reported);
    ``listed``: the files found by re-listing directories (their tracked-ness is checked before they join the
    untracked set); ``reported``: paths git itself reported; ``deleted_in_git``: paths the index or the new HEAD
    no longer has (a file that still exists there is untracked now); ``relisted`` / ``vanished``: directories
    re-listed / gone (their registry rows are re-checked too)."""

    head: str
    index_sig: list[int] | None
    dirty: list[str]
    staged: list[str]
    candidates: set[str]
    listed: set[str]
    reported: set[str]
    deleted_in_git: set[str]
    relisted: set[str]
    vanished: set[str]
    dirs: dict[str, int | None]


def changes(repo, root: Path, last: ScanState, t_ns: int, dirty_query: DirtyQuery | None = None) -> Changes:
    """The change set since ``last`` (see :class:`Changes`); ``dirty_query``: a ``git diff-files`` already
    started (before ``head``/index were read by the caller's clock, so nothing between is missed). Raises
    GitUnusable when a git command fails; runs no database statement."""
    root_s = str(root)
    head = head_sha(repo)
    sig = index_sig(repo)
    deleted: set[str] = set()
    if head != last.head or sig is None or sig != last.index_sig:
        st_pairs = git_staged(repo)
        staged = [p for _, p in st_pairs]
        deleted.update(p for s, p in st_pairs if s == "D")
    else:
        staged = list(last.staged)
    committed: list[tuple[str, str]] = []
    if head != last.head:
        if not last.head:
            raise GitUnusable("no git HEAD recorded by the last scan")
        committed = git_committed(repo, last.head, head)
        deleted.update(p for s, p in committed if s == "D")
    reported = set(staged) | {p for _, p in committed}
    cands = reported | set(last.dirty) | set(last.staged) | set(last.untracked)
    # directories: re-list the ones whose mtime moved (new or removed entries)
    dirs: dict[str, int | None] = {}
    listed: set[str] = set()
    relisted: set[str] = set()
    vanished: set[str] = set()
    known = dict(last.dirs)
    for top in WATCH_ROOTS:
        known.setdefault(top, None)
    for d in sorted(known):
        if d in dirs:  # listed already as a new sub-directory of a re-listed parent
            continue
        m = known[d]
        try:
            st = os.lstat(os.path.join(root_s, d))
            is_dir = stat_mod.S_ISDIR(st.st_mode)
        except OSError:
            st, is_dir = None, False
        if not is_dir:
            if m is not None:
                vanished.add(d)
            if d in WATCH_ROOTS:
                dirs[d] = None
            continue
        if m is not None and m != RACY and m == st.st_mtime_ns:
            dirs[d] = m
            continue
        relisted.add(d)
        list_dir(root_s, d, known, dirs, listed, t_ns)
    cands |= listed
    dirty = dirty_query.result() if dirty_query is not None else git_dirty(repo)
    cands |= set(dirty)
    reported |= set(dirty)
    return Changes(head, sig, dirty, staged, cands, listed, reported, deleted, relisted, vanished, dirs)
