"""`ats lesson add --from | --interactive`, `list [--tag]`, `show`, `mirror` (issue 15) in subprocesses against a
fresh database; `add` mirrors to kb/lessons/; the docs index reads plain lessons only (LL rows via their mirror);
the /record-lesson command ends in `ats lesson add --from`."""

from __future__ import annotations

import json
import shutil

import psycopg
from psycopg.rows import dict_row

from ats.knowledge import docs_records
from conftest import ROOT, run_cli

DRAFT = """---
title: Momentum longs bought the 2021-05-19 crash
date: 2021-05-19
impact_usd: -296.47
tags: [strategy:momentum, symbol:BTCUSDT]
rule: block entries in BTCUSDT for strategy momentum during strong_bear
---
## Trigger
momentum entries during the cascade
## Root cause
velocity alone let entries through between trips
## Fix applied
regime gate
## Prevention
no momentum longs in a strong bear
"""


def _home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    shutil.copy(ROOT / "pyproject.toml", h / "pyproject.toml")
    return h


def test_add_list_show_mirror(fresh_db_url, tmp_path):
    h = _home(tmp_path)
    env = {"ATS_HOME": str(h)}
    f = tmp_path / "d.md"
    f.write_text(DRAFT)
    r = run_cli("lesson", "add", "--from", str(f), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LL-003 v1: Momentum longs") and "rule: block entries" in r.stdout
    assert (h / "kb" / "lessons" / "LL-003.md").is_file() and (h / "kb" / "lessons" / "LL-001.md").is_file()
    answers = "\n".join(["Iron condor legs", "legs sent one by one", "no mleg", "mleg", "check", "2026-03-02", "",
                         "order_type:mleg", "", "LL-003"]) + "\n"
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "ats.cli", "lesson", "add", "--interactive"], input=answers,
                       capture_output=True, text=True, env={**__import__("os").environ, **env}, cwd=str(ROOT))
    assert p.returncode == 0 and "LL-003 v2: Iron condor legs" in p.stdout, p.stderr
    lst = json.loads(run_cli("lesson", "list", "--json", env=env).stdout)
    assert [x["ll"] for x in lst] == ["LL-001", "LL-002", "LL-003"] and lst[-1]["version"] == 2
    tagged = run_cli("lesson", "list", "--tag", "order_type:mleg", env=env).stdout
    assert "LL-001" in tagged and "LL-003" in tagged and "LL-002" not in tagged
    show = run_cli("lesson", "show", "LL-3", env=env)
    assert "# LL-003: Iron condor legs" in show.stdout and "versions: v1" in show.stdout
    assert run_cli("lesson", "mirror", env=env).stdout.startswith("kb/lessons: 0 file(s) written")
    (h / "kb" / "lessons" / "LL-002.md").unlink()
    assert "1 file(s) written" in run_cli("lesson", "mirror", env=env).stdout
    bad = run_cli("lesson", "show", "LL-099", env=env)
    assert bad.returncode != 0 and "LL-099 does not exist" in bad.stderr
    both = run_cli("lesson", "add", env=env)
    assert both.returncode == 2 and "exactly one of --from FILE or --interactive" in both.stderr
    f.write_text(DRAFT.replace("during strong_bear", "during the_moon"))
    r = run_cli("lesson", "add", "--from", str(f), env=env)
    assert r.returncode == 2 and "unknown regime" in r.stderr


def test_docs_index_reads_plain_lessons_only(fresh_db_url):
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        docs_records.append_lesson(c, "a plain note", "body", ["pnl"])
        c.commit()
        rows = docs_records.lessons(c)
    assert [r["title"] for r in rows] == ["a plain note"]  # the seeded LL-001/LL-002 are indexed via kb/lessons


def test_record_lesson_command_drafts_then_adds_after_approval():
    text = (ROOT / ".claude" / "commands" / "record-lesson.md").read_text()
    import frontmatter

    meta = frontmatter.loads(text).metadata
    assert "Bash(ats lesson add --from reports/lessons/drafts/*)" in meta["allowed-tools"]
    assert "approve" in text and "ats lesson add --from" in text and "Write(/reports/lessons/drafts/**)" in text
