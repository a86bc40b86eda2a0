"""`ats engine seed` for a new account and `ats engine strategies` (split from
tests/test_engine_units.py::test_risk_stop_resume_seed_and_strategies_cli)."""

from __future__ import annotations

import json

import psycopg

from ats.risk.settings import DEFAULTS
from ats.strategies import REGISTRY
from conftest import run_cli


def test_seed_and_strategies_cli(fresh_db_url):
    from ats.risk.settings import seed_settings
    from ats.strategies import seed_defaults

    env = {"ATS_DATABASE_URL": fresh_db_url}
    # seeding a bare account row (what `ats account create` does inside its transaction) seeds the 7 strategies
    with psycopg.connect(fresh_db_url) as c:
        c.execute("INSERT INTO accounts (account_id) VALUES ('acct3')")
        assert len(seed_defaults(c, account_id="acct3")) == 7 and seed_settings(c, account_id="acct3")
        assert seed_defaults(c, account_id="acct3") == []
        c.commit()
    # a process bound to an account (`--account`) needs the account's roles: create it the supported way
    out = run_cli("account", "create", "acct2", "--broker", "paper", "--starting-cash", "10000", env=env)
    assert out.returncode == 0, out.stderr
    out = run_cli("engine", "seed", "--account", "acct2", env=env)
    assert out.returncode == 0 and "seeded 0 strategy configuration(s)" in out.stdout  # create seeded them all
    st = json.loads(run_cli("risk", "settings", "--account", "acct2", "--json", env=env).stdout)
    assert st == DEFAULTS
    reg = json.loads(run_cli("engine", "strategies", "--json", env=env).stdout)
    assert set(reg) == set(REGISTRY) and all(v["rules"] and v["defaults"] for v in reg.values())
    assert [n for n, v in reg.items() if not v["seeded"]] == ["sma_cross", "iron_condor"]  # reference strategies
