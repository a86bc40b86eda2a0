"""Consensus gate (issue 15) against scripted OpenAI-compatible model endpoints on loopback."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from _loopback import chat_endpoints
from ats.errors import UsageError
from ats.risk.consensus import Voter, record, recorded_decision, vote_on, voters_from_setting

CANDIDATE = {"strategy": "momentum", "symbol": "BTCUSDT", "side": "long", "price": 36512.4, "regime": "bear"}


def _voter(e, name="m") -> Voter:
    return Voter("openai", name, e.base_url)


@pytest.fixture
def endpoints():
    with chat_endpoints() as make:
        yield make


def _enter(**params):
    return json.dumps({"vote": "ENTER", "params": params, "reason": "trend intact"})


HOLD = json.dumps({"vote": "HOLD", "reason": "crash in progress"})


def test_unanimous_enter_averages_the_parameters(endpoints):
    es = [endpoints(_enter(tp_pct=4.0, sl_pct=2.0)), endpoints(_enter(tp_pct=6.0)), endpoints(_enter(tp_pct=5.0))]
    d = vote_on(CANDIDATE, [_voter(e, f"m{i}") for i, e in enumerate(es)], lessons=[{"ll": "LL-002", "title": "crash"}])
    assert d.enter and [v.vote for v in d.votes] == ["ENTER"] * 3
    assert d.params == {"tp_pct": 5.0, "sl_pct": 2.0}
    assert d.votes[0].cost_usd == 0.0012 and all(v.latency_ms > 0 for v in d.votes)
    assert "LL-002" in es[0].prompts[0] and es[0].prompts[0] == es[1].prompts[0]  # same prompt for every voter


def test_split_vote_below_the_supermajority_holds(endpoints):
    es = [endpoints(_enter()), endpoints(HOLD), endpoints(HOLD)]
    d = vote_on(CANDIDATE, [_voter(e) for e in es])
    assert not d.enter and d.summary.startswith("consensus HOLD: 1/3 ENTER")
    es2 = [endpoints(_enter()), endpoints(_enter()), endpoints(HOLD)]
    assert vote_on(CANDIDATE, [_voter(e) for e in es2]).enter  # 2/3 meets the default supermajority


def test_timeouts_and_malformed_replies_count_as_hold(endpoints):
    es = [endpoints(_enter()), endpoints(_enter(), delay=3.0), endpoints("I think you should buy!"),
          endpoints(json.dumps({"vote": "MAYBE"})), endpoints(_enter(), status=500)]
    t0 = time.perf_counter()
    d = vote_on(CANDIDATE, [_voter(e, str(i)) for i, e in enumerate(es)], timeout_s=1.0)
    assert time.perf_counter() - t0 < 2.9  # voters are asked in parallel, each bounded by the timeout
    errors = [v.error for v in d.votes]
    assert errors[0] is None and errors[1] == "timeout" and errors[2] == "malformed reply: no JSON object"
    assert errors[3] == "malformed reply: vote 'MAYBE'" and errors[4] == "http 500"
    assert [v.vote for v in d.votes] == ["ENTER", "HOLD", "HOLD", "HOLD", "HOLD"]
    assert not d.enter and "4 failed as HOLD" in d.summary


def test_no_model_configured_means_off_and_says_so():
    d = vote_on(CANDIDATE, [])
    assert d.off and d.enter and d.summary == "consensus: off (no model configured)"
    with pytest.raises(UsageError, match="entry 1: an openai voter needs base_url"):
        voters_from_setting([{"kind": "openai", "model": "x"}])


def test_votes_are_recorded_and_replays_reuse_them(endpoints, fresh_db_url):
    es = [endpoints(_enter(tp_pct=3.0)), endpoints(_enter(tp_pct=5.0)), endpoints(HOLD)]
    d = vote_on(CANDIDATE, [_voter(e, str(i)) for i, e in enumerate(es)])
    ts = datetime(2021, 5, 19, 12, tzinfo=timezone.utc)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        record(c, d, run_id="live-x", account_id="default", ts=ts, strategy="momentum", symbol="BTCUSDT", side="long")
        c.commit()
        rows = c.execute("SELECT voter, vote, decided, cost_usd FROM consensus_votes ORDER BY vote_id").fetchall()
        assert [r["vote"] for r in rows] == ["ENTER", "ENTER", "HOLD"] and {r["decided"] for r in rows} == {"enter"}
        n_requests = sum(len(e.prompts) for e in es)
        again = recorded_decision(c, account_id="default", ts=ts, strategy="momentum", symbol="BTCUSDT", n_voters=3,
                                  supermajority=0.6667)
        assert again.enter and again.params == {"tp_pct": 4.0}
        assert sum(len(e.prompts) for e in es) == n_requests  # no model was called
        none = recorded_decision(c, account_id="default", ts=ts, strategy="momentum", symbol="ETHUSDT", n_voters=3,
                                 supermajority=0.6667)
        assert not none.enter and "no recorded votes" in none.summary
