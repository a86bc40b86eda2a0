"""Benchmark (run by hand): the forensic tools at scale, each beside the raw SELECTs of the rows it needs.

    .venv/bin/python bench/forensics.py [--rows 1000000] [--iterations 50] [--shape full|audit]
                                        [--admin-url URL] [--pgdata DIR] [--reuse] [--only TOOL,...] [--json]

Data (generate_series, in a throw-away database on an embedded pgserver in a temp directory, or on
``--admin-url`` / ``ATS_BENCH_ADMIN_URL``; ``--pgdata DIR --reuse`` keeps the server's data directory and reuses
a database built earlier with the same ``--rows`` / ``--shape``):

- ``--shape audit`` (the data of the issue #18 figure, as ``bench/mcp.py`` always built it): ``--rows`` rows in
  each of signals and order_executions and one fill per order, 50 symbols over one year of decision times (about
  55 signals per symbol per day), 10 % of signals blocked; no positions, snapshots or events.
- ``--shape full`` (default): the same signals / orders / fills, but each symbol alternates open and close, so
  every open order and the symbol's next close form a closed position (``rows / 2`` positions, each with its
  initial TP/SL target and an exit evaluation); one portfolio snapshot per hour whose cumulative realized P&L
  is the sum of the positions closed before it (so the reconciliation runs for real); a breaker trip and reset
  every 10 days; a cron event every hour.

Measured (p50 / p95 / mean in ms over ``--iterations`` calls, after 3 warm-up calls; the procedure's calls
interleaved with its baseline's), each tool beside its baseline, the raw SELECTs of the same rows run directly with psycopg (one statement per table, no
processing), with the ratio tool / raw:

- ``investigate``: investigate_symbol(BTCUSDT, one-day windows) - the procedure on a psycopg connection, the MCP
  tool in-process (SDK client, role ats_readonly) and over stdio (the server as .mcp.json launches it);
  raw: signals, blocked_signals, order_executions, fills, positions (+ their evaluations and targets, full
  shape), system_events and the snapshots of the window;
- ``portfolio_pnl``: pnl_windows(run) vs the 7 snapshot lookups it needs;
- ``blocked_signals``: blocked_signals(since one week, limit 1000) vs the rows and one GROUP BY;
- ``health_summary``: health_summary(run) vs the engine_runs / breaker / events / snapshot SELECTs;
- ``daily``: daily_summary(day) vs its snapshot, positions, blocked and events SELECTs.

Target (issue #18): every forensic tool within 2x of its raw SELECTs at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

SYMBOLS = [f"SYM{i:02d}USDT" for i in range(48)] + ["BTCUSDT", "ETHUSDT"]
TARGET_RATIO = 2.0
DAYS = [f"2021-{m:02d}-{d:02d}" for m in range(2, 12) for d in (3, 11, 19, 27)]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {"p50_ms": round(pct(xs, 0.5), 2), "p95_ms": round(pct(xs, 0.95), 2),
            "mean_ms": round(statistics.fmean(xs), 2), "n": len(xs)}


def timed(fn, n: int, warmup: int = 3) -> dict:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return summary(out)


def timed_pair(fa, fb, n: int, warmup: int = 3) -> tuple[dict, dict]:
    """``timed`` of two functions with their calls interleaved (a, b, a, b, ...), so that a change in the
    machine's load during the run affects both sides of a ratio alike."""
    for i in range(warmup):
        fa(i)
        fb(i)
    xa, xb = [], []
    for i in range(n):
        for f, xs in ((fa, xa), (fb, xb)):
            t0 = time.perf_counter()
            f(i)
            xs.append((time.perf_counter() - t0) * 1000)
    return summary(xa), summary(xb)


# ---- data --------------------------------------------------------------------------------------------------

def build_audit_rows(url: str, rows: int) -> float:
    """The ``audit`` shape (exactly the rows bench/mcp.py built for the issue #18 figure). Returns seconds."""
    t0 = time.perf_counter()
    syms = "ARRAY[" + ",".join(f"'{s}'" for s in SYMBOLS) + "]"
    with psycopg.connect(url, autocommit=True) as c:
        _run_row(c, rows)
        c.execute(f"""INSERT INTO signals (signal_id, run_id, account_id, strategy_name, symbol, timeframe, ts, side,
                          intent, position_side, price, strength, regime, status, context)
                      SELECT g, 'bench-run', 'default', 'momentum', ({syms})[1 + g %% {len(SYMBOLS)}], '1h',
                             '2021-01-01'::timestamptz + make_interval(secs => (g::bigint * 31536000 / %s)),
                             CASE WHEN g %% 2 = 0 THEN 'buy' ELSE 'sell' END, CASE WHEN g %% 2 = 0 THEN 'open' ELSE 'close' END,
                             'long', 100 + (g %% 1000) / 10.0, 0.5, 'bull',
                             CASE WHEN g %% 10 = 0 THEN 'blocked' ELSE 'accepted' END,
                             jsonb_build_object('ema_fast', g %% 97, 'ema_slow', g %% 89)
                      FROM generate_series(1, %s) g""", (rows, rows))
        _blocked_orders_fills(c, rows, with_positions=False)
        _finish(c)
    return time.perf_counter() - t0


def build_full_rows(url: str, rows: int) -> float:
    """The ``full`` shape: audit rows whose opens and closes pair into positions, plus targets, evaluations,
    hourly snapshots and events. Returns seconds."""
    t0 = time.perf_counter()
    n_sym = len(SYMBOLS)
    syms = "ARRAY[" + ",".join(f"'{s}'" for s in SYMBOLS) + "]"
    with psycopg.connect(url, autocommit=True) as c:
        _run_row(c, rows)
        # per symbol the k-th signal (k = g / n_sym) opens when k is even and closes the position when k is odd
        c.execute(f"""INSERT INTO signals (signal_id, run_id, account_id, strategy_name, symbol, timeframe, ts, side,
                          intent, position_side, price, strength, regime, status, context)
                      SELECT g, 'bench-run', 'default', 'momentum', ({syms})[1 + g %% {n_sym}], '1h',
                             '2021-01-01'::timestamptz + make_interval(secs => (g::bigint * 31536000 / %s)),
                             CASE WHEN (g / {n_sym}) %% 2 = 0 THEN 'buy' ELSE 'sell' END,
                             CASE WHEN (g / {n_sym}) %% 2 = 0 THEN 'open' ELSE 'close' END,
                             'long', 100 + (g %% 1000) / 10.0, 0.5, 'bull',
                             CASE WHEN g %% 10 = 0 THEN 'blocked' ELSE 'accepted' END,
                             jsonb_build_object('ema_fast', g %% 97, 'ema_slow', g %% 89)
                      FROM generate_series(1, %s) g""", (rows, rows))
        # position g: opened by order g (fill 1 h after the decision), closed by order g + n_sym
        c.execute(f"""INSERT INTO positions (position_id, run_id, account_id, strategy_name, symbol, side, status, qty,
                          entry_qty, avg_entry_price, avg_exit_price, realized_pnl_usd, fees_usd, opened_at, closed_at,
                          close_reason, entry_signal_id)
                      SELECT o.signal_id, 'bench-run', 'default', 'momentum', o.symbol, 'long', 'closed', 0, 1,
                             o.price, x.price, (x.price - o.price) - (o.price + x.price) * 0.001,
                             (o.price + x.price) * 0.001, o.ts + interval '1 hour', x.ts + interval '1 hour',
                             CASE WHEN x.price > o.price THEN 'tp' ELSE 'sl' END, o.signal_id
                        FROM signals o JOIN signals x ON x.signal_id = o.signal_id + {n_sym}
                       WHERE o.intent = 'open'""")
        _blocked_orders_fills(c, rows, with_positions=True)
        c.execute("""INSERT INTO position_targets (position_id, run_id, ts, tp_price, sl_price, reason)
                     SELECT position_id, run_id, opened_at, avg_entry_price * 1.04, avg_entry_price * 0.98, 'initial'
                       FROM positions""")
        c.execute("""INSERT INTO position_evaluations (position_id, run_id, ts, price, pnl_pct, tp_price, sl_price,
                         hold_minutes, decision, reason)
                     SELECT position_id, run_id, closed_at, avg_exit_price,
                            100 * (avg_exit_price - avg_entry_price) / avg_entry_price,
                            avg_entry_price * 1.04, avg_entry_price * 0.98,
                            extract(epoch FROM closed_at - opened_at) / 60,
                            CASE WHEN close_reason = 'tp' THEN 'exit_tp' ELSE 'exit_sl' END, 'bench'
                       FROM positions""")
        # a snapshot at S covers fills strictly before S: a close at 10:30 counts from the 11:00 snapshot on
        c.execute("""INSERT INTO portfolio_hourly_snapshots (run_id, account_id, ts, cash_usd, positions_value_usd,
                         equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd, net_pnl_daily_usd, open_positions)
                     WITH closes AS (
                         SELECT date_trunc('hour', closed_at) + interval '1 hour' AS ts, sum(realized_pnl_usd) AS r,
                                sum(fees_usd) AS f
                           FROM positions GROUP BY 1),
                     h AS (
                         SELECT gs AS ts, sum(coalesce(c.r, 0)) OVER (ORDER BY gs) AS realized,
                                sum(coalesce(c.f, 0)) OVER (ORDER BY gs) AS fees
                           FROM generate_series('2021-01-01'::timestamptz, '2022-01-01'::timestamptz + interval '2 hours',
                                                interval '1 hour') gs
                           LEFT JOIN closes c ON c.ts = gs)
                     SELECT 'bench-run', 'default', ts, 100000 + realized, 0, 100000 + realized, realized, 0, fees,
                            0, 0 FROM h""")
        c.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                     SELECT gs, 'default', 'risk', CASE WHEN n % 2 = 0 THEN 'breaker_tripped' ELSE 'breaker_reset' END,
                            'warning', jsonb_build_object('breaker', 'daily_drawdown', 'scope', '*',
                                                          'run_id', 'bench-run', 'cause', 'bench drawdown')
                       FROM generate_series('2021-01-05 12:00'::timestamptz, '2021-12-31', interval '5 days')
                            WITH ORDINALITY AS t(gs, n)""")
        c.execute("""INSERT INTO system_events (ts, account_id, component, event_type, severity, payload)
                     SELECT gs, 'default', 'cron', 'cron_run', 'info', jsonb_build_object('task', 'kb-scan')
                       FROM generate_series('2021-01-01'::timestamptz, '2021-12-31', interval '1 hour') gs""")
        _finish(c)
    return time.perf_counter() - t0


def _run_row(c, rows: int) -> None:
    c.execute("""INSERT INTO engine_runs (run_id, account_id, mode, status, params, started_at, finished_at,
                     last_bar_time, bars_processed)
                 VALUES ('bench-run', 'default', 'replay', 'completed', '{}', now(), now(),
                         '2021-01-01'::timestamptz + interval '1 year', %s)""", (rows,))


def _blocked_orders_fills(c, rows: int, *, with_positions: bool) -> None:
    n_sym = len(SYMBOLS)
    pos, join = "NULL", ""
    if with_positions:  # the order's position: its own id for an open, the paired open's for a close
        pos = "p.position_id"
        join = f"LEFT JOIN positions p ON p.position_id = CASE WHEN s.intent = 'open' THEN g ELSE g - {n_sym} END"
    c.execute("""INSERT INTO blocked_signals (signal_id, run_id, account_id, strategy_name, symbol, ts, gate, reason)
                 SELECT signal_id, run_id, account_id, strategy_name, symbol, ts,
                        CASE WHEN signal_id % 30 = 0 THEN 'breaker:daily_drawdown' ELSE 'cooldown' END,
                        'bench reason' FROM signals WHERE status = 'blocked'""")
    c.execute(f"""INSERT INTO order_executions (order_id, client_order_id, run_id, account_id, signal_id, position_id,
                      strategy_name, symbol, side, position_side, intent, qty, notional_usd, decision_price, status,
                      filled_qty, avg_fill_price, submitted_at, updated_at)
                  SELECT g, 'bench-' || g, 'bench-run', 'default', g, {pos}, 'momentum', s.symbol, s.side, 'long',
                         s.intent, 1, s.price, s.price, 'filled', 1, s.price, s.ts, s.ts
                  FROM generate_series(1, %s) g JOIN signals s ON s.signal_id = g {join}""", (rows,))
    c.execute("""INSERT INTO fills (order_id, client_order_id, run_id, account_id, symbol, side, qty, price, fee_usd, ts)
                 SELECT order_id, client_order_id, run_id, account_id, symbol, side, qty, avg_fill_price,
                        avg_fill_price * 0.001, submitted_at + interval '1 hour' FROM order_executions""")


def _finish(c) -> None:
    for seq, tbl, col in (("signals_signal_id_seq", "signals", "signal_id"),
                          ("order_executions_order_id_seq", "order_executions", "order_id"),
                          ("positions_position_id_seq", "positions", "position_id")):
        c.execute(f"SELECT setval('{seq}', greatest(1, (SELECT max({col}) FROM {tbl})))")
    c.execute("VACUUM ANALYZE")


def table_rows(url: str) -> dict:
    with psycopg.connect(url) as c:
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("signals", "blocked_signals", "order_executions", "fills", "positions",
                          "position_evaluations", "position_targets", "portfolio_hourly_snapshots", "system_events")}


# ---- MCP calls ---------------------------------------------------------------------------------------------

def stdio_bench(env: dict, calls: list[tuple[str, dict]], n: int, name: str = "ats-postgres") -> dict:
    """MCP server ``name`` started as .mcp.json starts it (with this interpreter's virtualenv and PYTHONPATH)."""
    import anyio
    from mcp import Client, StdioServerParameters

    decl = json.loads((ROOT / ".mcp.json").read_text())["mcpServers"][name]
    env = {**env, "ATS_VENV": sys.prefix, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    params = StdioServerParameters(command=decl["command"], args=decl["args"], env=env, cwd=str(ROOT))

    async def go():
        async with Client(params) as c:
            for i in range(3):
                r = await c.call_tool(*calls[i % len(calls)])
                if r.is_error:
                    raise RuntimeError(r.content[0].text)
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                await c.call_tool(*calls[i % len(calls)])
                out.append((time.perf_counter() - t0) * 1000)
            return out

    return summary(anyio.run(go))


def inproc_bench(server, calls: list[tuple[str, dict]], n: int) -> dict:
    import anyio
    from mcp import Client

    async def go():
        async with Client(server) as c:
            for i in range(3):
                await c.call_tool(*calls[i % len(calls)])
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                r = await c.call_tool(*calls[i % len(calls)])
                out.append((time.perf_counter() - t0) * 1000)
                if r.is_error:
                    raise RuntimeError(r.content[0].text)
            return out

    return summary(anyio.run(go))


# ---- the tools and their raw SELECTs -------------------------------------------------------------------------

def _raw(c, statements: list[tuple[str, dict]]) -> None:
    for sql, p in statements:
        c.execute(sql, p).fetchall()
    c.rollback()


def investigate_calls() -> list[tuple[str, dict]]:
    return [("investigate_symbol", {"symbol": "BTCUSDT", "since": f"{day}T00:00:00Z", "until": f"{day}T23:59:59Z"})
            for day in DAYS]


def investigate_raw(shape: str):
    """The raw SELECTs of the rows an investigation of one window shows (one per table)."""
    base = [
        "SELECT * FROM signals WHERE run_id = %(r)s AND symbol = %(s)s AND ts BETWEEN %(a)s AND %(b)s ORDER BY ts",
        "SELECT * FROM blocked_signals WHERE run_id = %(r)s AND symbol = %(s)s AND ts BETWEEN %(a)s AND %(b)s ORDER BY ts",
        "SELECT * FROM order_executions WHERE run_id = %(r)s AND symbol = %(s)s AND submitted_at BETWEEN %(a)s AND %(b)s "
        "ORDER BY submitted_at",
        "SELECT * FROM fills WHERE run_id = %(r)s AND symbol = %(s)s AND ts BETWEEN %(a)s AND %(b)s ORDER BY ts",
    ]
    if shape == "full":
        base += [
            "SELECT * FROM positions WHERE run_id = %(r)s AND symbol = %(s)s AND opened_at <= %(b)s "
            "AND (closed_at IS NULL OR closed_at >= %(a)s) ORDER BY opened_at",
            "SELECT e.* FROM position_evaluations e JOIN positions p USING (position_id) WHERE p.run_id = %(r)s "
            "AND p.symbol = %(s)s AND p.opened_at <= %(b)s AND p.closed_at >= %(a)s ORDER BY e.ts",
            "SELECT t.* FROM position_targets t JOIN positions p USING (position_id) WHERE p.run_id = %(r)s "
            "AND p.symbol = %(s)s AND p.opened_at <= %(b)s AND p.closed_at >= %(a)s ORDER BY t.ts",
            "SELECT * FROM system_events WHERE ts BETWEEN %(a)s AND %(b)s ORDER BY ts",
            "SELECT * FROM portfolio_hourly_snapshots WHERE run_id = %(r)s AND ts BETWEEN %(a)s AND %(b)s ORDER BY ts",
        ]

    def raw(c, i):
        a = investigate_calls()[i % len(DAYS)][1]
        p = {"r": "bench-run", "s": "BTCUSDT", "a": a["since"], "b": a["until"]}
        _raw(c, [(sql, p) for sql in base])
    return raw


def pnl_raw(c, i):
    """The snapshot lookups of pnl_windows: the run, last, first and the five window starts."""
    r = "bench-run"
    st = [("SELECT run_id FROM engine_runs WHERE account_id = 'default' ORDER BY started_at DESC LIMIT 1", {}),
          ("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(r)s ORDER BY ts DESC LIMIT 1",
           {"r": r}),
          ("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(r)s ORDER BY ts LIMIT 1", {"r": r})]
    for d in ("1 day", "7 days", "30 days", "182 days"):
        st.append(("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(r)s "
                   "AND ts <= '2022-01-01'::timestamptz - %(d)s::interval ORDER BY ts DESC LIMIT 1", {"r": r, "d": d}))
    _raw(c, st)


def blocked_raw(c, i):
    a = f"{DAYS[i % len(DAYS)]}T00:00:00Z"
    p = {"a": a}
    _raw(c, [("SELECT * FROM blocked_signals WHERE ts >= %(a)s AND ts <= %(a)s::timestamptz + interval '7 days' "
              "ORDER BY ts DESC LIMIT 1000", p),
             ("SELECT gate, reason, strategy_name, symbol, (ts AT TIME ZONE 'UTC')::date, count(*) FROM blocked_signals "
              "WHERE ts >= %(a)s AND ts <= %(a)s::timestamptz + interval '7 days' GROUP BY 1, 2, 3, 4, 5", p)])


def health_raw(c, i):
    r = {"r": "bench-run"}
    _raw(c, [("SELECT * FROM engine_runs ORDER BY started_at DESC LIMIT 10", {}),
             ("SELECT * FROM breaker_states WHERE run_id = %(r)s", r),
             ("SELECT event_type, count(*) FROM system_events WHERE event_type IN ('breaker_tripped', 'breaker_reset') "
              "GROUP BY 1", {}),
             ("SELECT component, event_type, severity, count(*) FROM system_events WHERE severity IN "
              "('warning', 'error', 'critical') AND ts >= '2021-12-31' AND ts <= '2022-01-01' GROUP BY 1, 2, 3", {}),
             ("SELECT * FROM system_events WHERE severity IN ('error', 'critical') ORDER BY ts DESC LIMIT 20", {}),
             ("SELECT * FROM portfolio_hourly_snapshots WHERE run_id = %(r)s ORDER BY ts DESC LIMIT 1", r)])


def daily_raw(c, i):
    d = DAYS[i % len(DAYS)]
    p = {"r": "bench-run", "a": f"{d}T00:00:00Z"}
    _raw(c, [("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(r)s AND ts <= %(a)s "
              "ORDER BY ts DESC LIMIT 1", p),
             ("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(r)s "
              "AND ts <= %(a)s::timestamptz + interval '1 day' ORDER BY ts DESC LIMIT 1", p),
             ("SELECT * FROM positions WHERE run_id = %(r)s AND opened_at < %(a)s::timestamptz + interval '1 day' "
              "AND (closed_at IS NULL OR closed_at >= %(a)s::timestamptz + interval '1 day')", p),
             ("SELECT * FROM positions WHERE run_id = %(r)s AND status = 'closed' AND closed_at >= %(a)s "
              "AND closed_at < %(a)s::timestamptz + interval '1 day' ORDER BY closed_at", p),
             ("SELECT gate, count(*) FROM blocked_signals WHERE run_id = %(r)s AND ts >= %(a)s "
              "AND ts < %(a)s::timestamptz + interval '1 day' GROUP BY gate", p),
             ("SELECT * FROM system_events WHERE event_type = 'breaker_tripped' AND ts >= %(a)s "
              "AND ts < %(a)s::timestamptz + interval '1 day'", p)])


def bench_tools(url: str, shape: str, iterations: int, only: set[str], log) -> dict:
    """Each tool beside its raw SELECTs; returns {tool: {path: summary}} plus the ratios."""
    from ats.forensics import queries as fx
    from ats.forensics.daily import daily_summary
    from ats.portfolio.pnl import pnl_windows

    res: dict = {}
    with psycopg.connect(url, row_factory=dict_row) as c:
        def call(fn):
            def go(i):
                fn(i)
                c.rollback()
            return go

        calls = investigate_calls()
        tools = {
            "investigate": (lambda i: fx.investigate_symbol(c, "BTCUSDT", since=calls[i % len(calls)][1]["since"],
                                                            until=calls[i % len(calls)][1]["until"]),
                            investigate_raw(shape)),
            "portfolio_pnl": (lambda i: pnl_windows(c, "default"), pnl_raw),
            "blocked_signals": (lambda i: fx.blocked_signals(c, f"{DAYS[i % len(DAYS)]}T00:00:00Z",
                                                             until=_plus_days(DAYS[i % len(DAYS)], 7), limit=1000),
                                blocked_raw),
            "health_summary": (lambda i: fx.health_summary(c), health_raw),
            "daily": (lambda i: daily_summary(c, date.fromisoformat(DAYS[i % len(DAYS)])), daily_raw),
        }
        if shape == "audit":
            tools = {"investigate": tools["investigate"]}
        for name, (fn, raw) in tools.items():
            if only and name not in only:
                continue
            log(f"{name}: procedure / raw SELECTs ...")
            proc, base = timed_pair(call(fn), lambda i, raw=raw: raw(c, i), iterations)
            r = {"procedure_psycopg": proc, "baseline_raw_selects_psycopg": base}
            res[name] = r
    if (not only or "investigate" in only) and "investigate" in res:
        from ats.db.connection import readonly_url
        from mcp_servers.postgres import build_server

        server = build_server(readonly_url=readonly_url(url))
        log("investigate: MCP in-process ...")
        res["investigate"]["mcp_inprocess"] = inproc_bench(server, investigate_calls(), iterations)
        server._ats_readonly.close()
        log("investigate: MCP stdio ...")
        env = {"ATS_DATABASE_URL": url, "ATS_LOG_DIR": os.environ["ATS_LOG_DIR"], "ATS_MCP_TOOL_TIMEOUT_MS": "120000",
               "PATH": os.environ.get("PATH", "")}
        res["investigate"]["mcp_stdio"] = stdio_bench(env, investigate_calls(), iterations)
    for r in res.values():
        base = r["baseline_raw_selects_psycopg"]["p50_ms"]
        r["ratio_p50"] = {k: round(v["p50_ms"] / base, 2) for k, v in r.items()
                          if isinstance(v, dict) and "p50_ms" in v and not k.startswith("baseline")}
    return res


def _plus_days(day: str, n: int) -> str:
    from datetime import timedelta

    return (date.fromisoformat(day) + timedelta(days=n)).isoformat() + "T00:00:00Z"


def investigate_window_counts(url: str) -> dict:
    from ats.forensics import queries as fx

    a = investigate_calls()[0][1]
    with psycopg.connect(url, row_factory=dict_row) as c:
        return fx.investigate_symbol(c, "BTCUSDT", since=a["since"], until=a["until"])["counts"]


def report(res: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(res, indent=2))
        return
    print(f"\nshape {res['shape']}, rows: {res['table_rows']}")
    if res.get("investigate_window_counts"):
        print(f"investigate_symbol window (1 day, BTCUSDT) counts: {res['investigate_window_counts']}")
    print(f"\ntarget: every tool p50 <= {TARGET_RATIO:.1f}x its raw SELECTs")
    for tool, r in res["tools"].items():
        print(f"\n{tool}:")
        print(f"  {'path':<32} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'x raw (p50)':>12}")
        for k, v in r.items():
            if k == "ratio_p50":
                continue
            ratio = r["ratio_p50"].get(k)
            mark = "" if ratio is None else f"{ratio:>10.2f}x {'ok' if ratio <= TARGET_RATIO else 'OVER'}"
            print(f"  {k:<32} {v['p50_ms']:>9.2f} {v['p95_ms']:>9.2f} {v['mean_ms']:>9.2f} {mark}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--shape", choices=("full", "audit"), default="full")
    ap.add_argument("--admin-url", default=os.environ.get("ATS_BENCH_ADMIN_URL"))
    ap.add_argument("--pgdata", help="embedded server data directory to keep (default: a temp directory)")
    ap.add_argument("--reuse", action="store_true", help="reuse the database built earlier with the same rows/shape")
    ap.add_argument("--only", default="", help="comma-separated tools: investigate,portfolio_pnl,blocked_signals,"
                                               "health_summary,daily")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    res = run(args.rows, args.iterations, args.shape, admin_url=args.admin_url, pgdata=args.pgdata,
              reuse=args.reuse, only={x for x in args.only.split(",") if x}, log=log)
    report(res, args.json)
    return 0


def run(rows: int, iterations: int, shape: str, *, admin_url: str | None = None, pgdata: str | None = None,
        reuse: bool = False, only: set[str] = frozenset(), log=print) -> dict:
    """Build (or reuse) the data and measure; returns the results dict (bench/mcp.py calls this too)."""
    from ats.db.connection import with_dbname
    from ats.db.migrate import migrate

    tmp = Path(tempfile.mkdtemp(prefix="ats-bench-forensics-"))
    srv = None
    admin = admin_url
    if not admin:
        import pgserver

        srv = pgserver.get_server(Path(pgdata) if pgdata else tmp / "pg", cleanup_mode="stop")
        admin = srv.get_uri()
    dbname = f"ats_bench_forensics_{shape}_{rows}" if reuse else f"ats_bench_forensics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None
        if not exists:
            c.execute(f'CREATE DATABASE "{dbname}"')
    url = with_dbname(admin, dbname)
    os.environ["ATS_DATABASE_URL"] = url
    os.environ.setdefault("ATS_LOG_DIR", str(tmp / "logs"))
    os.environ["ATS_MCP_TOOL_TIMEOUT_MS"] = "120000"
    res: dict = {"rows": rows, "shape": shape, "iterations": iterations}
    try:
        migrate(url)  # applies any new migration (indexes) to a reused database too
        with psycopg.connect(url, autocommit=True) as c:
            built = c.execute("SELECT 1 FROM engine_runs WHERE run_id = 'bench-run'").fetchone() is not None
            if built:
                c.execute("ANALYZE")
        if not built:
            log(f"building {rows:,} signals / order_executions / fills ({shape}) ...")
            res["build_s"] = round((build_full_rows if shape == "full" else build_audit_rows)(url, rows), 1)
        res["table_rows"] = table_rows(url)
        if not only or "investigate" in only:
            res["investigate_window_counts"] = investigate_window_counts(url)
        res["tools"] = bench_tools(url, shape, iterations, set(only), log)
    finally:
        if not reuse:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    sys.exit(main())
