"""`ats engine seed` for a new account and `ats engine strategies` (split from
tests/test_engine_units.py::test_risk_stop_resume_seed_and_strategies_cli)."""

from __future__ import annotations

import json

import psycopg

from ats.risk.settings import DEFAULTS
from ats.strategies import REGISTRY
from conftest import run_cli


def test_seed_and_strategies_cli(fresh_db_url):
    env = {"ATS_DATABASE_URL": fresh_db_url}
    with psycopg.connect(fresh_db_url) as c:
        c.execute("INSERT INTO accounts (account_id) VALUES ('acct2')")
        c.commit()
    out = run_cli("engine", "seed", "--account", "acct2", env=env)
    assert out.returncode == 0 and "seeded 7 strategy configuration(s)" in out.stdout
    assert "seeded 0 strategy" in run_cli("engine", "seed", "--account", "acct2", env=env).stdout
    st = json.loads(run_cli("risk", "settings", "--account", "acct2", "--json", env=env).stdout)
    assert st == DEFAULTS
    reg = json.loads(run_cli("engine", "strategies", "--json", env=env).stdout)
    assert set(reg) == set(REGISTRY) and all(v["rules"] and v["defaults"] for v in reg.values())
    assert [n for n, v in reg.items() if not v["seeded"]] == ["sma_cross"]
