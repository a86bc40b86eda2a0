"""Benchmark (by hand, not a test): `ats kb scan` on a generated 10,000-file tree with 1 % changed, beside
`git status` on the same tree in the same run.

    .venv/bin/python bench/kb_scan.py [--files 10000] [--changed-pct 1] [--repeat 5]

Database: ``ATS_DATABASE_URL``'s server (a temporary database is created and dropped) or, when unset, a
temporary embedded PostgreSQL. The tree lives in a temporary directory (deleted at the end) with ~2 KB Python
modules under ``services/ats/pkgNN/``; it is committed to a fresh git repository so `git status` compares
against an up-to-date index, exactly like the scan compares against an up-to-date registry.

Reported (median of ``--repeat`` runs where a run can be repeated):
  - cold scan: empty registry, every file hashed and inserted (first scan of a checkout);
  - warm scan, nothing changed: stat only (size + mtime equal -> no hashing);
  - scan after 1 % of the files changed: the changed files re-hashed and marked stale (measured once: the first
    scan that sees the change), then warm rescans of the changed tree;
  - `git status --porcelain` on the same changed tree (first call refreshes git's index stat cache, then warm).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", module="platformdirs")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from ats.db.connection import with_dbname  # noqa: E402
from ats.db.migrate import migrate  # noqa: E402
from ats.knowledge import kb  # noqa: E402

BODY = '''"""Generated module {i} for the kb scan benchmark."""

from __future__ import annotations

CONSTANT_{i} = {i}


def function_{i}(x: int, y: int = {i}) -> int:
    """Add {i} things; the result must never be negative."""
    # invariant: x >= 0
    return x + y + CONSTANT_{i}

''' + "# padding line to make the file about two kilobytes long ........................................\n" * 16


def make_tree(root: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        p = root / "services" / "ats" / f"pkg{i // 100:02d}" / f"mod{i:05d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(BODY.format(i=i))
        files.append(p)
    return files


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env, check=True)


def database():
    """(url, cleanup) of a temporary migrated database."""
    ext = os.environ.get("ATS_DATABASE_URL")
    if ext:
        admin = ext
        srv = None
    else:
        import pgserver

        d = tempfile.mkdtemp(prefix="atsbench-pg-")
        srv = pgserver.get_server(d, cleanup_mode="delete")
        admin = srv.get_uri()
    name = f"ats_bench_kb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(admin, name)
    migrate(url)

    def cleanup():
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if srv is not None:
            srv.cleanup()
    return url, cleanup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--changed-pct", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    url, cleanup = database()
    tmp = Path(tempfile.mkdtemp(prefix="atsbench-kb-"))
    try:
        t, files = timed(make_tree, tmp, args.files)
        print(f"generated {len(files)} files ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB) in {t:.2f} s: {tmp}")
        git(tmp, "init", "-q")
        git(tmp, "add", "-A")
        git(tmp, "commit", "-q", "-m", "tree")
        git(tmp, "status", "--porcelain")  # settle the index's stat cache
        with psycopg.connect(url, row_factory=dict_row) as conn:
            cold, res = timed(kb.scan, conn, tmp)
            assert res["hashed"] == len(files), res
            # pretend every article was built (a checkout with an up-to-date kb/): rows active, article files present
            for r in conn.execute("SELECT source_path, article_path, md5 FROM kb_registry").fetchall():
                a = tmp / r["article_path"]
                a.parent.mkdir(parents=True, exist_ok=True)
                a.write_text(kb.render_front_matter({"source_path": r["source_path"], "source_md5": r["md5"],
                                                     "version": 1, "builder": "deterministic"}))
            conn.execute("UPDATE kb_registry SET built_md5 = md5, status = 'active', version = 1")
            conn.commit()
            warm = [timed(kb.scan, conn, tmp)[0] for _ in range(args.repeat)]
            rng = random.Random(42)
            changed = rng.sample(files, max(1, int(len(files) * args.changed_pct / 100)))
            time.sleep(0.01)
            for p in changed:
                with open(p, "a") as f:
                    f.write("# changed\n")
            first_changed, res = timed(kb.scan, conn, tmp)
            assert res["hashed"] == len(changed) and len(res["stale"]) == len(changed), res
            stale = conn.execute("SELECT count(*) AS n FROM kb_registry WHERE status = 'stale'").fetchone()["n"]
            warm_changed = [timed(kb.scan, conn, tmp)[0] for _ in range(args.repeat)]
        g = []
        out = None
        for _ in range(args.repeat + 1):
            t, out = timed(git, tmp, "status", "--porcelain")
            g.append(t)
        git_first, git_warm = g[0], statistics.median(g[1:])
        modified = sum(1 for line in out.stdout.splitlines() if line.startswith(" M"))
        print()
        print(f"{'operation':<75} {'seconds':>9}")
        print("-" * 85)
        rows = [
            (f"kb scan, cold (empty registry, {len(files)} files hashed + inserted)", cold),
            ("kb scan, warm, nothing changed (median)", statistics.median(warm)),
            (f"kb scan, first after {len(changed)} files ({args.changed_pct:g} %) changed: {res['hashed']} re-hashed"
             f", {len(res['stale'])} stale",
             first_changed),
            ("kb scan, warm rescan of the changed tree (median)", statistics.median(warm_changed)),
            (f"git status --porcelain, first after the change ({modified} modified)", git_first),
            ("git status --porcelain, warm (median)", git_warm),
        ]
        for label, secs in rows:
            print(f"{label:<75} {secs:>9.4f}")
        print()
        print(f"registry rows marked stale: {stale} (= the {len(changed)} changed files; every other row stayed active)")
        print(f"ratio first-changed scan / warm git status: {first_changed / git_warm:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
