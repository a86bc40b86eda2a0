"""Lessons consulted before every entry (issue 15), on real candles through the full decision path: every entry
candidate records the retrieved lessons, a lesson's prevention rule blocks exactly the entries it names
(``blocked_signals.gate = 'lesson:LL-NNN'``), the quiet-span fast path consults exactly what the step path does,
and a live run picks up a new lesson without a restart."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from ats.engine.advice import LessonSource
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.knowledge.lessons import LessonDraft, add_lesson

WINDOW = ("mean_reversion", "ETHUSDT", "2021-03-01", "2021-04-15")  # 3 accepted, 4 blocked entries (hand-checked)


def _replay(url, tag="", **kw):
    strat, sym, start, end = WINDOW
    spec = make_spec("replay", strategies=[strat], symbols=[sym], timeframe="1h", start=start, end=end, tag=tag)
    return run_replay(spec, url=url, **kw)


def _entries(url, rid):
    with connect(url) as c:
        return c.execute("""SELECT s.ts, s.intent, s.status, s.context, b.gate, b.reason FROM signals s
                              LEFT JOIN blocked_signals b USING (signal_id)
                             WHERE s.run_id=%s AND s.intent IN ('open','add') ORDER BY s.ts""", (rid,)).fetchall()


def test_every_entry_records_the_seeded_lessons_without_changing_decisions(engine_db):
    rows = _entries(engine_db, _replay(engine_db)["run_id"])
    assert len(rows) == 7 and sum(r["status"] == "accepted" for r in rows) == 3
    for r in rows:
        ids = [x["ll"] for x in r["context"]["lessons"]]
        assert set(ids) == {"LL-001", "LL-002"}, r  # the seeds of migration 0140: both retrieved, with scores
        assert all(x["score"] > 0 for x in r["context"]["lessons"]) and "lesson_block" not in r["context"]
        assert not (r["gate"] or "").startswith("lesson:")  # LL-001's MLEG rule matches no single-leg strategy


def test_a_prevention_rule_blocks_the_entries_it_names(engine_db):
    with connect(engine_db) as c:
        ll = add_lesson(c, LessonDraft(
            title="mean_reversion longs in ETHUSDT kept catching falling knives", trigger="three losing entries",
            root_cause="no trend filter", fix_applied="paused", prevention="no mean_reversion entries in ETHUSDT",
            tags=["strategy:mean_reversion", "symbol:ETHUSDT"],
            rule="block entries in ETHUSDT for strategy mean_reversion"))["ll"]
        c.commit()
    res = _replay(engine_db, tag="with-rule")
    rows = _entries(engine_db, res["run_id"])
    gates = [r["gate"] for r in rows]
    assert rows and all(r["status"] == "blocked" for r in rows)
    # the position gates (regime) still come first; every other entry is the lesson's
    assert set(gates) <= {f"lesson:{ll}", "regime"} and gates.count(f"lesson:{ll}") >= 3
    hit = next(r for r in rows if r["gate"] == f"lesson:{ll}")
    assert "block entries in ETHUSDT for strategy mean_reversion" in hit["reason"]
    assert hit["context"]["lesson_block"]["ll"] == ll and hit["context"]["lessons"][0]["ll"] == ll
    with connect(engine_db) as c:
        assert c.execute("SELECT count(*) AS n FROM order_executions WHERE run_id=%s",
                         (res["run_id"],)).fetchone()["n"] == 0


def test_fast_path_consults_exactly_what_the_step_path_does(engine_db):
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import resolve
    from ats.engine.sink import MemorySink

    out = []
    with connect(engine_db) as c:
        for fast in (True, False):
            spec = resolve(c, make_spec("replay", strategies=["mean_reversion", "momentum"],
                                        symbols=["ETHUSDT", "BTCUSDT"], timeframe="1h", start="2021-03-01",
                                        end="2021-04-15"))
            sink = MemorySink(spec.run_id, spec.account_id)
            eng = Engine(c, spec, sink=sink, feed=ReplayFeed.load(c, spec.symbols, "1h", spec.start, spec.end),
                         fast=fast)
            eng.run()
            c.rollback()
            sig = [r for r in sink.rows["signals"] if r[8] in ("open", "add")]
            out.append([(r[6], r[3], r[4], r[-1].get("lessons")) for r in sig])
            if fast:
                assert eng.bulk_steps > 0  # the fast path did skip quiet spans
    assert out[0] == out[1] and len(out[0]) > 5 and all(x[3] for x in out[0])


def test_a_live_run_reloads_the_book_when_a_lesson_is_added(fresh_db_url):
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    try:
        src = LessonSource(c, live=True)
        assert [r["ll"] for r in src.at(100).lessons] == ["LL-001", "LL-002"]
        w = psycopg.connect(fresh_db_url, row_factory=dict_row)
        add_lesson(w, LessonDraft(title="t", trigger="x", root_cause="y", fix_applied="z", prevention="p",
                                  rule="block entries during strong_bear"))
        w.commit()
        w.close()
        assert len(src.at(100).lessons) == 2  # checked at most once per decision time
        assert [r["ll"] for r in src.at(160).lessons] == ["LL-001", "LL-002", "LL-003"] and src.reloads == 1
        assert src.at(220) is src.book and src.reloads == 1  # unchanged -> no reload
        replay_src = LessonSource(c, live=False)
        assert replay_src.at(1) is replay_src.at(10 ** 9)  # a replay loads once
    finally:
        c.close()
