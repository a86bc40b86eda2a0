"""Point-in-time = as known then (issue 11, item 4): a change back-dated after a run does not turn its trades into
violations; the health check lists them as retroactive findings, and `ats config ... --as-known-at R` answers what
the system believed at R."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import engine_db, engine_template  # noqa: F401  (fixtures)
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec, resolve
from ats.forensics.health import health_check
from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def short_replay(engine_db, tmp_path):
    spec = make_spec("replay", strategies=["momentum", "trend_breakdown"], symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                     timeframe="1h", start="2021-05-10", end="2021-05-24")
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        spec = resolve(c, spec)
    run_replay(spec, url=engine_db)
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        run = c.execute("SELECT * FROM engine_runs WHERE run_id=%s", (spec.run_id,)).fetchone()
        n = c.execute("SELECT strategy_name, count(*) AS n FROM positions WHERE run_id=%s GROUP BY 1 ORDER BY 2 DESC",
                      (spec.run_id,)).fetchall()
    assert n and n[0]["n"] > 0
    return engine_db, run, n[0]["strategy_name"], n[0]["n"], tmp_path


def test_back_dated_change_is_retroactive_not_a_violation(short_replay):
    url, run, strategy, trades, tmp = short_replay
    env = {"ATS_HOME": str(tmp)}
    (tmp / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    before = run_cli("health-check", "--run-id", run["run_id"], "--out-dir", str(tmp / "h0"), "--json", env=env)
    assert before.returncode == 0, before.stdout + before.stderr
    assert json.loads(before.stdout)["retroactive"] == []
    # recorded now (after the run), valid from before every trade: the buy gate "was" off
    r = run_cli("config", "strategy", "set", strategy, "--buy", "off", "--effective-from", "2021-05-01", env=env)
    assert r.returncode == 0, r.stderr
    after = run_cli("health-check", "--run-id", run["run_id"], "--out-dir", str(tmp / "h1"), env=env)
    assert after.returncode == 0, after.stdout + after.stderr  # still passes: the run knew the gate was on
    assert "health check: PASS" in after.stdout and "retroactive (not a violation) buy_gate" in after.stdout
    with psycopg.connect(url, row_factory=dict_row) as c:
        res = health_check(c, run["run_id"])
    assert res["passed"] and res["audit"]["violations"] == []
    retro = res["audit"]["retroactive"]
    assert {v["rule"] for v in retro} == {"buy_gate"} and {v["strategy_name"] for v in retro} == {strategy}
    assert len(retro) == trades
    assert all(v["changed_valid_from"].startswith("2021-05-01") for v in retro)
    assert all(v["changed_recorded_at"] > run["started_at"].isoformat() for v in retro)
    md = next((tmp / "h1").glob("*_health-check.md")).read_text()
    assert "## Retroactive findings (not violations)" in md and f"{trades} trade check(s)" in md
    # the config CLI: --as-of alone sees the back-dated edit, --as-known-at the run's start does not
    known = run["started_at"].isoformat()
    hind = run_cli("config", "strategy", "show", strategy, "--as-of", "2021-05-15", env=env)
    then = run_cli("config", "strategy", "show", strategy, "--as-of", "2021-05-15", "--as-known-at", known, env=env)
    assert json.loads(hind.stdout)["buy_enabled"] is False and json.loads(then.stdout)["buy_enabled"] is True
    lst = run_cli("config", "strategy", "list", "--as-of", "2021-05-15", "--as-known-at", known, "--json", env=env)
    assert {r["strategy_name"]: r["buy_enabled"] for r in json.loads(lst.stdout)}[strategy] is True


def test_setting_get_as_known_at(engine_db):
    r0 = run_cli("config", "setting", "set", "risk.max_open_positions", "8", "--effective-from", "2021-01-01")
    assert r0.returncode == 0, r0.stderr
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        mark = c.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    run_cli("config", "setting", "set", "risk.max_open_positions", "2", "--effective-from", "2021-02-01")
    now = run_cli("config", "setting", "get", "risk.max_open_positions", "--as-of", "2021-03-01")
    then = run_cli("config", "setting", "get", "risk.max_open_positions", "--as-of", "2021-03-01",
                   "--as-known-at", mark.isoformat())
    assert (now.stdout.strip(), then.stdout.strip()) == ("2", "8")
    bad = run_cli("config", "setting", "get", "risk.max_open_positions", "--as-known-at", "yesterday-ish")
    assert bad.returncode != 0 and "--as-known-at" in bad.stderr
