"""`ats risk stop / resume / breakers`: the STOP flag as an effective-dated setting with its events (split from
tests/test_engine_units.py::test_risk_stop_resume_seed_and_strategies_cli)."""

from __future__ import annotations

import json

import psycopg
from psycopg.rows import dict_row

from conftest import run_cli


def test_risk_stop_resume(fresh_db_url):
    env = {"ATS_DATABASE_URL": fresh_db_url}
    out = run_cli("risk", "stop", "--reason", "test", env=env)
    assert out.returncode == 0
    assert "replays/backtests read the flag as of each bar" in out.stdout and "live loop re-reads it" in out.stdout
    doc = json.loads(run_cli("risk", "breakers", "--json", env=env).stdout)
    assert doc["manual_stop"] is True and doc["run_id"] is None
    assert run_cli("risk", "resume", env=env).returncode == 0
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        ev = [r["event_type"] for r in c.execute(
            "SELECT event_type FROM system_events WHERE component='risk' ORDER BY event_id").fetchall()]
        assert ev == ["manual_stop_set", "manual_stop_cleared"]
        hist = c.execute("SELECT value FROM system_settings_history WHERE key='breaker.manual_stop' "
                         "ORDER BY history_id").fetchall()
        assert [h["value"] for h in hist] == [False, True, False]  # seed, stop, resume: effective-dated history
