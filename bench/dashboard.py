"""Dashboard API benchmark (run by hand, not a test): p50/p95 server time of each ``/api`` route, side by side
with the bare SQL that route runs (the same statements with the same parameters, captured from one request
and replayed on a plain connection), at the demo's size and with 1,000,000 fills. Target: p95 < 100 ms at 1M.

1. A scratch database is created on ``--admin-url`` (default the PostgreSQL server on 127.0.0.1:5432; without
   one, a temporary embedded pgserver), migrated, and brought to the `ats demo` state (real candles, the demo
   replay; ``--data-dir`` default ``ats.paths.market_data_dir()``).
2. Each route is requested ``--n`` times in-process (FastAPI TestClient; server time = the request's wall time)
   for the demo account 'default'.
3. A synthetic run of account 'bench1m' is added with 1,000,000 order_executions and fills, 500,000 positions
   and hourly snapshots over two years (one SQL INSERT ... SELECT each), then step 2 is repeated for it.
The scratch database is dropped at the end.

Usage:  .venv/bin/python bench/dashboard.py [--admin-url DSN] [--n 30] [--fills 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

ROUTES = ("/api/pnl?account={a}", "/api/positions?account={a}", "/api/analytics?account={a}", "/api/coverage",
          "/api/kb/status", "/api/kb/articles", "/api/reports", "/api/backtests", "/api/events?limit=200",
          "/api/events?kind=breaker&limit=200")
SYMBOLS = ("ADAUSDT", "AVAXUSDT", "BTCUSDT", "DOTUSDT", "ETHUSDT", "LINKUSDT", "LTCUSDT", "MATICUSDT", "SOLUSDT",
           "XRPUSDT")
RECORDED: list[tuple[str, object]] = []


class RecordingCursor(psycopg.Cursor):
    """A cursor that records every statement and its parameters (to replay them as bare SQL)."""

    def execute(self, query, params=None, **kw):
        RECORDED.append((query, params))
        return super().execute(query, params, **kw)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _admin_url(arg: str | None) -> tuple[str, object]:
    url = arg or "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url, None
    except psycopg.Error:
        if arg:
            raise
    import pgserver

    srv = pgserver.get_server(tempfile.mkdtemp(prefix="ats-bench-pg-"), cleanup_mode="delete")
    return srv.get_uri(), srv


def synthesize(url: str, n_fills: int) -> str:
    """Add run 'replay-bench1m' (account 'bench1m') with ``n_fills`` orders and fills, n/2 positions and hourly
    snapshots over two years; returns the account id."""
    acct, rid = "bench1m", "replay-bench1m"
    step = 2 * 365 * 86400 / n_fills  # seconds between fills
    syms = "ARRAY[" + ",".join(f"'{s}'" for s in SYMBOLS) + "]"
    strats = "ARRAY['btc_trend','mean_reversion','momentum','range_fade','trend_breakdown','volatility_breakout','x']"
    t0 = "timestamptz '2021-01-01 00:00+00'"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO accounts (account_id) VALUES (%s) ON CONFLICT DO NOTHING", (acct,))
        c.execute("""INSERT INTO engine_runs (run_id, account_id, mode, status, params)
                     VALUES (%s, %s, 'replay', 'completed', jsonb_build_object('symbols', %s::text[], 'timeframe', '1h'))""",
                  (rid, acct, list(SYMBOLS)))
        c.execute(f"""INSERT INTO order_executions (client_order_id, run_id, account_id, strategy_name, symbol, side,
                        position_side, intent, qty, notional_usd, decision_price, status, filled_qty, avg_fill_price,
                        submitted_at, updated_at)
                      SELECT 'b1m-' || i, '{rid}', '{acct}', ({strats})[1 + i % 7], ({syms})[1 + i % 10],
                             CASE WHEN i % 2 = 0 THEN 'buy' ELSE 'sell' END, 'long',
                             CASE WHEN i % 2 = 0 THEN 'open' ELSE 'close' END, 1.5, 150, 100 + (i % 97), 'filled',
                             1.5, 100 + (i % 97), {t0} + i * interval '{step} seconds',
                             {t0} + i * interval '{step} seconds'
                        FROM generate_series(1, {n_fills}) AS i""")
        c.execute(f"""INSERT INTO fills (order_id, client_order_id, run_id, account_id, symbol, side, qty, price, fee_usd, ts)
                      SELECT order_id, client_order_id, run_id, account_id, symbol, side, qty, avg_fill_price,
                             0.15, submitted_at FROM order_executions WHERE run_id = '{rid}'""")
        c.execute(f"""INSERT INTO positions (run_id, account_id, strategy_name, symbol, side, status, qty, entry_qty,
                        avg_entry_price, avg_exit_price, realized_pnl_usd, fees_usd, opened_at, closed_at, close_reason)
                      SELECT '{rid}', '{acct}', ({strats})[1 + i % 7], ({syms})[1 + i % 10], 'long',
                             CASE WHEN i > {n_fills // 2 - 3} THEN 'open' ELSE 'closed' END,
                             CASE WHEN i > {n_fills // 2 - 3} THEN 1.5 ELSE 0 END, 1.5, 100, 101,
                             ((i % 13) - 6) * 0.5, 0.3, {t0} + (2 * i) * interval '{step} seconds',
                             CASE WHEN i > {n_fills // 2 - 3} THEN NULL ELSE {t0} + (2 * i + 1) * interval '{step} seconds' END,
                             CASE WHEN i > {n_fills // 2 - 3} THEN NULL ELSE 'tp' END
                        FROM generate_series(1, {n_fills // 2}) AS i""")
        c.execute(f"""INSERT INTO portfolio_hourly_snapshots (run_id, account_id, ts, cash_usd, positions_value_usd,
                        equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd, net_pnl_daily_usd, open_positions)
                      SELECT '{rid}', '{acct}', {t0} + h * interval '1 hour', 10000 + 50 * sin(h / 90.0), 0,
                             10000 + 50 * sin(h / 90.0), 0, 0, 0, 0, 0 FROM generate_series(0, 2 * 365 * 24) AS h""")
        c.execute("VACUUM ANALYZE")  # as autovacuum would have by then: visibility map for index-only scans
    return acct


def measure(app, url: str, account: str, n: int) -> list[tuple[str, float, float, float, float, int]]:
    """[(route, api p50 ms, api p95 ms, sql p50 ms, sql p95 ms, statements)] over ``n`` requests each."""
    from fastapi.testclient import TestClient

    out = []
    with TestClient(app) as client, psycopg.connect(url, autocommit=True, row_factory=dict_row) as bare:
        for tmpl in ROUTES:
            route = tmpl.format(a=account)
            for _ in range(2):
                assert client.get(route).status_code == 200, (route, client.get(route).text[:300])
            RECORDED.clear()
            client.get(route)
            stmts = list(RECORDED)
            api, sql = [], []
            for _ in range(n):
                t = time.perf_counter()
                client.get(route)
                api.append((time.perf_counter() - t) * 1000)
            for _ in range(n):
                t = time.perf_counter()
                for q, p in stmts:
                    bare.execute(q, p).fetchall()
                sql.append((time.perf_counter() - t) * 1000)
            out.append((route, statistics.median(api), _pct(api, 0.95), statistics.median(sql), _pct(sql, 0.95),
                        len(stmts)))
    return out


def _print(title: str, rows) -> None:
    print(f"\n== {title}")
    print(f"{'route':<42} {'API p50':>8} {'API p95':>8} {'SQL p50':>8} {'SQL p95':>8} {'stmts':>5}   (ms)")
    for r in rows:
        print(f"{r[0]:<42} {r[1]:>8.1f} {r[2]:>8.1f} {r[3]:>8.1f} {r[4]:>8.1f} {r[5]:>5}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-url", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--fills", type=int, default=1_000_000)
    args = ap.parse_args()

    from ats.api import deps
    from ats.api.app import create_app
    from ats.db.connection import with_dbname
    from ats.demo import prepare_demo
    from ats.paths import market_data_dir

    admin, srv = _admin_url(args.admin_url)
    name = f"ats_bench_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(admin, name)
    try:
        t = time.monotonic()
        prepare_demo(url, data_dir=args.data_dir or market_data_dir(), progress=False)
        print(f"demo database ready in {time.monotonic() - t:.1f} s")
        app = create_app(url, root=ROOT)

        from psycopg_pool import ConnectionPool

        rec_pool = ConnectionPool(url, min_size=1, max_size=4, open=True, kwargs={
            "row_factory": dict_row, "autocommit": True, "cursor_factory": RecordingCursor})

        def recording_conn():  # the app's own pooled get_conn, with statements recorded
            with rec_pool.connection() as conn:
                yield conn

        app.dependency_overrides[deps.get_conn] = recording_conn
        with psycopg.connect(url) as c:
            n_demo = c.execute("SELECT count(*) FROM fills").fetchone()[0]
        _print(f"demo size ({n_demo:,} fills), account 'default', n={args.n}", measure(app, url, "default", args.n))
        t = time.monotonic()
        acct = synthesize(url, args.fills)
        print(f"\nsynthesized {args.fills:,} fills / {args.fills // 2:,} positions in {time.monotonic() - t:.1f} s")
        _print(f"{args.fills:,} fills, account '{acct}', n={args.n}", measure(app, url, acct, args.n))
        rec_pool.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if srv is not None:
            srv.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
