"""A breaker defined in this file plugs into the board and blocks entries of a real replay, with no change to
the engine; its trips and the trading-state changes land in system_events."""

from __future__ import annotations

import pytest

from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.risk import breakers as brk
from ats.strategies import SEEDED


class OddHours(brk.Breaker):
    """Test breaker: tripped account-wide during odd UTC hours (from the step inputs' decision time)."""

    name = "test_odd_hours"
    scope = "global"
    priority = 50
    settings = {"breaker.test_odd_hours_on": (True, "test only: trip during odd UTC hours")}

    def update(self, inputs: brk.StepInputs) -> None:
        if not self.setting(inputs.settings, "breaker.test_odd_hours_on"):
            return
        odd = (inputs.ts // 3600) % 2 == 1
        if odd != self.is_tripped():
            self.board.set(self.name, "*", odd, inputs.ts, "odd hour" if odd else "even hour", {"hour": inputs.ts // 3600 % 24})

    def quiet_steps(self, span: brk.SpanInputs) -> int:
        return 0  # it changes every hour: never quiet


@pytest.fixture
def odd_hours():
    brk.register(OddHours)
    try:
        yield OddHours
    finally:
        brk.unregister(OddHours.name)


def test_plugin_breaker_blocks_entries_without_touching_the_engine(engine_db, odd_hours):
    spec = make_spec("replay", strategies=list(SEEDED), symbols=["ETHUSDT", "SOLUSDT"], timeframe="1h",
                     start="2021-01-20", end="2021-02-10", tag="plugin-breaker")
    res = run_replay(spec, url=engine_db)
    rid = res["run_id"]
    with connect(engine_db) as c:
        blocked = c.execute("SELECT count(*) AS n FROM blocked_signals WHERE run_id=%s AND gate='breaker:test_odd_hours'",
                            (rid,)).fetchone()["n"]
        assert blocked > 0, (res["state"], res["blocked_by_gate"], res.get("breaker_trips"))
        # no order entered during an odd hour
        odd = c.execute("""SELECT count(*) AS n FROM order_executions WHERE run_id=%s AND intent <> 'close'
                             AND (extract(epoch FROM submitted_at)::bigint / 3600) %% 2 = 1""", (rid,)).fetchone()["n"]
        assert odd == 0
        ev = c.execute("""SELECT event_type, payload FROM system_events WHERE component='risk'
                            AND payload->>'run_id'=%s AND (payload->>'breaker'='test_odd_hours'
                                                          OR payload->>'by'='test_odd_hours') ORDER BY ts, event_id""",
                       (rid,)).fetchall()
        kinds = {e["event_type"] for e in ev}
        assert {"breaker_tripped", "breaker_reset", "trading_state"} <= kinds
        st = [e["payload"] for e in c.execute(
            """SELECT payload FROM system_events WHERE component='risk' AND event_type='trading_state'
                 AND payload->>'run_id'=%s AND payload->>'scope'='*' ORDER BY ts, event_id""", (rid,)).fetchall()]
        assert st[0]["old"] == "ACTIVE" and st[0]["new"] == "REDUCING" and st[0]["scope"] == "*" and st[0]["cause"]
        assert all(a["new"] == b["old"] and a["new"] != a["old"] for a, b in zip(st, st[1:]))  # a chain, none missed
        assert any(p["by"] == "test_odd_hours" for p in st)
    assert res["blocked_by_gate"]["breaker:test_odd_hours"] == blocked
