"""The settings seeded by the migrations equal the Python defaults, breaker defaults included (split from
tests/test_engine_units.py::test_migration_seeds_equal_python_defaults)."""

from __future__ import annotations

from ats.risk.settings import DEFAULTS, SETTINGS


def test_migration_seeds_equal_python_defaults(conn):
    vals = {r["key"]: r["value"] for r in conn.execute(
        "SELECT key, value FROM system_settings WHERE account_id='default'").fetchall()}
    for k in SETTINGS:
        assert vals[k] == DEFAULTS[k], k
