"""Alerts (issue 15): system_events -> apprise -> a real SMTP server and a webhook receiver on loopback."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ats.db.config_store import set_setting
from ats.errors import AtsError, UsageError
from ats.ops import alerts

from _loopback import free_port, smtp_server, wait_for, webhook_server


@pytest.fixture
def smtp():
    with smtp_server() as srv:
        yield srv


@pytest.fixture
def webhook():
    with webhook_server() as srv:
        yield srv


_wait = wait_for


@pytest.fixture
def db(fresh_db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    c.execute("INSERT INTO engine_runs (run_id, account_id, mode) VALUES ('live-1', 'default', 'live'), "
              "('replay-1', 'default', 'replay')")
    c.commit()
    yield c
    c.close()


def _trips(c, n, run_id="live-1", breaker="velocity", scope="BTCUSDT"):
    for i in range(n):
        c.execute("INSERT INTO system_events (ts, account_id, component, event_type, severity, symbol, payload) "
                  "VALUES (now(), 'default', 'risk', 'breaker_tripped', 'warning', %s, %s)",
                  (scope, Jsonb({"run_id": run_id, "breaker": breaker, "scope": scope, "cause": f"move {i}"})))
    c.commit()


def _mail(port):
    return f"mailto://127.0.0.1:{port}?to=trader@example.com&from=ats@example.com&mode=insecure"


def test_burst_of_100_trips_is_one_message_with_the_count_then_rate_limited(db, smtp):
    port, got = smtp
    set_setting(db, "alerts.urls", [_mail(port)])
    db.commit()
    _trips(db, 100)
    r = alerts.dispatch(db)
    assert [m["count"] for m in r.messages] == [100] and r.messages[0]["delivered"]
    assert len(_wait(got, 1)) == 1
    assert "x100" in got[0].content.decode() and got[0].rcpt_tos == ["trader@example.com"]
    # five more inside the window: held back, no mail
    _trips(db, 5)
    r = alerts.dispatch(db)
    assert r.messages == [] and r.held_back == {"breaker_tripped:velocity:BTCUSDT": 5}
    time.sleep(0.3)
    assert len(got) == 1
    # after the window the held-back count goes out as one message
    r = alerts.dispatch(db, now=datetime.now(timezone.utc) + timedelta(minutes=61))
    assert [m["count"] for m in r.messages] == [5]
    assert len(_wait(got, 2)) == 2 and "x5" in got[1].content.decode()
    # nothing new: nothing sent, the cursor does not move back
    r2 = alerts.dispatch(db, now=datetime.now(timezone.utc) + timedelta(minutes=200))
    assert r2.messages == [] and r2.events_seen == 0 and r2.cursor == r.cursor


def test_replay_trips_do_not_alert_but_headless_fallbacks_do(db, webhook):
    port, got = webhook
    set_setting(db, "alerts.urls", [f"json://127.0.0.1:{port}/hook"])
    db.commit()
    _trips(db, 30, run_id="replay-1")
    db.execute("INSERT INTO system_events (account_id, component, event_type, payload) VALUES ('default', 'cron', "
               "'cron_run', %s)", (Jsonb({"task": "investigate", "mode": "core", "exit_code": 1,
                                          "artifact_missing": True, "fallback_reason": "claude not logged in"}),))
    db.commit()
    r = alerts.dispatch(db)
    assert [m["cause"] for m in r.messages] == ["cron:investigate"]
    msg = _wait(got, 1)[0]
    assert "artifact missing" in msg["message"] and "claude not logged in" in msg["message"]


def test_placeholders_come_from_a_0600_env_file_and_are_never_stored(db, smtp, tmp_path):
    port, got = smtp
    set_setting(db, "alerts.urls", ["mailto://127.0.0.1:${ATS_TEST_SMTP_PORT}?to=t@example.com&from=a@example.com"
                                    "&mode=insecure"])
    db.commit()
    env = tmp_path / ".env"
    env.write_text(f"ATS_TEST_SMTP_PORT={port}\n")
    env.chmod(0o644)
    _trips(db, 1)
    with pytest.raises(AtsError, match="must be 0600"):
        alerts.dispatch(db)
    db.rollback()
    env.chmod(0o600)
    r = alerts.dispatch(db)
    assert r.messages[0]["delivered"] and len(_wait(got, 1)) == 1
    stored = db.execute("SELECT value FROM system_settings WHERE key='alerts.urls'").fetchone()["value"]
    assert str(port) not in json.dumps(stored)
    env.write_text("")
    set_setting(db, "alerts.urls", ["json://${NOT_SET_ANYWHERE_42}/x"])
    db.commit()
    with pytest.raises(UsageError, match=r"\$\{NOT_SET_ANYWHERE_42\} is not set"):
        alerts.dispatch(db)


def test_a_dead_channel_is_recorded_not_lost(db):
    set_setting(db, "alerts.urls", [_mail(free_port())])  # nothing listens there
    db.commit()
    _trips(db, 3, breaker="feed_anomaly", scope="ETHUSDT")
    r = alerts.dispatch(db)
    assert len(r.messages) == 1 and r.messages[0]["delivered"] is False
    row = db.execute("SELECT delivered, error, event_count FROM alert_deliveries").fetchone()
    assert row == {"delivered": False, "error": "apprise reported a failed delivery", "event_count": 3}
