"""The strategy configurations seeded by the migrations equal the Python defaults (split from
tests/test_engine_units.py::test_migration_seeds_equal_python_defaults)."""

from __future__ import annotations

from ats.strategies import SEEDED, default_params


def test_migration_seeds_equal_python_defaults(conn):
    rows = conn.execute("""SELECT strategy_name, watchlist_enabled, buy_enabled, sell_enabled, params, effective_from
                             FROM strategy_configurations WHERE account_id='default'""").fetchall()
    got = {r["strategy_name"]: r for r in rows}
    assert set(SEEDED) <= set(got)
    for n in SEEDED:
        r = got[n]
        assert r["params"] == default_params(n), n
        assert r["watchlist_enabled"] and r["buy_enabled"] and r["sell_enabled"]
        assert r["effective_from"].year == 1970
