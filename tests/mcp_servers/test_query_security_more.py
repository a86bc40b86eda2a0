"""More of the `query` tool's security corpus (issue 11 item 6): server-file functions in the FROM clause and
through a CTE, on a real database through the SDK client.

Each statement must be refused by PostgreSQL itself (role ``ats_readonly`` has no EXECUTE on the server-file
functions: migration 0001), never by matching the SQL text, and the database must be unchanged afterwards.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import readonly_url

from _mcp_helpers import err, fingerprint, ok
from conftest import clone_template, drop_database

pytestmark = pytest.mark.dblayer

DENIED = ("permission denied",)


@pytest.fixture(scope="module")
def sec_url(pg_admin_url, template_db):
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_mcp_sec2")
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
    yield
    assert fingerprint(sec_url) == baseline
    doc = ok(server, "query", {"sql": "SELECT current_user, current_setting('transaction_read_only')"})
    assert doc["rows"] == [["ats_readonly", "on"]]


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
    assert any(r in msg.lower() for r in DENIED), msg
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
