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


def test_migration_0150_closes_the_references_without_rewriting_history(conn):
    """range_fade and volatility_breakout left the book: a NEW configuration version (watchlist and buy off, sell
    on) effective from the migration; the 1970 version is still what a replay of 2021 sees."""
    from datetime import datetime, timezone

    from ats.db import config_store as cs

    for n in ("range_fade", "volatility_breakout"):
        cur = conn.execute("SELECT * FROM strategy_configurations WHERE account_id='default' AND strategy_name=%s",
                           (n,)).fetchone()
        assert not cur["watchlist_enabled"] and not cur["buy_enabled"] and cur["sell_enabled"]
        assert cur["effective_from"].year > 2000 and cur["params"] == default_params(n)
        hist = cs.strategy_timeline(conn, n)
        assert [h["valid_from"].year for h in hist][0] == 1970 and hist[0]["buy_enabled"] and len(hist) == 2
        then = cs.strategy_as_of(conn, n, datetime(2021, 5, 1, tzinfo=timezone.utc))
        assert then["buy_enabled"] and then["watchlist_enabled"] and then["valid_from"].year == 1970
        assert not cs.strategy_as_of(conn, n, datetime.now(timezone.utc))["buy_enabled"]
