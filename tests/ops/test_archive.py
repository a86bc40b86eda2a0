"""`ats archive`: the bundle restores with git clone and holds the commits; the tarball holds reports/kb/plans;
rotation keeps the newest N."""

from __future__ import annotations

import json
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone

import git
import pytest

from conftest import run_cli
from ats.ops import archive


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "proj"
    for d in ("reports/daily", "kb", "plans"):
        (root / d).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    (root / "reports/daily/r.md").write_text("# r\n")
    (root / "kb/a.md").write_text("# a\n")
    (root / "plans/2026-12-01_0900_p.md").write_text("# p\n")
    r = git.Repo.init(root)
    with r.config_writer() as cw:
        cw.set_value("user", "name", "T").set_value("user", "email", "t@example.com")
    r.git.add("--", "pyproject.toml", "kb")
    r.git.commit("-m", "first")
    r.git.branch("side")
    (root / "kb/b.md").write_text("# b\n")
    r.git.add("--", "kb/b.md")
    r.git.commit("-m", "second")
    return root


def test_archive_bundle_clones_and_tar_holds_the_content(repo, tmp_path):
    out = tmp_path / "arch"
    r = run_cli("archive", "--dir", str(out), env={"ATS_HOME": str(repo), "ATS_DATABASE_URL": "postgresql://"
                                                    "nobody@127.0.0.1:1/none"}, cwd=repo)
    assert r.returncode == 0, r.stderr
    (man_path,) = out.glob("ats-archive_*.json")
    man = json.loads(man_path.read_text())
    bundle = out / f"{man['stem']}.bundle"
    head = git.Repo(repo).head.commit.hexsha
    assert man["head"] == head and "refs/heads/side" in man["refs"]
    clone = tmp_path / "restored"
    subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True)
    restored = git.Repo(clone)
    assert restored.commit(head).summary == "second"
    assert {c.summary for c in restored.iter_commits("origin/side")} == {"first"}
    with tarfile.open(out / f"{man['stem']}.tar.gz") as tf:
        names = set(tf.getnames())
    assert {"reports/daily/r.md", "kb/a.md", "kb/b.md", "plans/2026-12-01_0900_p.md"} <= names
    assert man["files"][bundle.name]["size_bytes"] == bundle.stat().st_size


def test_rotation_keeps_the_newest_n(repo, tmp_path):
    out = tmp_path / "arch"
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    stems = [archive.create_archive(repo, out, now=t0 + timedelta(hours=h)).stem for h in range(4)]
    (out / "unrelated.txt").write_text("x")
    assert archive.rotate(out, keep=2) == [stems[1], stems[0]]
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([f"{s}{e}" for s in stems[2:] for e in (".bundle", ".tar.gz", ".json")] + ["unrelated.txt"])
    with pytest.raises(Exception, match=">= 1"):
        archive.rotate(out, keep=0)


def test_archive_of_a_non_repository_fails_in_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    r = run_cli("archive", "--dir", str(tmp_path / "a"), env={"ATS_HOME": str(tmp_path), "ATS_DATABASE_URL": ""},
                cwd=tmp_path)
    assert r.returncode == 1 and "not a git repository" in r.stderr


def test_settings_are_seeded_and_override_the_directory(fresh_db_url, tmp_path):
    assert archive.settings(fresh_db_url) == ("", 10)
    assert archive.resolve_dir(tmp_path, None, "/srv/ats-archives").as_posix() == "/srv/ats-archives"
    assert archive.resolve_dir(tmp_path, tmp_path / "x", "/srv/ats-archives") == tmp_path / "x"
