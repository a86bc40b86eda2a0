"""`ats demo`: the main job on a fresh machine.

1. Database up (embedded PostgreSQL unless ATS_DATABASE_URL) and migrated.
2. Real candles loaded: every ``binance/*-1h.json`` file under ``--data-dir`` (default: ats.paths.market_data_dir(),
   i.e. ``../shared/data/ohlcv`` next to the project, when present); without local files, a Bybit public-API
   backfill of the same symbols (USDT linear perpetuals, ``ats.market_data.backfill``), with a clear message
   when offline. Feed anomalies of the loaded series are scanned (``ats.market_data.anomalies``) so the
   feed-anomaly circuit breaker sees them.
3. A replay of Dec 2020 - Jul 2021 (1h candles) for the crypto symbols through every enabled strategy (buy
   gate on: the book of eleven on a fresh database, in book order) with the paper broker, with a progress bar. Idempotent: the run id is derived from the arguments,
   so re-running the demo on the same database reuses the finished run (or resumes an interrupted one);
   ``--fresh`` starts a new run id instead. Never duplicates.
4. A summary: equity, P&L windows (from snapshots), trades, blocked signals by reason, circuit-breaker trips,
   the breakers tripped during the 2021-05-19 crash, funding paid by the perp shorts and, per strategy with
   microstructure conditions (the book's growth_potential, momentum_short, btc_trend_short), how many of its
   signals were blocked for lack of that data (``microstructure:no_data``: the shared data set has candles only).
   Everything stays queryable in PostgreSQL.
"""

from __future__ import annotations

CLI_ORDER = 1

import argparse
import json
import time
from pathlib import Path

from .db import connection, migrate as mig
from .errors import AtsError

DEMO_START = "2020-12-01"
DEMO_END = "2021-07-18"
DEMO_TIMEFRAME = "1h"
CRASH_DAY = "2021-05-19"
#: symbols fetched from Bybit when no local files exist (the shared data set's 1h symbols)
DEMO_SYMBOLS = ("ADAUSDT", "AVAXUSDT", "BTCUSDT", "DOTUSDT", "ETHUSDT", "LINKUSDT", "LTCUSDT", "MATICUSDT",
                "SOLUSDT", "XRPUSDT")


def _demo_files(data_dir: Path | None) -> list[Path]:
    if data_dir is None or not Path(data_dir).is_dir():
        return []
    d = Path(data_dir)
    files = sorted(d.glob("binance/*-1h.json")) or sorted(d.glob("*-1h.json"))
    return files


def _load_candles(url: str, data_dir: Path | None, say, *, start: str = DEMO_START, end: str = DEMO_END,
                  backfill_options: dict | None = None) -> dict:
    """Load local 1h crypto files, or backfill from Bybit; returns {source, symbols, rows_inserted, files}."""
    from .market_data.loaders import load_paths

    files = _demo_files(data_dir)
    if files:
        res = load_paths(url, files)
        say(f"candles: {len(files)} files from {Path(files[0]).parent} "
            f"({sum(r.rows_in for r in res):,} rows, {sum(r.rows_inserted for r in res):,} new)")
        return {"source": str(Path(files[0]).parent), "symbols": sorted({r.symbol for r in res}),
                "rows_inserted": sum(r.rows_inserted for r in res), "files": len(files)}
    from .market_data.backfill import backfill

    say(f"candles: no local files under {data_dir}; fetching {DEMO_TIMEFRAME} candles from the Bybit public API "
        "(USDT perpetuals) ...")
    got, inserted, missing = [], 0, []
    with connection.connect(url) as conn:
        for sym in DEMO_SYMBOLS:
            try:
                r = backfill(conn, sym, DEMO_TIMEFRAME, start, end, source="bybit", category="linear",
                             **{"retries": 2, "backoff": 1.0, **(backfill_options or {})})
            except AtsError as exc:
                if not got:
                    raise AtsError(f"no local candle files under {data_dir} and the Bybit public API is not reachable "
                                   f"({exc}); run with --data-dir pointing at a directory of freqtrade "
                                   "*-1h.json files (e.g. ../shared/data/ohlcv) or with network access") from exc
                missing.append(sym)
                continue
            if r.rows_fetched:
                got.append(sym)
                inserted += r.rows_inserted
            else:
                missing.append(sym)
    if not got:
        raise AtsError("the Bybit backfill returned no candles for the demo window; pass --data-dir")
    say(f"candles: {len(got)} symbols from Bybit ({inserted:,} new rows)" +
        (f"; none for {', '.join(missing)}" if missing else ""))
    return {"source": "bybit", "symbols": got, "rows_inserted": inserted, "files": 0}


def _enabled_strategies(conn, account_id: str) -> list[str]:
    """The account's strategies with the buy gate on: the book's in book order, then any other by name."""
    from .strategies import BOOK

    rows = conn.execute("SELECT strategy_name FROM strategy_configurations WHERE account_id=%s AND buy_enabled "
                        "ORDER BY strategy_name", (account_id,)).fetchall()
    names = [r["strategy_name"] for r in rows]
    return sorted(names, key=lambda n: (BOOK.index(n) if n in BOOK else len(BOOK), n))


def micro_notes(s: dict) -> list[dict]:
    """Per strategy of the run with microstructure conditions: what it needs and how many of its signals the
    microstructure gate blocked (no_data = the demo's database lacks that data)."""
    from .strategies import get_strategy

    out = []
    for n in s.get("strategies") or []:
        st = get_strategy(n)
        if st.micro_gates:
            b = (s.get("microstructure_blocked") or {}).get(n, {})
            out.append({"strategy": n, "needs": list(st.micro_gates), "no_data": b.get("no_data", 0),
                        "condition": b.get("condition", 0)})
    return out


def crash_day_trips(conn, run_id: str, day: str = CRASH_DAY) -> list[dict]:
    """Breaker trips of ``run_id`` on UTC day ``day`` (system_events rows), oldest first."""
    rows = conn.execute(
        """SELECT ts, payload->>'breaker' AS breaker, coalesce(symbol, '*') AS scope, payload->>'cause' AS cause
             FROM system_events WHERE component='risk' AND event_type='breaker_tripped'
              AND payload->>'run_id' = %s AND ts >= %s::date AND ts < %s::date + 1 ORDER BY ts, event_id""",
        (run_id, day, day)).fetchall()
    return [{"ts": r["ts"].isoformat(), "breaker": r["breaker"], "scope": r["scope"], "cause": r["cause"]} for r in rows]


def prepare_demo(url: str | None = None, *, data_dir=None, progress: bool = True, fresh: bool = False,
                 account_id: str = "default", start: str = DEMO_START, end: str = DEMO_END,
                 scan_anomalies: bool = True, say=None, backfill_options: dict | None = None) -> dict:
    """Bring the database to the demo state and return the demo summary (JSON-ready dict).

    ``url``: DSN (default: ats.db.database_url(), starting the embedded server if needed); ``data_dir``: a
    directory with ``binance/*-1h.json`` (default ats.paths.market_data_dir(); Bybit backfill when absent).
    Keys: run_id, state ('new' | 'resume' | 'completed' = reused), database, candles, strategies, symbols, the
    run summary (equity, return_pct, max_drawdown_pct, sharpe, trades, win_rate, blocked_by_gate,
    breaker_trips, breaker_trips_by_day, pnl), crash_day and crash_day_trips, timings (seconds).
    ``backfill_options`` go to ats.market_data.backfill.backfill (client, retries, backoff, sleep) when candles are
    fetched from Bybit. Raises BusyError when another heavy run holds the lock, AtsError when no candles can be
    loaded (offline and no local files).
    """
    from .engine.replay import run_replay
    from .engine.runs import heavy_lock, make_spec
    from .paths import market_data_dir
    from .risk.settings import seed_settings
    from .strategies import seed_defaults

    say = say or (lambda *_: None)
    t0 = time.monotonic()
    url = url or connection.database_url()
    applied = mig.migrate(url)
    info = connection.server_info(url)
    say(f"database: {info['mode']} PostgreSQL {info['server_version']} ({info['dsn']}), "
        f"migration level {mig.status(url)['level']:04d}" + (f", {len(applied)} applied now" if applied else ""))
    data_dir = Path(data_dir) if data_dir is not None else market_data_dir()
    timings = {}
    with heavy_lock(url, what="demo"):
        t = time.monotonic()
        candles = _load_candles(url, data_dir, say, start=start, end=end, backfill_options=backfill_options)
        timings["load_s"] = round(time.monotonic() - t, 2)
        with connection.connect(url) as conn:
            seed_defaults(conn, account_id=account_id)
            seed_settings(conn, account_id=account_id)
            conn.commit()
            strategies = _enabled_strategies(conn, account_id)
            if scan_anomalies:
                from .market_data.anomalies import detect_anomalies

                t = time.monotonic()
                new = detect_anomalies(conn, symbols=candles["symbols"], timeframes=[DEMO_TIMEFRAME], as_of=end)
                conn.commit()
                timings["anomaly_scan_s"] = round(time.monotonic() - t, 2)
                n_all = conn.execute("SELECT count(*) AS n FROM feed_anomalies WHERE timeframe=%s AND symbol = ANY(%s)",
                                     (DEMO_TIMEFRAME, candles["symbols"])).fetchone()["n"]
                say(f"feed anomalies: {n_all} known for these series ({len(new)} new)")
        if not strategies:
            raise AtsError(f"no strategy of account {account_id!r} has its buy gate on (ats config strategy list)")
        spec = make_spec("replay", strategies=strategies, symbols=candles["symbols"], timeframe=DEMO_TIMEFRAME,
                         start=start, end=end, account_id=account_id,
                         tag=f"demo-fresh-{time.time_ns()}" if fresh else "demo")
        say(f"replay: {start} .. {end}, {len(candles['symbols'])} symbols x {len(strategies)} strategies "
            f"({', '.join(strategies)}), paper broker")
        t = time.monotonic()
        res = run_replay(spec, url=url, progress=progress, lock=False, commit_every=250, progress_desc="demo replay")
        timings["replay_s"] = round(time.monotonic() - t, 2)
    with connection.connect(url) as conn:
        trips = crash_day_trips(conn, res["run_id"])
    timings["total_s"] = round(time.monotonic() - t0, 2)
    res.pop("params", None)
    return {**res, "database": info, "candles": candles, "strategies": strategies,
            "symbols": list(candles["symbols"]), "crash_day": CRASH_DAY, "crash_day_trips": trips,
            "timings": timings}


def format_demo(s: dict) -> str:
    """The demo summary as text."""
    from .engine.summary import format_summary

    state = {"new": "new run", "resume": "resumed an interrupted run", "completed": "reused the finished run"}
    out = [format_summary(s, title=f"== ATS demo: replay {s['run_id']} ({state.get(s['state'], s['state'])}) ==")]
    trips = s["crash_day_trips"]
    by = {}
    for t in trips:
        by.setdefault(t["breaker"], []).append(t)
    for m in micro_notes(s):
        out.append(f"microstructure: {m['strategy']} needs {', '.join(m['needs'])}: {m['no_data']} signal(s) blocked "
                   f"(microstructure:no_data)" + (f", {m['condition']} by its conditions" if m["condition"] else "")
                   + (" - load funding / open-interest data (ats data backfill --kind ...) to trade it"
                      if m["no_data"] else ""))
    out.append(f"{s['crash_day']} crash: {len(trips)} circuit-breaker trip(s)" +
               (" - " + ", ".join(f"{b} x{len(v)}" for b, v in by.items()) if trips else ""))
    for b, v in by.items():
        first = v[0]
        scopes = sorted({t["scope"] for t in v})
        out.append(f"  {b:<19} first {first['ts'][11:16]} UTC: {first['cause']}"
                   + (f"  [{', '.join(scopes)}]" if scopes != ["*"] else ""))
    tm = s["timings"]
    out.append(f"timings: load {tm.get('load_s')} s, anomaly scan {tm.get('anomaly_scan_s', 0)} s, replay "
               f"{tm.get('replay_s')} s, total {tm.get('total_s')} s")
    out.append("explore: ats pnl | ats engine show " + s["run_id"] + " | ats risk breakers | "
               "ats config strategy list | SQL on signals, blocked_signals, order_executions, fills, positions, "
               "position_evaluations, portfolio_hourly_snapshots, system_events")
    return "\n".join(out)


def run_demo(args) -> int:
    """Run the demo; returns the exit code."""
    say = (lambda *_: None) if args.json else (lambda m: print(m, flush=True))
    s = prepare_demo(None, data_dir=args.data_dir, progress=not args.no_progress and not args.json,
                     fresh=args.fresh, say=say)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print(format_demo(s))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats demo`."""
    p = sub.add_parser("demo", help="the main job: database up, real candles, replay, summary",
                       description="Database up and migrated, real candles loaded (--data-dir, else Bybit), a replay "
                                   "of Dec 2020 - Jul 2021 through every enabled strategy with the paper broker, and "
                                   "a summary (equity, P&L windows, trades, blocked signals, breaker trips).")
    p.add_argument("--data-dir", default=None,
                   help="directory with binance/*-1h.json candle files (default: ../shared/data/ohlcv when present, "
                        "else a Bybit public-API backfill)")
    p.add_argument("--fresh", action="store_true", help="start a new run id instead of reusing the finished demo run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_demo)
