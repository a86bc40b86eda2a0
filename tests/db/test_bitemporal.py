"""Point-in-time means "as known then" too (issue 11, item 4): a back-dated change does not rewrite the past."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db import config_store as cs

pytestmark = pytest.mark.dblayer

T = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc)  # noqa: E731


def _now(c):
    return c.execute("SELECT clock_timestamp() AS t").fetchone()["t"]


def test_back_dated_changes_are_visible_as_of_but_not_as_known_before_they_were_recorded(fresh_db_url):
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        cs.set_setting(c, "risk.max_open_positions", 8, effective_from=T("2021-01-01"))
        cs.upsert_strategy(c, "momentum", params={"tp_pct": 4.0}, effective_from=T("2021-01-01"), buy_enabled=True)
        c.commit()
        r1 = _now(c)
        time.sleep(0.01)
        # recorded later, valid from the past: the kind of edit that would rewrite what a health check believes
        cs.set_setting(c, "risk.max_open_positions", 2, effective_from=T("2021-02-01"))
        cs.upsert_strategy(c, "momentum", params={"tp_pct": 9.0}, effective_from=T("2021-02-01"))
        c.commit()
        trade = T("2021-03-01")
        assert cs.setting_as_of(c, "risk.max_open_positions", trade) == 2
        assert cs.setting_as_of(c, "risk.max_open_positions", trade, as_known_at=r1) == 8
        assert cs.strategy_as_of(c, "momentum", trade)["params"]["tp_pct"] == 9.0
        assert cs.strategy_as_of(c, "momentum", trade, as_known_at=r1)["params"]["tp_pct"] == 4.0
        # before anything was recorded nothing was known
        assert cs.setting_as_of(c, "risk.max_open_positions", trade, default="?",
                                as_known_at=r1 - timedelta(days=3650)) == "?"
        # as_known_at alone: the value in force at that moment as known then
        assert cs.setting_as_of(c, "risk.max_open_positions", as_known_at=r1) == 8


def test_known_at_for_replays_and_live():
    started = T("2026-11-30 10:00")
    assert cs.known_at_for(started, T("2021-05-19 12:00")) == started          # a replay of the past
    assert cs.known_at_for(started, T("2026-11-30 11:00")) == T("2026-11-30 11:00")  # live, on the venue clock
