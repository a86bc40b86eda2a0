"""The consensus gate in the entry path (issue 15), in short real replays against scripted OpenAI-compatible
endpoints on 127.0.0.1: unanimous ENTER enters (with the averaged params on the order), a split blocks as gate
'consensus', a timeout counts as HOLD, `--consensus replay` decides from the recorded votes without a model call,
and the default (off) skips the gate and says so."""

from __future__ import annotations

import json

import pytest

from _loopback import chat_endpoints
from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from ats.db import config_store as cs
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.risk.settings import EPOCH

ENTER = json.dumps({"vote": "ENTER", "params": {"tp_pct": 4.0}, "reason": "ok"})
ENTER6 = json.dumps({"vote": "ENTER", "params": {"tp_pct": 6.0}, "reason": "ok"})
HOLD = json.dumps({"vote": "HOLD", "reason": "no"})


@pytest.fixture
def endpoints():
    with chat_endpoints() as make:
        yield make


def _configure(url, eps, timeout_s=5.0):
    with connect(url) as c:
        cs.set_setting(c, "consensus.models", [e.conf(f"m{i}") for i, e in enumerate(eps)], effective_from=EPOCH)
        cs.set_setting(c, "consensus.strategies", ["mean_reversion"], effective_from=EPOCH)
        cs.set_setting(c, "consensus.timeout_s", timeout_s, effective_from=EPOCH)
        c.commit()


def _run(url, mode, tag):
    spec = make_spec("replay", strategies=["mean_reversion"], symbols=["ETHUSDT"], timeframe="1h",
                     start="2021-03-01", end="2021-04-15", tag=tag)
    rid = run_replay(spec, url=url, consensus=mode)["run_id"]
    with connect(url) as c:
        sig = c.execute("""SELECT s.ts, s.status, s.context, b.gate, b.reason FROM signals s
                             LEFT JOIN blocked_signals b USING (signal_id)
                            WHERE s.run_id=%s AND s.intent IN ('open','add') ORDER BY s.ts""", (rid,)).fetchall()
        orders = c.execute("SELECT context FROM order_executions WHERE run_id=%s AND intent <> 'close'",
                           (rid,)).fetchall()
        votes = c.execute("SELECT * FROM consensus_votes WHERE run_id=%s ORDER BY vote_id", (rid,)).fetchall()
    return sig, orders, votes


def test_off_by_default_skips_the_gate_and_says_so(engine_db, endpoints):
    e = endpoints(HOLD)
    _configure(engine_db, [e])
    sig, orders, votes = _run(engine_db, "off", "c-off")
    assert e.calls == 0 and votes == [] and sum(s["status"] == "accepted" for s in sig) == 3
    assert {s["context"]["consensus"]["summary"] for s in sig if "consensus" in s["context"]} == \
        {"consensus: off (--consensus off)"}


def test_unanimous_enters_then_replay_reuses_the_recorded_votes(engine_db, endpoints):
    eps = [endpoints(ENTER), endpoints(ENTER6), endpoints(ENTER)]
    _configure(engine_db, eps)
    sig, orders, votes = _run(engine_db, "live", "c-unanimous")
    accepted = [s for s in sig if s["status"] == "accepted"]
    assert len(accepted) == 3 and len(orders) == 3
    voted = [s for s in accepted if "consensus" in s["context"]]
    assert len(voted) == 3 and all(s["context"]["consensus"]["summary"].startswith("consensus ENTER: 3/3")
                                   for s in voted)
    assert len(votes) == 9 and {v["vote"] for v in votes} == {"ENTER"} and all(v["decided"] == "enter" for v in votes)
    # the agreeing votes' tp_pct, averaged (4 + 6 + 4) / 3, is the order's take profit
    assert all(abs(o["context"]["params"]["tp_pct"] - 14.0 / 3) < 1e-9 for o in orders)
    calls = sum(e.calls for e in eps)
    sig2, orders2, votes2 = _run(engine_db, "replay", "c-replayed")
    assert sum(e.calls for e in eps) == calls and votes2 == []  # no model called, nothing re-recorded
    assert [(s["ts"], s["status"]) for s in sig2] == [(s["ts"], s["status"]) for s in sig]


def test_a_split_blocks_and_a_timeout_counts_as_hold(engine_db, endpoints):
    _configure(engine_db, [endpoints(ENTER), endpoints(HOLD), endpoints(HOLD)])
    sig, orders, votes = _run(engine_db, "live", "c-split")
    blocked = [s for s in sig if s["gate"] == "consensus"]
    # nothing enters; without the first entries, a later signal that was an add (cooldown) is an open to vote on too
    assert len(blocked) >= 3 and orders == [] and not any(s["status"] == "accepted" for s in sig)
    assert all(s["reason"] == "consensus HOLD: 1/3 ENTER (need 2)" for s in blocked)
    assert {v["decided"] for v in votes} == {"hold"}
    slow = endpoints(ENTER, delay=2.0)
    _configure(engine_db, [endpoints(ENTER), slow, endpoints(HOLD)], timeout_s=0.3)
    sig, orders, votes = _run(engine_db, "live", "c-timeout")
    blocked = [s for s in sig if s["gate"] == "consensus"]
    assert len(blocked) >= 3 and orders == []
    assert all("1 failed as HOLD" in s["reason"] for s in blocked)
    timed_out = [v for v in votes if v["error"]]
    assert len(timed_out) == len(blocked) and all(v["error"] == "timeout" and v["vote"] == "HOLD" for v in timed_out)
    assert all(v["latency_ms"] < 1500 for v in timed_out)  # bounded by consensus.timeout_s, not the slow reply
