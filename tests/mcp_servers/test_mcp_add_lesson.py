"""ats-postgres `add_lesson` (issue 15): an LL-NNN lesson through the SDK's in-process client, only with
--allow-writes, audited in system_events, mirrored to kb/lessons/, a bad rule refused with nothing written."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import readonly_url

from _mcp_helpers import err, ok, tool_names
from conftest import ROOT


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    (h / "kb").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", h / "pyproject.toml")
    monkeypatch.setenv("ATS_HOME", str(h))
    return h


def test_add_lesson_only_with_writes_audited_and_mirrored(fresh_db_url, home):
    from mcp_servers.postgres import build_server

    ro = build_server(readonly_url=readonly_url(fresh_db_url))
    rw = build_server(allow_writes=True, readonly_url=readonly_url(fresh_db_url), owner_url=fresh_db_url)
    try:
        assert "add_lesson" not in tool_names(ro) and "add_lesson" in tool_names(rw)
        doc = ok(rw, "add_lesson", {"title": "Momentum longs bought the crash", "trigger": "entries in the cascade",
                                    "root_cause": "velocity alone", "fix_applied": "regime gate",
                                    "prevention": "no momentum longs in a strong bear", "impact_usd": -296.47,
                                    "tags": ["strategy:momentum"], "lesson_date": "2021-05-19",
                                    "rule": "block entries for strategy momentum side long during strong_bear"})
        assert doc["ll"] == "LL-003" and doc["version"] == 1  # after the 0140 seeds
        assert (home / "kb" / "lessons" / "LL-003.md").is_file()
        with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
            ev = c.execute("SELECT * FROM system_events WHERE event_id=%s", (doc["event_id"],)).fetchone()
            assert (ev["component"], ev["event_type"], ev["payload"]["ll"]) == ("mcp", "lesson_added", "LL-003")
            n = c.execute("SELECT count(*) AS n FROM lessons").fetchone()["n"]
        fix = ok(rw, "add_lesson", {"title": "Momentum longs bought the crash (v2)", "trigger": "t", "root_cause": "r",
                                    "fix_applied": "f", "prevention": "p", "correction_of": "LL-003"})
        assert (fix["ll"], fix["version"]) == ("LL-003", 2)
        assert "not understood" in err(rw, "add_lesson", {"title": "x", "trigger": "t", "root_cause": "r",
                                                          "fix_applied": "f", "prevention": "p",
                                                          "rule": "never lose money"})
        with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
            assert c.execute("SELECT count(*) AS n FROM lessons").fetchone()["n"] == n + 1
    finally:
        ro._ats_readonly.close()
        rw._ats_readonly.close()
