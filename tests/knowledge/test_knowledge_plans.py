"""`ats plan save "title" --from FILE` never overwrites; `ats plan list`."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ats.errors import AtsError, UsageError
from ats.knowledge.plans import list_plans, save_plan, slugify

from conftest import run_cli


def test_save_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    src = tmp_path / "plan.md"
    src.write_text("# Fix the P&L double-count\n\nUse snapshots only.\n")
    when = datetime(2026, 5, 20, 9, 7, tzinfo=timezone.utc)
    a = save_plan("Fix the P&L double-count!", src, now=when)
    b = save_plan("Fix the P&L double-count!", src, now=when)
    c = save_plan("Fix the P&L double-count!", src, now=when)
    assert a["name"] == "2026-05-20_0907_fix-the-p-l-double-count.md"
    assert b["name"] == "2026-05-20_0907_fix-the-p-l-double-count-2.md"
    assert c["name"] == "2026-05-20_0907_fix-the-p-l-double-count-3.md"
    for r in (a, b, c):
        assert (tmp_path / "plans" / r["name"]).read_text() == src.read_text()  # verbatim
    rows = list_plans()
    assert [r["name"] for r in rows][:1] == [c["name"]] and rows[0]["title"] == "Fix the P&L double-count"
    assert slugify("  Ünïcode / plan: v2 ") == "unicode-plan-v2" and slugify("!!!") == "plan"
    with pytest.raises(UsageError):
        save_plan(" ", src)
    empty = tmp_path / "empty.md"
    empty.write_text("\n")
    with pytest.raises(UsageError):
        save_plan("x", empty)
    with pytest.raises(AtsError):
        save_plan("x", tmp_path / "missing.md")


def test_cli_plan_save_and_list(tmp_path):
    src = tmp_path / "p.md"
    src.write_text("# Add the velocity breaker\n")
    env = {"ATS_HOME": str(tmp_path)}
    r1 = run_cli("plan", "save", "Add velocity breaker", "--from", str(src), env=env)
    r2 = run_cli("plan", "save", "Add velocity breaker", "--from", str(src), env=env)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    p1, p2 = r1.stdout.strip(), r2.stdout.strip()
    assert p1 != p2 and p1.endswith("_add-velocity-breaker.md")
    r = run_cli("plan", "list", env=env)
    assert r.returncode == 0 and r.stdout.count("Add the velocity breaker") == 2
    r = run_cli("plan", "save", "x", "--from", str(tmp_path / "nope.md"), env=env)
    assert r.returncode == 1 and "cannot read plan file" in r.stderr
