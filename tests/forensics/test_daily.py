"""`ats report daily` (issue 15): figures reconcile across days, the file lands, and the summary and a breaker
alert arrive at a real SMTP server on loopback."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import engine_db, engine_template  # noqa: F401  (fixtures)
from _loopback import smtp_server, wait_for
from ats.db.config_store import set_setting
from ats.engine.replay import run_replay
from ats.engine.runs import make_spec
from ats.forensics.daily import daily_summary, short_message, write_daily
from ats.ops import alerts

pytestmark = pytest.mark.slow


@pytest.fixture
def crash_week(engine_db):
    spec = make_spec("replay", strategies=["btc_trend", "mean_reversion", "mean_reversion_short", "momentum", "range_fade",
                                                 "trend_breakdown", "volatility_breakout"], symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], timeframe="1h",
                     start="2021-05-12", end="2021-05-26")
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        from ats.engine.runs import resolve
        spec = resolve(c, spec)
    summary = run_replay(spec, url=engine_db)
    return engine_db, spec.run_id


def test_days_add_up_to_the_week_and_trades_match_the_audit_trail(crash_week):
    url, run_id = crash_week
    with psycopg.connect(url, row_factory=dict_row) as c:
        days = [daily_summary(c, date(2021, 5, 13) + timedelta(days=i)) for i in range(10)]
        assert {d["run_id"] for d in days} == {run_id}
        week = c.execute(
            """SELECT (SELECT equity_usd::float8 FROM portfolio_hourly_snapshots WHERE run_id=%(r)s AND ts <= '2021-05-23'
                        ORDER BY ts DESC LIMIT 1)
                    - (SELECT equity_usd::float8 FROM portfolio_hourly_snapshots WHERE run_id=%(r)s AND ts <= '2021-05-13'
                        ORDER BY ts DESC LIMIT 1) AS pnl""", {"r": run_id}).fetchone()["pnl"]
        assert sum(d["pnl_usd"] for d in days) == pytest.approx(week, abs=0.01 * len(days))
        for a, b in zip(days, days[1:]):
            assert a["equity_end_usd"] == b["equity_start_usd"]
        crash = days[6]  # 2021-05-19
        n = c.execute("SELECT count(*) AS n FROM positions WHERE run_id=%s AND status='closed' AND closed_at >= "
                      "'2021-05-19' AND closed_at < '2021-05-20'", (run_id,)).fetchone()["n"]
        assert crash["trades"]["count"] == n
        assert sum(crash["breaker_trips"].values()) > 0  # the crash trips breakers
        title, body = short_message(crash)
        assert "2021-05-19" in title and f"{crash['pnl_usd']:+,.2f} USD" in body


def test_target_allocation_drift_is_flagged(crash_week):
    url, _ = crash_week
    with psycopg.connect(url, row_factory=dict_row) as c:
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        set_setting(c, "portfolio.target_allocations", {"BTCUSDT": 50.0}, effective_from=epoch)
        set_setting(c, "portfolio.drift_tolerance_pct", 5.0, effective_from=epoch)
        c.commit()
        d = daily_summary(c, date(2021, 5, 20))
    btc = [x for x in d["allocation_drift"] if x["symbol"] == "BTCUSDT"][0]
    assert btc["target_pct"] == 50.0 and btc["flagged"] == (abs(btc["actual_pct"] - 50.0) > 5.0)


def test_daily_summary_and_a_breaker_alert_arrive_by_email(crash_week, tmp_path, monkeypatch):
    with smtp_server() as (port, got):
        url, _ = crash_week
        monkeypatch.setenv("ATS_HOME", str(tmp_path))
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
        with psycopg.connect(url, row_factory=dict_row) as c:
            set_setting(c, "alerts.urls", [f"mailto://127.0.0.1:{port}?to=t@example.com&from=ats@example.com"
                                           "&mode=insecure"])
            set_setting(c, "alerts.include_replays", True)
            c.commit()
            md, js, doc = write_daily(c, date(2021, 5, 19))
            assert md.parent == tmp_path / "reports" / "daily" and md.exists() and js.exists()
            text = md.read_text()
            assert f"Trades closed ({doc['trades']['count']})" in text and "Appendix" in text
            alerts.send_summary(c, account="default", title=short_message(doc)[0], body=short_message(doc)[1])
            r = alerts.dispatch(c)
            assert any(m["cause"].startswith("breaker_tripped:") for m in r.messages)
        texts = [e.content.decode() for e in wait_for(got, 1 + len(r.messages))]
        assert any("daily 2021-05-19" in m for m in texts)
        assert any("breaker" in m and "TRIPPED" in m for m in texts)
