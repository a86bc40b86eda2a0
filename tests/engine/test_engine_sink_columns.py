"""Column-wise rows (``add_columns``, the quiet-span path) give exactly the rows of one ``add`` per row: the same
tuples in a MemorySink, the same COPY lines in a PgSink (timestamps as other text of the same instant) and the same
rows in PostgreSQL; and replay batches commit with synchronous_commit off, live batches durable."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import psycopg
import pytest

from _engine_helpers import engine_db, engine_template  # noqa: F401
from ats.engine.sink import _FMT, _SPEC, FloatJson, MemorySink, PgSink, RawJson, position_row, write_batch
from ats.portfolio.book import Position

T0 = 1_610_000_000


def _blocks():
    """Two positions over 4 steps: NaN pnl, None targets, a float that needs 17 digits, an integer price."""
    C = np.arange(4, dtype=np.int64) * 300 + T0
    c1 = np.array([30000.125, 0.1 + 0.2, 1e-12, 29999.0])
    c2 = np.array([2.5, 2.25, 2.0, 1.75])
    pnl1 = np.array([0.5, float("nan"), -0.0, 3.0])
    b1 = (4, (7, "run\t1", C, c1, pnl1, None, 2.5, None, (C - T0 + 60) / 60.0, "hold", None,
              FloatJson('{"best_price":%s}', np.maximum.accumulate(c1))))
    b2 = (4, (8, "run\t1", C, c2, c2 * 2, 3.0, None, None, (C - T0) / 60.0, "hold", "why\nnot 5%",
              FloatJson('{"best_price":%s}', np.minimum.accumulate(c2))))
    return [b1, b2]


def _one_by_one():
    """The same rows as ``_blocks`` the way the step path adds them (Python values, step-major)."""
    rows = []
    for n, cols in _blocks():
        per = []
        for m in range(n):
            row = []
            for col in cols:
                if isinstance(col, np.ndarray):
                    row.append(col.tolist()[m])
                elif isinstance(col, FloatJson):
                    row.append(RawJson(col.template % float.__repr__(float(col.values[0][m]))))
                else:
                    row.append(col)
            per.append(tuple(row))
        rows.append(per)
    return [r for step in zip(*rows) for r in step]


def test_memory_sink_columns_equal_one_add_per_row():
    a, b = MemorySink("r", "default"), MemorySink("r", "default")
    a.add_columns("position_evaluations", _blocks())
    for row in _one_by_one():
        b.add("position_evaluations", row)
    assert len(a.rows["position_evaluations"]) == 8
    ra, rb = a.rows["position_evaluations"], b.rows["position_evaluations"]
    assert repr(ra) == repr(rb)  # repr: NaN != NaN
    assert [type(v) for r in ra for v in r] == [type(v) for r in rb for v in r]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_pg_sink_column_lines_equal_one_add_per_row(engine_db):
    with psycopg.connect(engine_db) as conn:
        a, b = PgSink(conn, "r", "default"), PgSink(conn, "r", "default")
        a.add_columns("position_evaluations", _blocks())
        for row in _one_by_one():
            b.add("position_evaluations", row)
        la, lb = a.buf["position_evaluations"], b.buf["position_evaluations"]
        conn.rollback()
    assert len(la) == len(lb) == 8
    ts_col = _SPEC["position_evaluations"][0].index("ts")
    for x, y in zip(la, lb):
        fx, fy = x.split("\t"), y.split("\t")
        assert _ts(fx.pop(ts_col)) == _ts(fy.pop(ts_col))
        assert fx == fy
    assert la[2].split("\t")[4] == "\\N" and la[0].split("\t")[1] == "run\\t1" and "why\\nnot" in la[1]
    for bad in ('{"a":"\\\\%s"}', '{"a":%s,"b":%s}', '{"a":%d}', '{"a%":%s}'):
        with pytest.raises(ValueError, match="FloatJson template"):
            FloatJson(bad, np.zeros(1))


def test_column_rows_land_in_postgres_identical_to_row_rows(engine_db):
    """Both ways into position_evaluations (real PostgreSQL, real positions for the FK): identical rows."""
    run = {"cols": "test-cols-run", "rows": "test-rows-run"}
    with psycopg.connect(engine_db) as conn:
        for tag, rid in run.items():
            conn.execute("INSERT INTO engine_runs (run_id, account_id, mode, status, params) "
                         "VALUES (%s, 'default', 'replay', 'running', '{}') ON CONFLICT DO NOTHING", (rid,))
        conn.commit()
        got = {}
        for tag, rid in run.items():
            sink = PgSink(conn, rid, "default", durable=False)
            pids = [sink.next_id("positions") for _ in range(2)]
            for pid in pids:
                p = Position(position_id=pid, strategy="sma_cross", symbol="BTCUSDT", side="long", qty=1.0,
                             avg_entry=30000.0, opened_at=T0, entry_qty=1.0)
                sink.buf["positions"].append(_FMT["positions"](position_row(rid, "default", p)))
            blocks = [(n, (pid, rid) + cols[2:]) for (n, cols), pid in zip(_blocks(), pids)]
            if tag == "cols":
                sink.add_columns("position_evaluations", blocks)
            else:
                per = [[(pid, rid) + r[2:] for r in _one_by_one()[i::2]] for i, pid in enumerate(pids)]
                for step in zip(*per):
                    for r in step:
                        sink.add("position_evaluations", r)
            write_batch(conn, sink._take_batch(None, None, 0))
            got[tag] = conn.execute(
                """SELECT ts, price, pnl_pct, tp_price, sl_price, trailing_stop, hold_minutes, decision, reason,
                          context, position_id - min(position_id) OVER () AS pos
                     FROM position_evaluations WHERE run_id = %s ORDER BY evaluation_id""", (rid,)).fetchall()
        conn.rollback()
    assert len(got["cols"]) == 8
    assert got["cols"] == got["rows"]
    assert got["cols"][0][0] == datetime.fromtimestamp(T0, tz=timezone.utc)
    assert str(got["cols"][2][1]) == "0.30000000000000004" and got["cols"][2][2] is None  # NaN pnl -> NULL


def test_replay_batches_are_not_durable_live_batches_are(engine_db):
    """A non-durable batch runs with synchronous_commit off inside its transaction only."""
    seen = []
    with psycopg.connect(engine_db) as conn:
        for durable in (False, True):
            sink = PgSink(conn, "test-durable", "default", durable=durable)
            real = conn.commit

            def commit():
                seen.append(conn.execute("SHOW synchronous_commit").fetchone()[0])
                real()

            conn.commit = commit
            try:
                write_batch(conn, sink._take_batch(None, None, 0))
            finally:
                conn.commit = real
        after = conn.execute("SHOW synchronous_commit").fetchone()[0]
    assert seen == ["off", "on"] and after == "on"


def test_fast_and_step_replays_persist_identical_rows(engine_db):
    """The quiet-span path (column-wise evaluations and snapshots) and the one-step reference, each into a real
    PgSink: identical rows in PostgreSQL, table by table, in id order (ids of positions compared by rank)."""
    from _engine_helpers import connect, utc
    from ats.db import config_store as cs
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import begin_run, make_spec, resolve

    with connect(engine_db) as conn:
        cs.upsert_strategy(conn, "sma_cross", params={}, effective_from=utc("2000-01-01"), watchlist_enabled=True,
                           buy_enabled=True, sell_enabled=True)
        conn.commit()
        runs = {}
        for fast in (True, False):
            spec = resolve(conn, make_spec("replay", strategies=["sma_cross"], symbols=["BTCUSDT", "AVAXUSDT"],
                                           timeframe="5m", start="2021-05-12", end="2021-05-16", tag=f"fast={fast}"))
            begin_run(conn, spec)
            feed = ReplayFeed.load(conn, spec.symbols, "5m", spec.start, spec.end)
            eng = Engine(conn, spec, sink=PgSink(conn, spec.run_id, spec.account_id, durable=False), feed=feed,
                         commit_every=300, fast=fast)
            eng.run()
            runs[fast] = (spec.run_id, eng.bulk_steps)
        q = {
            "position_evaluations": """SELECT ts, price, pnl_pct, tp_price, sl_price, trailing_stop, hold_minutes,
                                              decision, reason, context,
                                              dense_rank() OVER (ORDER BY position_id) AS pos
                                         FROM position_evaluations WHERE run_id = %s ORDER BY evaluation_id""",
            "portfolio_hourly_snapshots": """SELECT ts, cash_usd, positions_value_usd, equity_usd, realized_pnl_usd,
                                                    unrealized_pnl_usd, fees_usd, net_pnl_daily_usd, open_positions,
                                                    (SELECT jsonb_agg(e - 'position_id') FROM jsonb_array_elements(positions) e)
                                               FROM portfolio_hourly_snapshots WHERE run_id = %s ORDER BY snapshot_id""",
        }
        got = {t: {f: conn.execute(sql, (runs[f][0],)).fetchall() for f in runs} for t, sql in q.items()}
    assert runs[True][1] > 500 and runs[False][1] == 0, runs
    for t in q:
        assert len(got[t][True]) > 50, t
        assert got[t][True] == got[t][False], t
    assert any(r["open_positions"] == 2 for r in got["portfolio_hourly_snapshots"][True])
