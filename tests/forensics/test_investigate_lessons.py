"""`/investigate` shows the lessons consulted before each entry (ids + scores) and the lesson blocks (issue 15),
in the markdown report and its JSON twin, after a real replay with a prevention rule."""

from __future__ import annotations

import json

from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.forensics.investigate import write_investigation
from ats.knowledge.lessons import LessonDraft, add_lesson


def test_report_lists_consulted_lessons_and_lesson_blocks(engine_db, tmp_path):
    with connect(engine_db) as c:
        ll = add_lesson(c, LessonDraft(title="no mean_reversion in ETHUSDT", trigger="losses", root_cause="knives",
                                       fix_applied="paused", prevention="block", tags=["symbol:ETHUSDT"],
                                       rule="block entries in ETHUSDT for strategy mean_reversion"))["ll"]
        c.commit()
    spec = make_spec("replay", strategies=["mean_reversion"], symbols=["ETHUSDT"], timeframe="1h",
                     start="2021-03-01", end="2021-04-15")
    rid = run_replay(spec, url=engine_db)["run_id"]
    with connect(engine_db) as c:
        out = write_investigation(c, "ETHUSDT", out_dir=tmp_path, run_id=rid, name="eth")
    md = (tmp_path / "eth.md").read_text()
    twin = json.loads((tmp_path / "eth.json").read_text())["lessons_consulted"]
    assert "## Lessons consulted before each entry" in md and f"lesson:{ll}" in md
    assert f"{ll} (" in md and "LL-001 (" in md  # ids with their scores
    assert twin["without_lessons"] == 0 and twin["entries"]
    assert all({x["ll"] for x in e["lessons"]} >= {ll} for e in twin["entries"])
    assert twin["by_lesson"][ll] == len(twin["entries"]) and twin["by_lesson"]["LL-002"] == len(twin["entries"])
    assert len(twin["blocks"]) >= 3 and {b["gate"] for b in twin["blocks"]} == {f"lesson:{ll}"}
    assert out["md_path"].endswith("eth.md")
