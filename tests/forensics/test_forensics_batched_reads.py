"""The batched reads behind investigate_symbol (issue #18): a pipelined batch returns and records exactly what the
statements return one by one, one configuration lookup statement answers what one lookup per pair answers,
and every appendix statement, re-run as the read-only role, returns the row count the appendix states."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db import config_store as cs
from ats.forensics import queries as fx
from ats.forensics.config_as_of import ConfigAsOf
from ats.forensics.sqlfmt import QueryLog

from _reports_helpers import RUN, seed_run, ts

UTC = timezone.utc


def test_batch_matches_statements_run_one_by_one(fresh_conn):
    seed_run(fresh_conn)
    stmts = [("signals", "SELECT signal_id, ts, price, context FROM signals WHERE run_id = %(r)s ORDER BY signal_id",
              {"r": RUN}, True),
             ("none", "SELECT 1 AS x WHERE false", None, True),
             ("hidden", "SELECT count(*) AS n FROM fills WHERE run_id = %(r)s", {"r": RUN}, False),
             ("positions", "SELECT position_id, realized_pnl_usd FROM positions WHERE run_id = %(r)s AND opened_at "
                           "<= %(t)s ORDER BY position_id", {"r": RUN, "t": ts(19, 0)}, True)]
    one, many = QueryLog(fresh_conn), QueryLog(fresh_conn)
    expected = [one.all(n, s, p, record=r) for n, s, p, r in stmts]
    fresh_conn.rollback()
    got = many.batch(stmts)
    assert got == expected and len(got[0]) > 0 and got[1] == [] and got[2][0]["n"] > 0
    assert many.entries == one.entries and [e["name"] for e in many.entries] == ["signals", "none", "positions"]


def test_batch_error_is_raised(fresh_conn):
    q = QueryLog(fresh_conn)
    with pytest.raises(psycopg.errors.UndefinedTable):
        q.batch([("a", "SELECT 1 AS x", None, True), ("b", "SELECT * FROM no_such_table", None, True)])
    fresh_conn.rollback()
    assert q.entries == []


def test_config_prefetch_equals_one_lookup_per_pair(fresh_conn):
    seed_run(fresh_conn)  # momentum in force from 2021-01-01
    cs.upsert_strategy(fresh_conn, "momentum", params={"tp_pct": 5.0}, watchlist_enabled=True, buy_enabled=False,
                       sell_enabled=True, effective_from=datetime(2021, 5, 19, 12, tzinfo=UTC))
    fresh_conn.commit()
    pairs = [("momentum", datetime(1990, 6, 1, tzinfo=UTC)),        # the seeded version (migration 0021)
             ("momentum", ts(19, 11)), ("momentum", ts(19, 12)), ("momentum", ts(20, 0)),
             ("momentum", ts(19, 11)),                               # a duplicate
             ("nope", ts(19, 12))]                                   # an unknown strategy: None
    started = datetime.now(UTC) - timedelta(days=1)                 # as known a day ago: before both versions
    for run_started in (None, started):
        single = ConfigAsOf(fresh_conn, "default", run_started)
        batched = ConfigAsOf(fresh_conn, "default", run_started)
        batched.prefetch(pairs)
        n_cached = len(batched._cache)
        assert [batched(s, t) for s, t in pairs] == [single(s, t) for s, t in pairs]
        assert len(batched._cache) == n_cached == 5  # every answer came from the one prefetch statement
    now = ConfigAsOf(fresh_conn, "default")
    assert now("nope", ts(19, 12)) is None
    assert now("momentum", ts(19, 11))["buy_enabled"] is True and now("momentum", ts(19, 12))["buy_enabled"] is False


@pytest.mark.parametrize("window", [(None, None), ("2021-05-18T07:00", "2021-05-19T23:59:59"),
                                    ("2021-05-18T07:00", None), (None, "2021-05-19T12:00")])
@pytest.mark.parametrize("per_symbol", [True, False])
def test_appendix_row_counts_reproduce_as_readonly(fresh_db_url, window, per_symbol):
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        seed_run(c, per_symbol_realized=per_symbol)
        r = fx.investigate_symbol(c, "BTCUSDT", since=window[0], until=window[1])
    json.dumps(r)
    names = [q["name"] for q in r["queries"]]
    assert names[:5] == ["signals", "blocked_signals", "orders", "fills", "positions"]
    assert names.index("pnl_summary") < names.index("snapshot_end") < names.index("trades_in_snapshot_interval")
    from ats.db.connection import readonly_url

    with psycopg.connect(readonly_url(fresh_db_url), row_factory=dict_row) as ro:
        for q in r["queries"]:
            assert len(ro.execute(q["sql"]).fetchall()) == q["rows"], q["name"]
