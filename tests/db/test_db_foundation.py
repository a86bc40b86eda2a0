"""Foundation: migrations, effective-dated configuration, the read-only role (issue 2). The CLI exit-code
contract is in tests/core/test_core_cli.py."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db import config_store as cs
from ats.db.connection import readonly_url
from ats.db.migrate import MIGRATIONS_DIR, discover, migrate, status
from ats.errors import AtsError

from conftest import run_cli

pytestmark = pytest.mark.dblayer

UTC = timezone.utc


def test_migrate_twice_is_noop(fresh_db_url):
    assert migrate(fresh_db_url) == []  # the template is already migrated
    st = status(fresh_db_url)
    assert st["pending"] == [] and st["level"] == discover()[-1].version


def test_edited_migration_is_refused_naming_file(fresh_db_url, tmp_path):
    mdir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mdir)
    first = sorted(mdir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after apply\n")
    with pytest.raises(AtsError, match=first.name):
        migrate(fresh_db_url, directory=mdir)


def test_failing_migration_rolls_back_and_names_file(fresh_db_url, tmp_path):
    mdir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mdir)
    bad = mdir / "9999_broken.sql"
    bad.write_text("CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n")
    with pytest.raises(AtsError, match="9999_broken.sql"):
        migrate(fresh_db_url, directory=mdir)
    with psycopg.connect(fresh_db_url) as c:
        assert c.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        assert c.execute("SELECT count(*) FROM schema_migrations WHERE version=9999").fetchone()[0] == 0


def test_cli_migrate_idempotent_and_status(db_url):
    r = run_cli("db", "migrate")
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout
    r = run_cli("db", "status", "--json")
    assert r.returncode == 0 and '"mode": "url"' in r.stdout and "server_version" in r.stdout


def test_three_updates_three_history_rows_and_as_of(fresh_conn):
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    cs.upsert_strategy(fresh_conn, "cfg_test_alpha", buy_enabled=True, params={"tp_pct": 5}, effective_from=t0)
    for i, day in enumerate((10, 20, 30), start=1):
        cs.upsert_strategy(fresh_conn, "cfg_test_alpha", params={"tp_pct": 5 + i},
                           effective_from=t0 + timedelta(days=day))
    fresh_conn.commit()
    hist = cs.strategy_timeline(fresh_conn, "cfg_test_alpha")
    assert [h["operation"] for h in hist] == ["INSERT", "UPDATE", "UPDATE", "UPDATE"]
    assert cs.strategy_as_of(fresh_conn, "cfg_test_alpha", t0 - timedelta(days=1)) is None
    assert cs.strategy_as_of(fresh_conn, "cfg_test_alpha", t0 + timedelta(days=5))["params"]["tp_pct"] == 5
    assert cs.strategy_as_of(fresh_conn, "cfg_test_alpha", t0 + timedelta(days=15))["params"]["tp_pct"] == 6
    assert cs.strategy_as_of(fresh_conn, "cfg_test_alpha", t0 + timedelta(days=25))["params"]["tp_pct"] == 7
    assert cs.strategy_as_of(fresh_conn, "cfg_test_alpha", t0 + timedelta(days=300))["params"]["tp_pct"] == 8


def test_update_without_effective_from_takes_effect_now(fresh_conn):
    cs.upsert_strategy(fresh_conn, "cfg_test_beta", buy_enabled=True, effective_from=datetime(2020, 1, 1, tzinfo=UTC))
    fresh_conn.commit()
    cs.upsert_strategy(fresh_conn, "cfg_test_beta", buy_enabled=False)
    fresh_conn.commit()
    assert cs.strategy_as_of(fresh_conn, "cfg_test_beta", datetime(2021, 1, 1, tzinfo=UTC))["buy_enabled"] is True
    now = fresh_conn.execute("SELECT now() + interval '1 second' AS t").fetchone()["t"]
    assert cs.strategy_as_of(fresh_conn, "cfg_test_beta", now)["buy_enabled"] is False


def test_history_is_append_only(fresh_conn):
    before = fresh_conn.execute("SELECT count(*) AS n FROM strategy_configurations_history").fetchone()["n"]
    cs.upsert_strategy(fresh_conn, "x", buy_enabled=True)
    cs.set_setting(fresh_conn, "k", 1)
    fresh_conn.commit()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        fresh_conn.execute("UPDATE strategy_configurations_history SET buy_enabled = false")
    fresh_conn.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        fresh_conn.execute("DELETE FROM system_settings_history")
    fresh_conn.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        fresh_conn.execute("TRUNCATE strategy_configurations_history")
    fresh_conn.rollback()
    assert fresh_conn.execute("SELECT count(*) AS n FROM strategy_configurations_history").fetchone()["n"] == before + 1


def test_settings_as_of(fresh_conn):
    cs.set_setting(fresh_conn, "max_open_positions", 5, effective_from=datetime(2021, 1, 1, tzinfo=UTC))
    cs.set_setting(fresh_conn, "max_open_positions", 3, effective_from=datetime(2021, 3, 1, tzinfo=UTC))
    fresh_conn.commit()
    assert cs.setting_as_of(fresh_conn, "max_open_positions", datetime(2021, 2, 1, tzinfo=UTC)) == 5
    assert cs.setting_as_of(fresh_conn, "max_open_positions", datetime(2021, 4, 1, tzinfo=UTC)) == 3
    assert cs.setting_as_of(fresh_conn, "max_open_positions") == 3
    assert cs.setting_as_of(fresh_conn, "nope", default="d") == "d"


# ---- least privilege -------------------------------------------------------------------------------------

READONLY_REFUSED = [
    ("insert", "INSERT INTO system_events (component, event_type) VALUES ('x', 'y')"),
    ("update", "UPDATE accounts SET broker = 'x'"),
    ("delete", "DELETE FROM candles"),
    ("ddl", "CREATE TABLE evil (x int)"),
    ("drop", "DROP TABLE system_events"),
    ("truncate", "TRUNCATE system_events"),
    ("read_file", "SELECT pg_read_file('/etc/passwd')"),
    ("lo_import", "SELECT lo_import('/etc/passwd')"),
    ("lo_create", "SELECT lo_create(0)"),
    ("temp_table", "CREATE TEMP TABLE t (x int)"),
]


@pytest.fixture
def ro(fresh_db_url):
    c = psycopg.connect(readonly_url(fresh_db_url), autocommit=True, row_factory=dict_row)
    yield c
    c.close()


@pytest.mark.parametrize("name,sql", READONLY_REFUSED, ids=[n for n, _ in READONLY_REFUSED])
def test_readonly_role_refuses(ro, fresh_db_url, name, sql):
    with psycopg.connect(fresh_db_url) as owner:
        before = owner.execute("SELECT (SELECT count(*) FROM system_events), (SELECT count(*) FROM accounts)").fetchone()
    with pytest.raises(psycopg.Error):
        ro.execute(sql)
    with psycopg.connect(fresh_db_url) as owner:
        after = owner.execute("SELECT (SELECT count(*) FROM system_events), (SELECT count(*) FROM accounts)").fetchone()
        assert owner.execute("SELECT to_regclass('evil')").fetchone()[0] is None
    assert before == after


def test_readonly_set_read_only_off_then_write_refused(ro, fresh_db_url):
    ro.execute("SET default_transaction_read_only = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ro.execute("INSERT INTO accounts (account_id) VALUES ('evil')")
    with psycopg.connect(fresh_db_url) as owner:
        assert owner.execute("SELECT count(*) FROM accounts WHERE account_id='evil'").fetchone()[0] == 0


def test_readonly_can_select_and_has_limits(ro):
    assert ro.execute("SELECT count(*) AS n FROM accounts").fetchone()["n"] >= 1
    assert ro.execute("SHOW default_transaction_read_only").fetchone()["default_transaction_read_only"] == "on"
    assert ro.execute("SHOW statement_timeout").fetchone()["statement_timeout"] != "0"


def test_cli_readonly_url(db_url):
    r = run_cli("db", "url", "--role", "readonly")
    assert r.returncode == 0 and "ats_readonly" in r.stdout
