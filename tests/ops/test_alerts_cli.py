"""`ats alerts dispatch|test|status` and `ats report daily` end to end: the real CLI, apprise, and an aiosmtpd server
on loopback."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from _loopback import free_port, smtp_server, wait_for
from conftest import run_cli


@pytest.fixture
def smtp():
    with smtp_server() as srv:
        yield srv


_wait = wait_for


def test_alerts_and_daily_summary_cli_reach_smtp(fresh_db_url, tmp_path, smtp):
    port, got = smtp
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    env = {"ATS_DATABASE_URL": fresh_db_url, "ATS_HOME": str(tmp_path), "ATS_LOG_DIR": str(tmp_path / "logs"),
           "SMTP_TO": "trader@example.com"}
    url = f"mailto://127.0.0.1:{port}?to=${{SMTP_TO}}&from=ats@example.com&mode=insecure"
    r = run_cli("config", "setting", "set", "alerts.urls", json.dumps([url]), env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("alerts", "test", env=env)
    assert r.returncode == 0 and "delivered" in r.stdout, r.stdout + r.stderr
    assert len(_wait(got, 1)) == 1 and got[0].rcpt_tos == ["trader@example.com"]
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        c.execute("INSERT INTO engine_runs (run_id, account_id, mode) VALUES ('live-1', 'default', 'live')")
        for i in range(30):
            c.execute("INSERT INTO system_events (ts, account_id, component, event_type, severity, symbol, payload) "
                      "VALUES (now(), 'default', 'risk', 'breaker_tripped', 'warning', 'BTCUSDT', %s)",
                      (Jsonb({"run_id": "live-1", "breaker": "velocity", "scope": "BTCUSDT", "cause": f"m{i}"}),))
        c.commit()
    r = run_cli("alerts", "dispatch", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 message(s) (1 delivered)" in r.stdout
    assert len(_wait(got, 2)) == 2 and "x30" in got[1].content.decode()
    r = run_cli("alerts", "dispatch", env=env)  # nothing new: nothing sent
    assert "0 event(s) read, 0 message(s)" in r.stdout and len(got) == 2
    r = run_cli("report", "daily", "--date", "2021-05-19", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "reports" / "daily" / "2021-05-19_summary.md").exists()
    assert len(_wait(got, 3)) == 3 and "daily 2021-05-19" in got[2].content.decode()
    r = run_cli("report", "daily", "--date", "2021-05-20", "--no-send", env=env)
    assert r.returncode == 0 and len(got) == 3
    # a channel that refuses: the delivery is recorded as failed and listed first by status
    port2 = free_port()
    run_cli("config", "setting", "set", "alerts.urls",
            json.dumps([f"mailto://127.0.0.1:{port2}?to=x@example.com&from=ats@example.com&mode=insecure"]), env=env)
    r = run_cli("alerts", "test", env=env)
    assert r.returncode == 1 and "NOT DELIVERED" in r.stdout
    st = run_cli("alerts", "status", env=env)
    lines = st.stdout.splitlines()
    assert st.returncode == 0 and " FAIL test" in lines[0] and all(" ok   " in ln for ln in lines[1:]), st.stdout
    assert len(lines) == 4
