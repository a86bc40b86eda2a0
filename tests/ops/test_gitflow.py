"""`ats git commit` / `ats session close` (GitPython) on a temporary repository."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import git
import pytest

from conftest import run_cli
from ats.errors import AtsError, UsageError
from ats.ops import gitflow

TODAY = datetime.now(timezone.utc).date()


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    r = git.Repo.init(root)
    with r.config_writer() as cw:
        cw.set_value("user", "name", "Test").set_value("user", "email", "t@example.com")
    (root / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    (root / "README.md").write_text("readme\n")
    r.git.add("--", "pyproject.toml", "README.md")
    r.git.commit("-m", "init")
    (root / "services" / "ats").mkdir(parents=True)
    (root / "plans").mkdir()
    return root


def _plan(root: Path, day: date, title: str, hhmm: str = "0900") -> str:
    name = f"plans/{day.isoformat()}_{hhmm}_{title.lower().replace(' ', '-')}.md"
    (root / name).write_text(f"# {title}\n\n## Goal\nx\n")
    return name


def test_docs_change_commits_with_the_hint_and_only_the_named_paths(repo):
    (repo / "README.md").write_text("changed\n")
    (repo / "notes.txt").write_text("not named\n")
    res = gitflow.commit(["README.md"], "docs: say more", root=repo)
    r = git.Repo(repo)
    assert r.head.commit.message.startswith("docs: say more\n")
    assert list(r.head.commit.stats.files) == ["README.md"]
    assert "notes.txt" in r.untracked_files and res.plan is None


def test_services_change_without_todays_plan_is_refused_and_unstaged(repo):
    (repo / "services/ats/x.py").write_text("x = 1\n")
    _plan(repo, date(2020, 1, 1), "Old plan")
    with pytest.raises(AtsError, match=f"need a plan saved today: no plans/{TODAY.isoformat()}_"):
        gitflow.commit(["services/ats/x.py"], "feat", root=repo)
    r = git.Repo(repo)
    assert r.head.commit.message == "init\n" and not r.index.diff("HEAD")


def test_services_change_with_todays_plan_takes_the_title_and_needs_the_plan_in_the_commit(repo):
    (repo / "services/ats/x.py").write_text("x = 1\n")
    (repo / "tests").mkdir()
    (repo / "tests/test_x.py").write_text("def test(): pass\n")
    plan = _plan(repo, TODAY, "Add the x module")
    with pytest.raises(AtsError, match="is not committed: add it to --paths"):
        gitflow.commit(["services/ats/x.py"], root=repo)
    res = gitflow.commit(["services/ats/x.py", "tests", plan], "issue 16", root=repo)
    msg = git.Repo(repo).head.commit.message
    assert msg.splitlines()[0] == "Add the x module"
    assert "issue 16" in msg and f"Plan: {plan}" in msg
    assert sorted(res.paths) == sorted(["services/ats/x.py", "tests/test_x.py", plan])
    # a second change the same day: the plan is committed already, that is enough
    (repo / "services/ats/x.py").write_text("x = 2\n")
    gitflow.commit(["services/ats/x.py"], root=repo)
    assert git.Repo(repo).head.commit.summary == "Add the x module"


def test_refuses_foreign_staged_changes_secrets_and_outside_paths(repo, tmp_path):
    r = git.Repo(repo)
    (repo / "a.txt").write_text("a\n")
    (repo / "b.txt").write_text("b\n")
    r.git.add("--", "b.txt")
    with pytest.raises(AtsError, match="staged changes outside --paths: b.txt"):
        gitflow.commit(["a.txt"], "x", root=repo)
    (repo / ".env").write_text("K=V\n")
    with pytest.raises(UsageError, match="state or secrets"):
        gitflow.commit([".env"], "x", root=repo)
    with pytest.raises(UsageError, match="outside the repository"):
        gitflow.commit([str(tmp_path)], "x", root=repo)
    with pytest.raises(UsageError, match="needs --paths"):
        gitflow.commit([], "x", root=repo)


def test_no_push_exists():
    src = Path(gitflow.__file__).read_text()
    assert ".push(" not in src and '"push"' not in src


def test_cli_commit_and_session_close(repo):
    (repo / "README.md").write_text("v2\n")
    r = run_cli("git", "commit", "--paths", "README.md", "--hint", "docs: v2", cwd=repo, env={"ATS_HOME": str(repo)})
    assert r.returncode == 0, r.stderr
    assert "not pushed" in r.stdout
    (repo / "services/ats/y.py").write_text("y = 1\n")
    r = run_cli("git", "commit", "--paths", "services/ats/y.py", cwd=repo, env={"ATS_HOME": str(repo)})
    assert r.returncode == 1 and "need a plan saved today" in r.stderr
    r = run_cli("session", "close", "--no-backup", "--no-health", cwd=repo, env={"ATS_HOME": str(repo)})
    assert r.returncode == 0, r.stderr
    summary = next((repo / "reports/sessions").glob("*_session.md")).read_text()
    assert "docs: v2" in summary and "?? services/" in summary


def test_session_close_commits_backs_up_and_summarises(repo, fresh_db_url, tmp_path):
    (repo / "README.md").write_text("v3\n")
    env = {"ATS_HOME": str(repo), "ATS_BACKUP_DIR": str(tmp_path / "bk")}
    r = run_cli("session", "close", "--paths", "README.md", "--hint", "docs: v3", "--no-health", cwd=repo, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((tmp_path / "bk").glob("ats_*.dump"))
    summary = next((repo / "reports/sessions").glob("*_session.md")).read_text()
    assert "| commit | 0 |" in summary and "| ats db backup | 0 |" in summary and "docs: v3" in summary
