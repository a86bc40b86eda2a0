"""Accounts (issue 13): creation in one transaction, profiles, funding, and row-level-security isolation."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.accounts.scope import readonly_role, scoped_url
from ats.accounts.store import AccountSpec, create_account, fund_account, read_universe, show_account
from ats.db.config_store import setting_as_of
from ats.db.connection import with_user
from ats.errors import UsageError
from conftest import run_cli

pytestmark = pytest.mark.dblayer


def _create(url, acct, broker="paper", profile="conservative", universe=None, cash="1000000"):
    with psycopg.connect(url, row_factory=dict_row) as c:
        doc = create_account(c, AccountSpec(acct, broker, Decimal(cash), profile, universe))
        c.commit()
    return doc


def _run(conn, run_id, acct):
    conn.execute("INSERT INTO engine_runs (run_id, account_id, mode) VALUES (%s, %s, 'replay')", (run_id, acct))


def test_create_copies_configuration_applies_profile_and_records_event(fresh_db_url):
    doc = _create(fresh_db_url, "aggr-1", profile="aggressive", universe=("BTCUSDT", "ETHUSDT"))
    assert doc["profile"] == "aggressive" and doc["trading_state"] == "ACTIVE" and doc["equity_usd"] is None
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        n_default = c.execute("SELECT count(*) AS n FROM strategy_configurations WHERE account_id='default'").fetchone()["n"]
        n_new = c.execute("SELECT count(*) AS n FROM strategy_configurations WHERE account_id='aggr-1'").fetchone()["n"]
        assert n_new == n_default > 0
        sizes = {r["params"]["trade_amount_usd"] for r in c.execute(
            "SELECT params FROM strategy_configurations WHERE account_id='aggr-1'")}
        assert sizes == {250000.0}  # 25 % of the 1,000,000 USD starting cash (aggressive)
        v = c.execute("SELECT value FROM system_settings WHERE account_id='aggr-1' AND key='breaker.daily_drawdown_pct'"
                      ).fetchone()["value"]
        assert float(v) == 100.0  # aggressive paper: drawdown halt off
        # ... and in force for replays of the past, not only from the moment the account was created
        past = datetime(2021, 5, 19, tzinfo=timezone.utc)
        assert float(setting_as_of(c, "breaker.daily_drawdown_pct", past, account_id="aggr-1")) == 100.0
        assert float(setting_as_of(c, "risk.kelly_multiplier", past, account_id="aggr-1")) == 1.0
        uni = c.execute("SELECT value FROM system_settings WHERE account_id='aggr-1' AND key='watchlist'").fetchone()
        assert uni["value"] == ["BTCUSDT", "ETHUSDT"]
        ev = c.execute("SELECT payload FROM system_events WHERE account_id='aggr-1' AND event_type='account_created'"
                       ).fetchone()
        assert ev["payload"]["profile"] == "aggressive"
        roles = {r["role_name"] for r in c.execute("SELECT role_name FROM account_roles WHERE account_id='aggr-1'")}
        assert roles == {"ats_acct_aggr_1", "ats_ro_aggr_1"}
    with pytest.raises(UsageError, match="exists already"):
        _create(fresh_db_url, "aggr-1")


def test_venue_account_keeps_the_drawdown_halt(fresh_db_url):
    _create(fresh_db_url, "live-eq", broker="alpaca", profile="aggressive", cash="25000")
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        v = c.execute("SELECT value FROM system_settings WHERE account_id='live-eq' AND key='breaker.daily_drawdown_pct'"
                      ).fetchone()["value"]
    assert float(v) == 3.0


def test_bad_input_is_refused_by_name_and_writes_nothing(fresh_db_url, tmp_path):
    for bad, msg in ((AccountSpec("Bad Id", "paper", Decimal(1)), "invalid account id"),
                     (AccountSpec("ok", "kraken", Decimal(1)), "--broker"),
                     (AccountSpec("ok", "paper", Decimal(1), "yolo"), "--profile")):
        with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
            with pytest.raises(UsageError, match=msg):
                create_account(c, bad)
    f = tmp_path / "u.txt"
    f.write_text("BTCUSDT\n# comment\nETH USDT,SOLUSDT\nbtc$usdt\n")
    with pytest.raises(UsageError, match=r"u.txt line 4: 'btc\$usdt'"):
        read_universe(f)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        assert c.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] == 1


def test_fund_paper_only(fresh_db_url):
    _create(fresh_db_url, "p1")
    _create(fresh_db_url, "v1", broker="bybit", cash="500")
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        fund_account(c, "p1", Decimal("250000"))
        with pytest.raises(UsageError, match="fund it at the venue"):
            fund_account(c, "v1", Decimal("1"))
        c.commit()
        assert show_account(c, "p1")["funded_usd"] == "250000.00000000"


def test_row_level_security_isolates_accounts(fresh_db_url):
    _create(fresh_db_url, "a1")
    _create(fresh_db_url, "b1")
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as owner:
        _run(owner, "run-b", "b1")
        owner.execute("INSERT INTO system_events (account_id, component, event_type) VALUES (NULL, 'market_data', 'x')")
        owner.commit()
    with psycopg.connect(scoped_url(fresh_db_url, "a1"), row_factory=dict_row) as a:
        assert a.execute("SELECT current_user AS u").fetchone()["u"] == "ats_acct_a1"
        _run(a, "run-a", "a1")
        a.commit()
        runs = [r["run_id"] for r in a.execute("SELECT run_id FROM engine_runs ORDER BY run_id")]
        assert runs == ["run-a"]  # b1's run is invisible; so is default's config
        assert a.execute("SELECT count(*) AS n FROM system_settings WHERE account_id <> 'a1'").fetchone()["n"] == 0
        assert a.execute("SELECT count(*) AS n FROM system_events WHERE account_id IS NULL").fetchone()["n"] >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            _run(a, "run-x", "b1")
        a.rollback()
        # an UPDATE/DELETE aimed at another account touches nothing
        assert a.execute("UPDATE engine_runs SET status='failed' WHERE run_id='run-b'").rowcount == 0
        assert a.execute("DELETE FROM system_settings WHERE account_id='b1'").rowcount == 0
        a.commit()
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as owner:
        assert owner.execute("SELECT status FROM engine_runs WHERE run_id='run-b'").fetchone()["status"] == "running"
        assert owner.execute("SELECT count(*) AS n FROM system_settings WHERE account_id='b1'").fetchone()["n"] > 0


def test_readonly_role_of_an_account_sees_only_it_and_cannot_escape(fresh_db_url):
    _create(fresh_db_url, "a2")
    _create(fresh_db_url, "b2")
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as owner:
        _run(owner, "r-a2", "a2")
        _run(owner, "r-b2", "b2")
        owner.commit()
    ro = with_user(fresh_db_url, readonly_role("a2"))
    with psycopg.connect(ro, row_factory=dict_row, autocommit=True) as c:
        assert [r["run_id"] for r in c.execute("SELECT run_id FROM engine_runs")] == ["r-a2"]
        for escape in ("SET ROLE postgres", "SET ROLE ats_acct_b2", "SELECT set_config('role', 'ats_acct_b2', false)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(escape)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("INSERT INTO engine_runs (run_id, account_id, mode) VALUES ('z', 'a2', 'replay')")


def test_every_account_scoped_table_has_the_policy(fresh_db_url):
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        rows = c.execute("""
            SELECT c.relname, c.relrowsecurity,
                   EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'account_scope') AS pol
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'account_roles'""").fetchall()
    assert rows, "no account-scoped tables found"
    missing = [r["relname"] for r in rows if not (r["relrowsecurity"] and r["pol"])]
    assert not missing, f"tables with account_id but no account_scope policy (call ats_scope_table): {missing}"


def test_account_cli_end_to_end(fresh_db_url, tmp_path):
    uni = tmp_path / "universe.txt"
    uni.write_text("SOLUSDT, AVAXUSDT\n")
    r = run_cli("account", "create", "paper-2", "--broker", "paper", "--starting-cash", "1,000,000",
                "--universe", str(uni), "--profile", "aggressive")
    assert r.returncode == 0, r.stderr
    assert "account paper-2 created" in r.stdout and "SOLUSDT, AVAXUSDT" in r.stdout
    r = run_cli("account", "fund", "paper-2", "--usd", "500000")
    assert r.returncode == 0, r.stderr
    r = run_cli("account", "list")
    assert r.returncode == 0 and "paper-2" in r.stdout and "default" in r.stdout
    r = run_cli("account", "show", "paper-2", "--json")
    assert r.returncode == 0 and '"funded_usd": "500000.00000000"' in r.stdout
    r = run_cli("account", "create", "x", "--broker", "paper", "--starting-cash", "-5")
    assert r.returncode == 2 and "--starting-cash: must be a positive USD amount" in r.stderr
    r = run_cli("account", "show", "nope")
    assert r.returncode == 2 and "unknown account 'nope'" in r.stderr
