"""Security corpus for the ats-postgres `query` tool (through the SDK client, on a real database).

Each case is its own test: the statement is refused (an MCP tool error naming the server's reason) or harmless,
and the database is unchanged afterwards (row counts of every table, sequences, relations, functions,
extensions, roles, large objects, role/database settings: `_mcp_helpers.fingerprint`). The stacked
`SELECT 1; COMMIT; DROP TABLE x` is the statement that escaped the archived reference Postgres MCP server,
which relied on a READ ONLY transaction alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import readonly_url

from _mcp_helpers import call, err, fingerprint, ok
from _reports_helpers import seed_run
from conftest import clone_template, drop_database

PWNED = Path("/tmp/ats_mcp_security_pwned")

pytestmark = pytest.mark.dblayer  # role privileges differ per server: CI runs these on PostgreSQL 15 too


@pytest.fixture(scope="module")
def sec_url(pg_admin_url, template_db, db_url):
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_mcp_sec")
    with psycopg.connect(url, row_factory=dict_row) as c:
        seed_run(c)
        c.execute("CREATE TABLE x (id int PRIMARY KEY)")   # the victim of the classic stacked statement
        c.execute("INSERT INTO x VALUES (1), (2)")
        c.execute("CREATE SEQUENCE probe_seq")
        c.commit()
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def server(sec_url):
    from mcp_servers.postgres import build_server

    s = build_server(readonly_url=readonly_url(sec_url))
    yield s
    s._ats_readonly.close()


@pytest.fixture(scope="module")
def baseline(sec_url, server):
    return fingerprint(sec_url)


@pytest.fixture
def unchanged(sec_url, baseline, server):
    """Asserts after the test that the database fingerprint equals the module baseline, and that the server
    still answers (no broken connection, no leftover session state)."""
    PWNED.unlink(missing_ok=True)
    yield
    assert fingerprint(sec_url) == baseline
    assert not PWNED.exists()
    doc = ok(server, "query", {"sql": "SELECT current_user, current_setting('default_transaction_read_only'), "
                                      "current_setting('transaction_read_only')"})
    assert doc["rows"] == [["ats_readonly", "on", "on"]]


def refused(server, sql: str, *reasons: str) -> str:
    msg = err(server, "query", {"sql": sql})
    assert any(r.lower() in msg.lower() for r in reasons), msg
    return msg


# ---- stacked statements: refused by PostgreSQL when preparing (extended query protocol) ------------------
@pytest.mark.parametrize("sql", [
    "SELECT 1; COMMIT; DROP TABLE x",
    "SELECT 1; DROP TABLE x",
    "SELECT 1; DELETE FROM accounts",
    "SELECT 1;\n-- trailing comment\nUPDATE x SET id = id + 10",
    "SELECT 1; COMMIT; INSERT INTO lessons (title, body) VALUES ('x', 'y')",
    "SELECT 1 /* ; */ ; SELECT 2",
    "COMMIT; BEGIN READ WRITE; DROP TABLE x",
    "SELECT $$;$$; DROP TABLE x",
], ids=["classic_commit_drop", "drop", "delete", "comment_update", "commit_insert", "comment_semicolon",
        "commit_begin_rw", "dollar_quoted"])
def test_stacked_statements_refused(server, unchanged, sql):
    refused(server, sql, "cannot insert multiple commands into a prepared statement")


# ---- transaction control and session settings: statements with no result rows are never executed --------
NO_ROWS = [
    "COMMIT", "ROLLBACK", "BEGIN", "START TRANSACTION READ WRITE", "SET statement_timeout = 0",
    "SET default_transaction_read_only = off", "SET ROLE postgres", "RESET ALL", "RESET statement_timeout",
    "SET SESSION AUTHORIZATION postgres", "DISCARD ALL", "LISTEN ats", "PREPARE p AS DELETE FROM x",
    "CREATE TABLE y AS SELECT 1 AS a", "SELECT * INTO y FROM x", "DROP TABLE x", "TRUNCATE x", "DELETE FROM x",
    "INSERT INTO x VALUES (3)", "VACUUM x", "CREATE EXTENSION dblink", "GRANT ALL ON x TO ats_readonly",
    "ALTER ROLE ats_readonly SET default_transaction_read_only = off",
]


@pytest.mark.parametrize("sql", NO_ROWS, ids=[f"{i:02d}_{s.split()[0].lower()}" for i, s in enumerate(NO_ROWS)])
def test_transaction_control_and_writes_refused(server, unchanged, sql):
    refused(server, sql, "returns no rows")


def test_do_block_refused(server, unchanged):
    refused(server, "DO $$ BEGIN DELETE FROM x; END $$", "returns no rows")
    refused(server, "DO LANGUAGE plpgsql $$ BEGIN EXECUTE 'DROP TABLE x'; END $$", "returns no rows")


def test_copy_to_program_refused(server, unchanged):
    refused(server, f"COPY accounts TO PROGRAM 'touch {PWNED}'", "returns no rows")
    refused(server, f"COPY (SELECT 1) TO '{PWNED}'", "returns no rows")
    refused(server, "COPY x FROM STDIN", "returns no rows")


@pytest.mark.parametrize("sql", [
    "WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE accounts SET starting_cash = 0 RETURNING *) SELECT * FROM u",
    "WITH i AS (INSERT INTO lessons (title, body) VALUES ('t', 'b') RETURNING *) SELECT * FROM i",
    "DELETE FROM x RETURNING *",
    "INSERT INTO x VALUES (99) RETURNING id",
    "EXPLAIN ANALYZE DELETE FROM x",
    "SELECT * FROM x FOR UPDATE",
], ids=["cte_delete", "cte_update", "cte_insert", "delete_returning", "insert_returning", "explain_analyze_delete",
        "select_for_update"])
def test_data_modifying_statements_refused(server, unchanged, sql):
    refused(server, sql, "read-only transaction", "permission denied")


@pytest.mark.parametrize("sql", [
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd', 0, 100)",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_from_bytea(0, 'x'::bytea)",
    "SELECT lo_creat(-1)",
    "SELECT * FROM dblink('dbname=postgres', 'DROP TABLE x') AS t(a text)",
    "SELECT dblink_exec('dbname=postgres', 'DROP TABLE x')",
    "SELECT * FROM pg_authid",
], ids=["pg_read_file", "pg_read_file_range", "pg_read_binary_file", "pg_ls_dir", "lo_import", "lo_from_bytea",
        "lo_creat", "dblink", "dblink_exec", "pg_authid"])
def test_server_file_large_object_and_dblink_functions_refused(server, unchanged, sql):
    refused(server, sql, "permission denied", "does not exist")


def test_set_config_read_only_off_is_harmless(server, unchanged, sec_url):
    # the function may run, but only inside the READ ONLY transaction that is rolled back at once
    doc = ok(server, "query", {"sql": "SELECT set_config('default_transaction_read_only', 'off', false) AS v"})
    assert doc["rows"] == [["off"]]
    refused(server, "SELECT set_config('transaction_read_only', 'off', true)",
            "cannot set transaction read-write mode", "read-write mode must be set before any query")
    doc = ok(server, "query", {"sql": "SELECT set_config('statement_timeout', '0', false), "
                                      "current_setting('statement_timeout')"})
    # the next call is back to the guarded session: read only, timeout in force, writes still refused
    doc = ok(server, "query", {"sql": "SHOW default_transaction_read_only"})
    assert doc["rows"] == [["on"]]
    assert ok(server, "query", {"sql": "SHOW statement_timeout"})["rows"] != [["0"]]
    refused(server, "WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d", "read-only transaction")


def test_set_config_role_refused(server, unchanged):
    refused(server, "SELECT set_config('role', 'postgres', false)", "permission denied")
    refused(server, "SELECT set_config('session_authorization', 'postgres', false)", "permission denied")


def test_pg_sleep_past_the_timeout_is_cancelled(server, unchanged, monkeypatch):
    monkeypatch.setenv("ATS_MCP_STATEMENT_TIMEOUT_MS", "300")
    msg = refused(server, "SELECT pg_sleep(30)", "statement timeout")
    assert "300 ms" in msg


def test_nextval_refused_and_sequence_unchanged(server, unchanged):
    refused(server, "SELECT nextval('probe_seq')", "permission denied", "read-only transaction")
    refused(server, "SELECT nextval('signals_signal_id_seq')", "permission denied", "read-only transaction")
    refused(server, "SELECT setval('probe_seq', 1000)", "permission denied", "read-only transaction")


def test_pg_terminate_backend_refused(server, unchanged, sec_url):
    with psycopg.connect(sec_url, autocommit=True) as victim:
        pid = victim.info.backend_pid
        refused(server, f"SELECT pg_terminate_backend({pid})", "permission denied")
        refused(server, f"SELECT pg_cancel_backend({pid})", "permission denied")
        refused(server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "permission denied")
        assert victim.execute("SELECT 1").fetchone() == (1,)


def test_advisory_locks_do_not_outlive_the_call(server, unchanged, sec_url):
    ok(server, "query", {"sql": "SELECT pg_advisory_lock(424242)"})
    with psycopg.connect(sec_url, autocommit=True) as c:
        assert c.execute("SELECT pg_try_advisory_lock(424242)").fetchone() == (True,)
        c.execute("SELECT pg_advisory_unlock(424242)")


def test_ten_megabyte_result_is_clipped(server, unchanged):
    r = call(server, "query", {"sql": "SELECT repeat('x', 10 * 1024 * 1024) AS big"})
    assert not r.is_error
    doc = r.structured_content
    assert doc["truncated"] is True and doc["truncated_reason"] == "cell"
    assert len(r.content[0].text) < 100_000
    r = call(server, "query", {"sql": "SELECT g, repeat('y', 1000) AS pad FROM generate_series(1, 20000) g",
                               "limit": 10000})
    doc = r.structured_content
    assert doc["truncated"] is True and doc["truncated_reason"] == "bytes"
    assert 0 < doc["row_count"] < 10000 and len(r.content[0].text) <= 1_100_000
    # a huge row count stops at limit + 1 rows (the rest is cancelled, not fetched)
    doc = ok(server, "query", {"sql": "SELECT generate_series(1, 100000000) AS g", "limit": 5})
    assert doc["rows"] == [[1], [2], [3], [4], [5]] and doc["truncated_reason"] == "limit"


def test_bind_parameters_and_empty_statements_refused(server, unchanged):
    refused(server, "SELECT $1", "bind parameter")
    refused(server, "   ", "empty statement")
    refused(server, "-- only a comment", "returns no rows")


def test_refusals_are_logged(server, unchanged):
    import logging

    err(server, "query", {"sql": "SELECT 1; DROP TABLE x -- audit me"})
    h = [h for h in logging.getLogger("ats.mcp-postgres").handlers if hasattr(h, "baseFilename")][0]
    h.flush()
    last = [json.loads(x) for x in Path(h.baseFilename).read_text().splitlines() if "audit me" in x][-1]
    assert last["tool"] == "query" and last["ok"] is False and "multiple commands" in last["error"]


# --- server-file functions in the FROM clause and through a CTE (issue 11 item 6) --------------------------------
# Each must be refused by PostgreSQL itself (role ``ats_readonly`` has no EXECUTE on the server-file functions:
# migration 0001), never by matching the SQL text.

FILE_CALLS = [
    # set-returning / scalar server-file functions called as a FROM item
    "SELECT * FROM pg_read_file('/etc/passwd')",
    "SELECT * FROM pg_read_file('/etc/passwd', 0, 100)",
    "SELECT * FROM pg_read_binary_file('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT * FROM pg_ls_dir('/etc', true, false)",
    "SELECT * FROM pg_stat_file('/etc/passwd')",
    "SELECT * FROM pg_ls_logdir()",
    "SELECT * FROM pg_ls_waldir()",
    "SELECT * FROM pg_ls_tmpdir()",
    "SELECT * FROM pg_read_file('/etc/passwd') AS t(line)",
    "SELECT * FROM ROWS FROM (pg_ls_dir('.'), pg_read_file('/etc/passwd'))",
    "SELECT * FROM generate_series(1, 1) g, LATERAL pg_read_file('/etc/passwd') f",
    # through a CTE, plain and MATERIALIZED, and nested
    "WITH x AS (SELECT pg_read_file('/etc/passwd') AS t) SELECT * FROM x",
    "WITH x AS MATERIALIZED (SELECT * FROM pg_ls_dir('.') d) SELECT * FROM x",
    "WITH a AS (SELECT 1), b AS (SELECT * FROM pg_read_file('postgresql.conf')) SELECT * FROM a, b",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2) "
    "SELECT n, pg_read_file('/etc/passwd') FROM r",
    # in a sub-select and a VALUES list
    "SELECT (SELECT pg_read_file('/etc/passwd'))",
    "SELECT * FROM (VALUES (pg_read_file('/etc/passwd'))) v(t)",
]


@pytest.mark.parametrize("sql", FILE_CALLS)
def test_server_file_functions_are_refused_by_privilege(server, unchanged, sql):
    msg = err(server, "query", {"sql": sql})
    assert "permission denied" in msg.lower(), msg
    assert "root:" not in msg  # nothing of the file reached the client


def test_refusal_is_the_roles_missing_execute_right(sec_url):
    """The guard is PostgreSQL's privilege system: ats_readonly holds no EXECUTE on any of these functions."""
    names = ["pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
             "pg_ls_tmpdir", "lo_import", "lo_export"]
    with psycopg.connect(sec_url, row_factory=dict_row) as c:
        rows = c.execute("""SELECT p.oid::regprocedure::text AS f,
                                   has_function_privilege('ats_readonly', p.oid, 'EXECUTE') AS can
                              FROM pg_proc p WHERE p.proname = ANY(%s)""", (names,)).fetchall()
        member = c.execute("""SELECT coalesce(array_agg(b.rolname), '{}') AS roles FROM pg_auth_members m
                               JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid
                              WHERE r.rolname = 'ats_readonly'""").fetchone()["roles"]
    assert rows and not [r["f"] for r in rows if r["can"]]
    assert not {"pg_read_server_files", "pg_write_server_files", "pg_execute_server_program"} & set(member)
