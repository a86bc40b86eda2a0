"""The git scan (`ats kb scan`, :mod:`ats.knowledge.kb_git`) leaves the same kb_registry rows as the full MD5 walk.

One git work tree, two databases: after every step (edits, staged edits, reverts, renames, deletions of tracked,
untracked and ignored files, commits, checkouts, article deletions, a module that becomes a package, a file
that stops being tracked) database G gets the default scan (asked of git) and database F the full walk
(``method="full"``); every registry column but the build stamps must be equal, and G must really have used git.
Run twice: with directory mtimes as they are (all within 2 s: every directory re-listed) and back-dated (only
the directories a step touched are re-listed). Real git, real PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.errors import UsageError
from ats.knowledge import kb, kb_git

from _kb_helpers import make_tree
from conftest import clone_template, drop_database

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git binary not installed")

COLS = ("source_path", "md5", "size", "mtime", "built_md5", "article_path", "category", "version", "status", "error")
STORE = "services/ats/widgets/store.py"


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(k, None)
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def dbs(pg_admin_url, template_db):
    made = [clone_template(pg_admin_url, template_db, prefix="ats_kbgit") for _ in range(2)]
    conns = [psycopg.connect(url, row_factory=dict_row) for _, url in made]
    yield conns
    for c in conns:
        c.close()
    for name, _ in made:
        drop_database(pg_admin_url, name)


@pytest.fixture
def repo_tree(tmp_path):
    root = make_tree(tmp_path / "proj")
    (root / ".gitignore").write_text("ignored_*.py\n*.log\n")
    (root / "mcp_servers" / "launch").write_text("#!/bin/sh\nexec python -m mcp_servers \"$@\"\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tree")
    return root.resolve()


def registry(conn, cols=COLS) -> dict:
    return {r["source_path"]: tuple(r[c] for c in cols)
            for r in conn.execute(f"SELECT {', '.join(cols)} FROM kb_registry ORDER BY source_path")}


def backdate_recent_dirs(root: Path, step: int) -> None:
    """Move the mtime of every directory modified in the last 2 s into the past (a distinct second per step), as
    if the step had happened a while ago: the scan then trusts the mtimes of the directories it did not touch."""
    now = time.time()
    past = now - 600 + step
    for d, subdirs, _ in os.walk(root):
        subdirs[:] = [s for s in subdirs if s != ".git"]
        if os.lstat(d).st_mtime >= now - 3:
            os.utime(d, (past, past), follow_symlinks=False)


class Pair:
    """Scan the same tree into G (auto: git) and F (full walk) and compare."""

    def __init__(self, conns, root: Path, backdate: bool):
        self.g, self.f = conns
        self.root = root
        self.backdate = backdate
        self.step = 0

    def both(self, cols=COLS) -> tuple[dict, dict]:
        self.step += 1
        if self.backdate:
            backdate_recent_dirs(self.root, self.step)
        g = kb.scan(self.g, self.root)
        f = kb.scan(self.f, self.root, method="full")
        assert g["method"] == "git", g["fallback_reason"]
        assert f["method"] == "full"
        rg, rf = registry(self.g, cols), registry(self.f, cols)
        diff = {p: (rg.get(p), rf.get(p)) for p in set(rg) | set(rf) if rg.get(p) != rf.get(p)}
        assert not diff, f"step {self.step}: git scan vs full scan differ: {diff}"
        for k in ("files", "new", "stale", "orphaned", "counts", "restored"):
            assert g[k] == f[k], (self.step, k, g[k], f[k])
        return g, f

    def update(self) -> None:
        kb.update(self.g, self.root)
        kb.update(self.f, self.root)


@pytest.mark.parametrize("backdate", [False, True], ids=["racy-dirs", "backdated-dirs"])
def test_git_scan_matches_full_scan(dbs, repo_tree, backdate):
    root = repo_tree
    p = Pair(dbs, root, backdate)
    first = kb.scan(p.g, root)
    assert first["method"] == "full" and first["fallback_reason"] == "empty registry"
    kb.scan(p.f, root, method="full")
    assert "mcp_servers/launch" in first["new"]
    g, _ = p.both()  # nothing changed
    assert g["hashed"] == 0
    p.update()
    p.both()  # articles written (new kb/ directories)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "articles")
    p.both()

    # tracked edit, not staged
    with open(root / STORE, "a") as fh:
        fh.write("# edited\n")
    g, _ = p.both()
    assert g["stale"] == [STORE] and g["hashed"] == 1
    # staged edit
    with open(root / "services/ats/widgets/report.py", "a") as fh:
        fh.write("# staged\n")
    git(root, "add", "services/ats/widgets/report.py")
    p.both()
    # edit + stage, then the work tree back to HEAD's content (index still differs)
    w = root / "mcp_servers/widgets.py"
    orig = w.read_text()
    w.write_text(orig + "# tmp\n")
    git(root, "add", "mcp_servers/widgets.py")
    p.both()
    w.write_text(orig)
    p.both()
    # revert the unstaged edit in place (the directory's mtime does not move): git no longer reports the file,
    # the last scan's dirty list brings it back
    (root / STORE).write_text(git(root, "show", f"HEAD:{STORE}"))
    git(root, "status", "--porcelain")  # refreshes the index: the file is clean for git again
    g, _ = p.both()
    assert STORE not in {r for r, s in registry(p.g, ("source_path", "status")).items() if s[0] == "stale"}
    # renames: git mv and a plain mv
    git(root, "mv", "bench/widgets_bench.py", "bench/widgets_perf.py")
    (root / "services/ats/widgets/report.py").rename(root / "services/ats/widgets/reporting.py")
    p.both()
    # deletions: a plain rm of a tracked file, a git rm
    (root / ".claude/agents/widget-agent.md").unlink()
    git(root, "rm", "-q", "services/ats/db/migrations/0001_widgets.sql")
    p.both()
    # untracked and ignored files, a new directory, an empty file (not a source), a #! script
    (root / "services/ats/extra.py").write_text('"""Extra."""\nX = 1\n')
    (root / "services/ats/newpkg").mkdir()
    (root / "services/ats/newpkg/__init__.py").write_text('"""New package."""\n')
    (root / "services/ats/newpkg/mod.py").write_text('"""Module."""\nY = 2\n')
    (root / "services/ats/ignored_local.py").write_text('"""Ignored by .gitignore, still a source."""\n')
    (root / "services/ats/empty.py").write_text("")
    (root / "bench/run-it").write_text("#!/bin/sh\necho hi\n")
    g, _ = p.both()
    assert {"services/ats/extra.py", "services/ats/ignored_local.py", "services/ats/newpkg/mod.py",
            "bench/run-it"} <= set(g["new"])
    # in-place edits of untracked and ignored files (their directory's mtime does not move)
    with open(root / "services/ats/extra.py", "a") as fh:
        fh.write("Z = 3\n")
    with open(root / "services/ats/ignored_local.py", "a") as fh:
        fh.write("W = 4\n")
    p.both()
    p.update()
    p.both()
    with open(root / "services/ats/extra.py", "a") as fh:
        fh.write("Z = 4\n")
    g, _ = p.both()
    assert g["stale"] == ["services/ats/extra.py"]
    (root / "services/ats/extra.py").unlink()
    (root / "services/ats/ignored_local.py").unlink()
    g, _ = p.both()
    assert set(g["orphaned"]) == {"services/ats/extra.py", "services/ats/ignored_local.py"}
    # commit everything, check out the previous commit and come back
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "step")
    p.both()
    git(root, "checkout", "-q", "HEAD~1")
    p.both()
    git(root, "checkout", "-q", "main")
    p.both()
    # a tracked article deleted: its row goes back to pending
    art = kb.article_path_for(STORE)
    (root / art).unlink()
    p.both()
    # a module that becomes a package keeps its article row
    (root / "services/ats/widgets/store").mkdir()
    (root / STORE).rename(root / "services/ats/widgets/store/__init__.py")
    p.both()
    # a tracked file that stops being tracked, then is edited in place
    git(root, "rm", "-q", "--cached", "services/ats/newpkg/mod.py")
    p.both()
    git(root, "commit", "-q", "-m", "untrack mod.py")
    p.both()
    with open(root / "services/ats/newpkg/mod.py", "a") as fh:
        fh.write("V = 5\n")
    p.both()
    p.update()
    p.both()
    with open(root / "services/ats/newpkg/mod.py", "a") as fh:
        fh.write("V = 6\n")
    g, _ = p.both()
    assert g["stale"] == ["services/ats/newpkg/mod.py"], registry(p.g)["services/ats/newpkg/mod.py"]
    # untracked and committed with no scan in between, then edited in place
    git(root, "rm", "-q", "--cached", "services/ats/newpkg/__init__.py")
    git(root, "commit", "-q", "-m", "untrack newpkg/__init__.py")
    p.both()
    with open(root / "services/ats/newpkg/__init__.py", "a") as fh:
        fh.write("U = 7\n")
    p.both()
    # touched (content unchanged) and the index refreshed by a `git status`: git rightly says nothing changed;
    # only the registry's informational mtime of that file lags (a later full scan refreshes it, no status moves)
    before = registry(p.g, ("source_path", "status"))
    os.utime(root / "mcp_servers/widgets.py")
    git(root, "status", "--porcelain")
    p.both(cols=tuple(c for c in COLS if c != "mtime"))
    assert registry(p.g, ("source_path", "status")) == before
    st = p.g.execute("SELECT head_commit, method FROM kb_scan_state").fetchone()
    assert st["method"] == "git" and st["head_commit"] == git(root, "rev-parse", "HEAD").strip()


def test_fallbacks_say_why(dbs, tmp_path, repo_tree):
    conn = dbs[0]
    plain = make_tree(tmp_path / "plain")  # not a git checkout
    a = kb.scan(conn, plain)
    b = kb.scan(conn, plain)
    assert a["method"] == b["method"] == "full" and "not the top of a git work tree" in b["fallback_reason"]
    c = kb.scan(conn, repo_tree)  # another root than the last scan
    assert c["method"] == "full" and "another root" in c["fallback_reason"]
    assert kb.scan(conn, repo_tree)["method"] == "git"
    # the last scanned commit no longer exists (history rewritten and pruned): full scan, reason from git
    conn.execute("UPDATE kb_scan_state SET head_commit = %s", ("0" * 40,))
    git(repo_tree, "commit", "-q", "--allow-empty", "-m", "move HEAD")
    conn.commit()
    d = kb.scan(conn, repo_tree)
    assert d["method"] == "full" and "git diff failed" in d["fallback_reason"]
    assert kb.scan(conn, repo_tree)["method"] == "git"
    assert kb.scan(conn, repo_tree, method="full")["fallback_reason"] == "full scan requested"
    (repo_tree / ".gitmodules").write_text("")
    e = kb.scan(conn, repo_tree)
    assert e["method"] == "full" and "submodules" in e["fallback_reason"]
    with pytest.raises(UsageError, match="method must be one of"):
        kb.scan(conn, repo_tree, method="fast")


def test_source_rules_match_the_walk(repo_tree):
    """kb_git.source_stat accepts exactly what kb.iter_sources yields (skipped dirs, empty files, symlinks)."""
    root = repo_tree
    (root / "services/ats/__pycache__").mkdir()
    (root / "services/ats/__pycache__/x.py").write_text("x = 1\n")
    (root / "services/ats/link.py").symlink_to(root / STORE)
    (root / "services/ats/notes.txt").write_text("not a source\n")
    walked = {rel for rel, _ in kb.iter_sources(root)}
    candidates = {os.path.relpath(os.path.join(d, f), root) for top in kb.SOURCE_ROOTS
                  for d, _, fs in os.walk(root / top) for f in fs}
    accepted = {rel for rel in candidates if kb_git.source_stat(str(root), rel, {}) is not None}
    assert accepted == walked
