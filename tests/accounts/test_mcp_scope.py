"""An account's MCP server sees only that account (issue 13): the account comes from the server's environment and
its read-only role, never from what the model writes in SQL or arguments."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from _mcp_helpers import ok
from ats.accounts.store import AccountSpec, create_account
from ats.db.connection import readonly_url

pytestmark = pytest.mark.dblayer


def test_the_server_of_an_account_reads_only_that_account(fresh_db_url, monkeypatch):
    from mcp_servers.postgres import build_server

    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        for a in ("acct-a", "acct-b"):
            create_account(c, AccountSpec(a, "paper", Decimal(1000)))
            c.execute("INSERT INTO engine_runs (run_id, account_id, mode) VALUES (%s, %s, 'replay')", (f"run-{a}", a))
        c.commit()
    monkeypatch.setenv("ATS_ACCOUNT", "acct-a")
    ro = readonly_url(fresh_db_url)
    assert "ats_ro_acct_a" in ro
    server = build_server(readonly_url=ro)
    try:
        doc = ok(server, "query", {"sql": "SELECT DISTINCT account_id FROM engine_runs ORDER BY 1"})
        assert doc["rows"] == [["acct-a"]]
        doc = ok(server, "query", {"sql": "SELECT count(*) FROM engine_runs WHERE account_id = 'acct-b'"})
        assert doc["rows"] == [[0]]
        doc = ok(server, "query", {"sql": "SELECT current_user"})
        assert doc["rows"] == [["ats_ro_acct_a"]]
    finally:
        server._ats_readonly.close()
