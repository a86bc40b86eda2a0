"""Lessons learned LL-NNN (issue 15): storage, corrections, mirror, rules, retrieval."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.errors import UsageError
from ats.knowledge.lessons import (LessonBook, LessonDraft, TradeContext, add_lesson, draft_from_file, get_lesson,
                                   list_lessons, mirror, parse_rule)

LL221 = """---
title: Sequential iron-condor fill left a naked short put overnight
date: 2026-03-02
impact_usd: -1840.5
tags: [strategy:iron_condor, order_type:mleg, venue:alpaca, options]
links: {incident_report: reports/investigations/2026-03-02_SPY.md}
rule: require order_class = mleg for strategies with more than one leg
---
## Trigger
The four legs of an iron condor were sent as four simple orders; the call spread filled, the put spread did not.

## Root cause
Legs were submitted sequentially instead of as one multi-leg order.

## Fix applied
Iron condors go out as ONE OrderClass.MLEG order with four OptionLegRequests.

## Prevention
A pre-trade check refuses a multi-leg structure whose order is not MLEG.
"""


@pytest.fixture
def db(fresh_db_url):
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    yield c
    c.close()


def _crash_lesson(**kw):
    return LessonDraft(title="Momentum longs bought the 2021-05-19 crash", trigger="momentum entries during the cascade",
                       root_cause="velocity alone let entries through between trips", fix_applied="regime gate",
                       prevention="no momentum longs in a strong bear", tags=["strategy:momentum", "symbol:BTCUSDT"],
                       rule="block entries in BTCUSDT for strategy momentum during strong_bear", **kw)


def test_add_from_file_correct_list_show_and_mirror(db, tmp_path):
    f = tmp_path / "ll.md"
    f.write_text(LL221)
    a = add_lesson(db, draft_from_file(f))
    b = add_lesson(db, _crash_lesson(impact_usd=Decimal("-296.47")))
    # LL-001 and LL-002 are seeded by migration 0140; numbers continue from the sequence
    assert (a["ll"], b["ll"]) == ("LL-003", "LL-004") and a["impact_usd"] == Decimal("-1840.5")
    fix = draft_from_file(f)
    fix.ll_number, fix.title = 3, "Sequential iron-condor legs left a naked short put"
    c = add_lesson(db, fix)
    assert (c["ll"], c["version"]) == ("LL-003", 2)
    db.commit()
    assert [r["ll"] for r in list_lessons(db)] == ["LL-001", "LL-002", "LL-003", "LL-004"]
    assert [r["ll"] for r in list_lessons(db, tag="order_type:mleg")] == ["LL-001", "LL-003"]
    shown = get_lesson(db, "LL-3")
    assert shown["title"].startswith("Sequential iron-condor legs") and [h["version"] for h in shown["history"]] == [1, 2]
    # numbers are never reused, even after a failed insert
    with pytest.raises(UsageError, match="LL-009 does not exist"):
        add_lesson(db, _crash_lesson(ll_number=9))
    db.rollback()
    assert add_lesson(db, _crash_lesson())["ll"] == "LL-005"
    db.commit()
    written = mirror(db, tmp_path / "kb")
    assert sorted(p.name for p in written) == [f"LL-00{i}.md" for i in range(1, 6)]
    text = (tmp_path / "kb" / "lessons" / "LL-003.md").read_text()
    assert "version: 2" in text and "## Root cause" in text and "require order_class = mleg" in text
    assert mirror(db, tmp_path / "kb") == []  # idempotent
    # the table stays append-only
    with pytest.raises(psycopg.Error):
        db.execute("UPDATE lessons SET title='x' WHERE ll_number=3")
    db.rollback()


def test_bad_lessons_are_refused_by_name(db, tmp_path):
    f = tmp_path / "bad.md"
    f.write_text("---\ntitle: t\n---\n## Trigger\nx\n")
    with pytest.raises(UsageError, match="bad.md: missing root_cause"):
        draft_from_file(f)
    f.write_text("---\ntitle: [unclosed\n---\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        draft_from_file(f)
    for rule, msg in (("block entries", "needs at least one"), ("block entries during moon", "unknown regime"),
                      ("never lose money", "is not understood")):
        with pytest.raises(UsageError, match=msg):
            parse_rule(rule)


def test_rules_block_exactly_what_they_name():
    r = parse_rule("block entries in BTCUSDT for strategy momentum during strong_bear")
    hit = TradeContext("momentum", "BTCUSDT", "long", regime="strong_bear")
    assert r.violated_by(hit)
    assert r.violated_by(TradeContext("momentum", "ETHUSDT", "long", regime="strong_bear")) is None
    assert r.violated_by(TradeContext("momentum", "BTCUSDT", "long", regime="bear")) is None
    assert r.violated_by(TradeContext("mean_reversion", "BTCUSDT", "long", regime="strong_bear")) is None
    m = parse_rule("require order_class = mleg for strategies with more than one leg")
    assert m.violated_by(TradeContext("iron_condor", "SPY", "short", legs=4, order_class="simple"))
    assert m.violated_by(TradeContext("iron_condor", "SPY", "short", legs=4, order_class="mleg")) is None
    assert m.violated_by(TradeContext("momentum", "SPY", "long")) is None


def test_book_retrieves_the_relevant_lesson_and_reports_the_block(db, tmp_path):
    f = tmp_path / "ll.md"
    f.write_text(LL221)
    add_lesson(db, draft_from_file(f))
    add_lesson(db, _crash_lesson())
    db.commit()
    book = LessonBook.load(db, k=2)
    condor = book.consult(TradeContext("iron_condor", "SPY", "short", order_class="simple", legs=4, venue="alpaca"))
    # the seeded LL-001 and the added LL-003 are both the iron-condor lesson; the first rule in LL order blocks
    assert {x[0] for x in condor.retrieved} == {"LL-001", "LL-003"} and condor.blocked_by == "LL-001"
    crash = book.consult(TradeContext("momentum", "BTCUSDT", "long", regime="strong_bear"))
    assert crash.retrieved[0][0] == "LL-004" and crash.blocked_by == "LL-004"
    assert crash.audit()["lesson_block"]["ll"] == "LL-004"
    calm = book.consult(TradeContext("momentum", "BTCUSDT", "long", regime="bull"))
    assert calm.blocked_by is None and calm.retrieved and "lesson_block" not in calm.audit()
    assert book.consult(TradeContext("momentum", "BTCUSDT", "long", regime="bull")) is calm  # cached
    assert LessonBook([]).consult(TradeContext("x", "Y", "long")).retrieved == ()
