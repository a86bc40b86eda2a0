"""`ats health-check`: the strategy-adherence audit passes on a clean run and names every broken rule."""

from __future__ import annotations

import json
from pathlib import Path

from ats.forensics.health import audit_adherence, health_check

from _reports_helpers import seed_run, ts
from conftest import run_cli


def test_clean_run_passes(fresh_conn, tmp_path, monkeypatch):
    seed_run(fresh_conn)
    res = audit_adherence(fresh_conn)
    assert res["passed"] is True, res["violations"]
    assert res["checked_positions"] == 4
    assert res["not_checked"] == {}
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    r = run_cli("health-check")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "PASS" in r.stdout
    md = next((tmp_path / "reports" / "health").glob("*_health-check.md")).read_text()
    assert "Verdict: **PASS**" in md and "## Appendix: queries" in md
    assert "daily_drawdown x1" in md  # breaker trips listed
    twin = json.loads(next((tmp_path / "reports" / "health").glob("*_health-check.json")).read_text())
    assert twin["passed"] is True and twin["health"]["breakers"]["trips"] == 2


def test_broken_rules_fail_and_are_named(fresh_conn, tmp_path, monkeypatch):
    exp = seed_run(fresh_conn, violations=True)
    eth_bad, btc_bad = exp["trades"][-2], exp["trades"][-1]
    res = health_check(fresh_conn)
    assert res["passed"] is False
    got = {(v["rule"], v["position_id"]) for v in res["audit"]["violations"]}
    assert got == {("buy_gate", eth_bad["position_id"]), ("tp_sl", eth_bad["position_id"]),
                   ("max_hold", eth_bad["position_id"]), ("cooldown", btc_bad["position_id"]),
                   ("size", btc_bad["position_id"])}
    cd = next(v for v in res["audit"]["violations"] if v["rule"] == "cooldown")
    assert cd["detail"]["gap_minutes"] == 60 and cd["detail"]["previous_exit"] == ts(19, 3).isoformat()
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    r = run_cli("health-check")
    assert r.returncode == 1, r.stderr + r.stdout
    assert "FAIL" in r.stdout and "VIOLATION buy_gate" in r.stdout and "VIOLATION cooldown" in r.stdout
    md = Path(r.stdout.strip().splitlines()[-2]).read_text()
    assert "Verdict: **FAIL**" in md
    for rule in ("buy_gate", "tp_sl", "max_hold", "cooldown", "size"):
        assert f"| {rule} | {btc_bad['position_id'] if rule in ('cooldown', 'size') else eth_bad['position_id']} |" in md
