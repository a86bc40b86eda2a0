"""`ats gh ...` over a stand-in `gh` that records its arguments (the real gh would need GitHub)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import git
import pytest

from conftest import run_cli

FAKE_GH = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    with open(os.environ["FAKE_GH_RECORD"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    mode = os.environ.get("FAKE_GH_MODE", "ok")
    if mode == "offline":
        sys.stderr.write("error connecting to api.github.com\\ncheck your internet connection\\n"); sys.exit(1)
    if mode == "noauth":
        sys.stderr.write("To get started with GitHub CLI, please run:  gh auth login\\n"); sys.exit(4)
    if sys.argv[1:3] == ["issue", "list"]:
        print(json.dumps([{{"number": 16, "title": "The operator fleet", "state": "OPEN", "url": "u16",
                           "updatedAt": "2026-12-01T10:00:00Z", "labels": [{{"name": "ops"}}]}}]))
    elif sys.argv[1:3] == ["issue", "create"]:
        print("Creating issue in o/r\\n\\nhttps://github.com/o/r/issues/99")
''')


@pytest.fixture
def fake_gh(tmp_path):
    path = tmp_path / "gh"
    path.write_text(FAKE_GH.format(python=sys.executable))
    path.chmod(0o755)
    record = tmp_path / "gh-calls.jsonl"
    return {"ATS_GH_BIN": str(path), "FAKE_GH_RECORD": str(record)}, record


def calls(record: Path) -> list[list[str]]:
    return [json.loads(ln) for ln in record.read_text().splitlines()] if record.exists() else []


def test_issue_commands_pass_the_right_arguments(fake_gh):
    env, record = fake_gh
    r = run_cli("gh", "issues", "--label", "ops", "--repo", "o/r", env=env)
    assert r.returncode == 0, r.stderr
    assert "#16" in r.stdout and "The operator fleet" in r.stdout and "[ops]" in r.stdout
    r = run_cli("gh", "create", "Backup failed", "--body", "see event 7", "--label", "bug", env=env)
    assert r.returncode == 0 and r.stdout.strip() == "https://github.com/o/r/issues/99"
    assert run_cli("gh", "comment", "16", "--body", "progress", env=env).returncode == 0
    assert run_cli("gh", "close", "16", "--comment", "done", "--reason", "completed", env=env).returncode == 0
    assert calls(record) == [
        ["issue", "list", "--state", "open", "--limit", "30", "--json", "number,title,state,labels,updatedAt,url",
         "--label", "ops", "-R", "o/r"],
        ["issue", "create", "--title", "Backup failed", "--body", "see event 7", "--label", "bug"],
        ["issue", "comment", "16", "--body", "progress"],
        ["issue", "close", "16", "--comment", "done", "--reason", "completed"],
    ]


@pytest.mark.parametrize("argv", [["issues"], ["create", "t"], ["close", "1"], ["comment", "1", "--body", "b"],
                                  ["link-commits", "1", "--range", "HEAD~1..HEAD"]])
def test_without_gh_each_command_says_so_in_one_line(argv, tmp_path):
    r = run_cli("gh", *argv, env={"ATS_GH_BIN": str(tmp_path / "nope")})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gh CLI not found" in lines[0]
    # and with neither ATS_GH_BIN nor gh on PATH
    from ats.ops import gh as ghmod
    old = dict(os.environ)
    try:
        os.environ.pop("ATS_GH_BIN", None)
        os.environ["PATH"] = str(tmp_path)
        with pytest.raises(ghmod.GhUnavailable, match="install GitHub CLI"):
            ghmod.gh_binary()
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.parametrize("mode, text", [("offline", "cannot reach GitHub"), ("noauth", "gh auth login")])
def test_offline_or_logged_out_gh_fails_in_one_line(fake_gh, mode, text):
    env, _ = fake_gh
    r = run_cli("gh", "issues", env={**env, "FAKE_GH_MODE": mode})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and text in r.stderr


def test_link_commits_comments_the_commits_naming_the_issue(fake_gh, tmp_path):
    env, record = fake_gh
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    repo = git.Repo.init(root)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "T").set_value("user", "email", "t@example.com")
    for i, msg in enumerate(["init", "backup: dumps (#16)", "unrelated #160", "hooks for #16 part 6"]):
        (root / f"f{i}").write_text(str(i))
        repo.git.add("--", f"f{i}")
        repo.git.commit("-m", msg)
    env = {**env, "ATS_HOME": str(root)}
    r = run_cli("gh", "link-commits", "16", env=env, cwd=root)
    assert r.returncode == 0, r.stderr
    (call,) = calls(record)
    assert call[:3] == ["issue", "comment", "16"]
    body = call[call.index("--body") + 1]
    assert "backup: dumps (#16)" in body and "hooks for #16 part 6" in body and "#160" not in body
    r = run_cli("gh", "link-commits", "17", env=env, cwd=root)
    assert r.returncode == 1 and "no commits for #17" in r.stderr and len(calls(record)) == 1
