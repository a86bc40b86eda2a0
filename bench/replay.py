"""Replay benchmark (run by hand, not a test): ATS's full decision path with the audit trail persisted, side by
side in one run with backtesting.py on the same SMA(20)/SMA(50) cross over the same BTC 5m file.

* backtesting.py (0.6, the ``bench`` extra): the classic ``SmaCross`` (``crossover`` -> close, then buy / sell),
  ``Backtest.run()`` timed; nothing persisted. Baseline.
* ats (persisted): ``ats.engine.replay.run_replay`` of strategy ``sma_cross`` (long on the golden cross, short
  on the death cross, each cross closing the other side) on BTCUSDT 5m through the whole decision path - regime,
  signals, buy/sell gates as of each bar, risk limits and every circuit breaker, paper broker (next-open fills,
  slippage, fees), positions, exit checks on every bar, hourly snapshots - with every row written to PostgreSQL
  (signals, orders, fills, positions, position_evaluations, position_targets, snapshots, events, checkpoint).
  Timed from the run call to its return (reading candles, computing indicators and the summary included).
* ats (memory): the same engine into an in-memory sink (no persistence), for reference; timed with its candle
  read and indicator set-up, and the decision loop alone (comparable to ``Backtest.run()``, which gets a ready
  DataFrame).

* lesson retrieval (issue 15): the in-memory run once with the lessons in force (the 0140 seeds: every entry
  decision builds its TradeContext and consults the LessonBook) and once without (an empty book), in the same
  process; per entry decision (``entries.on_entry_signal``) the wall time is taken, and p50 / p95 of both runs and
  of the consultation alone (TradeContext + ``LessonBook.consult``) are printed. Target: retrieval adds <= 5 ms
  p95 per entry decision.

Breakers and risk limits run on every bar, but their thresholds are set permissive for the benchmark account
(velocity 100 %, market volatility 10,000 %, no consecutive-loss limit, daily drawdown 100 %, max 100 % of equity
per position) so both engines take the same crosses; trade counts are printed side by side.

* CPU seconds of the persisted replay: this process (engine + writer thread, ``time.process_time``) and the
  embedded PostgreSQL (postmaster + exited backends, /proc): comparable across runs when the machine is loaded.
* memory: peak RSS of the bench process (``resource.getrusage``; the backtesting.py run, both ATS replays and
  their candles included; PostgreSQL's own processes are not counted). ``--symbols 10`` also replays 10 symbols
  of 5m bars (about 657,000 bars) with the audit trail persisted in a child process and prints that child's peak
  RSS against the 500 MB target. ../shared/data has only 4 real 5m series (AVAX, BTC, ETH, SOL): symbols 5..10
  are those same real series loaded again under other names (``BTC2USDT``, ...), so the memory and the work are
  those of 10 real series.
* ``--profile FILE``: cProfile of one persisted replay (the engine thread; the top functions by own time are
  printed, the stats written to FILE) plus where the writer's time went (server COPY per table, commit).
* ``--repeat N``: the persisted and in-memory replays N times each (fresh run ids), best time reported - the
  machine is shared, so run it a few times and quote the best.

Usage:  .venv/bin/python bench/replay.py [--data-dir DIR] [--admin-url DSN] [--commit-every N] [--repeat N]
                                         [--symbols 10] [--profile FILE]
Without --admin-url a temporary embedded PostgreSQL (pgserver) is started and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from ats.db.connection import with_dbname
from ats.db.migrate import migrate
from ats.paths import market_data_dir

PERMISSIVE = {"breaker.velocity_pct": 100.0, "breaker.market_vol_annual_pct": 10_000.0,
              "breaker.consecutive_losses": 0, "breaker.daily_drawdown_pct": 100.0,
              "risk.max_allocation_pct": 100.0, "risk.max_position_usd": 1e9, "risk.kelly_min_trades": 10 ** 9,
              "broker.max_slippage_bps": 10_000.0}
TARGET_X = 2.0       # persisted replay vs backtesting.py (issue 18)
RSS_TARGET_MB = 500  # 10-symbol 5m replay (issue 18)


def run_backtesting_py(path: Path) -> dict:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    rows = json.loads(path.read_text())
    df = pd.DataFrame(rows, columns=["t", "Open", "High", "Low", "Close", "Volume"])
    df.index = pd.to_datetime(df.pop("t"), unit="ms", utc=True)

    class SmaCross(Strategy):
        n1, n2 = 20, 50

        def init(self):
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self):
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, SmaCross, cash=10_000_000, commission=0.001, finalize_trades=True)
        t = time.perf_counter()
        stats = bt.run()
        secs = time.perf_counter() - t
    return {"bars": len(df), "seconds": secs, "trades": int(stats["# Trades"]), "return_pct": float(stats["Return [%]"])}


def setup_db(admin: str, path: Path, *, url: str | None = None, files: list | None = None
             ) -> tuple[str, str, tuple[str, str]]:
    """A migrated scratch database with ``files`` (default ``[path]``) loaded and the permissive settings."""
    from ats.db import config_store as cs
    from ats.market_data.loaders import load_paths

    name = None
    if url is None:
        name = f"ats_bench_replay_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        url = with_dbname(admin, name)
    migrate(url)
    load_paths(url, files or [path])
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        cs.upsert_strategy(conn, "sma_cross", params={}, effective_from=epoch, watchlist_enabled=True,
                           buy_enabled=True, sell_enabled=True)
        for k, v in PERMISSIVE.items():
            cs.set_setting(conn, k, v, effective_from=epoch)
        lo, hi = conn.execute("SELECT min(open_time) AS lo, max(open_time) AS hi FROM candles WHERE symbol = %s",
                              (path.name.split("_")[0] + "USDT",)).fetchone().values()
        conn.commit()
    return name, url, (lo.isoformat(), (hi + pd.Timedelta(minutes=5)).isoformat())


ROW_COUNTS = """SELECT (SELECT count(*) FROM signals WHERE run_id = %(r)s) AS signals,
                        (SELECT count(*) FROM order_executions WHERE run_id = %(r)s) AS orders,
                        (SELECT count(*) FROM fills WHERE run_id = %(r)s) AS fills,
                        (SELECT count(*) FROM positions WHERE run_id = %(r)s) AS positions,
                        (SELECT count(*) FROM position_evaluations WHERE run_id = %(r)s) AS evaluations,
                        (SELECT count(*) FROM position_targets WHERE run_id = %(r)s) AS targets,
                        (SELECT count(*) FROM portfolio_hourly_snapshots WHERE run_id = %(r)s) AS snapshots,
                        (SELECT count(*) FROM system_events) AS events_all_runs"""

PG_DATA: Path | None = None  # data directory of the embedded server (its CPU time is read from /proc)


def server_cpu_s() -> float | None:
    """CPU seconds (user + system) of the embedded PostgreSQL so far: the postmaster plus every backend that has
    exited (Linux /proc; None with --admin-url or elsewhere). A backend's time counts once it has exited."""
    if PG_DATA is None:
        return None
    try:
        pid = int((PG_DATA / "postmaster.pid").read_text().split()[0])
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_persisted(url: str, window: tuple[str, str], commit_every: int, symbols=("BTCUSDT",), tag: str = "") -> dict:
    """One ``run_replay`` of sma_cross with the audit trail persisted, timed from the call to its return; also the
    CPU seconds of this process (engine + writer thread) and of PostgreSQL during it - load-independent figures."""
    from ats.engine.replay import run_replay
    from ats.engine.runs import make_spec, resolve

    spec = make_spec("replay", strategies=["sma_cross"], symbols=list(symbols), timeframe="5m", start=window[0],
                     end=window[1], tag=tag)
    s0 = server_cpu_s()
    c0 = time.process_time()
    t = time.perf_counter()
    res = run_replay(spec, url=url, commit_every=commit_every)
    secs = time.perf_counter() - t
    cpu = time.process_time() - c0
    time.sleep(0.3)  # let the postmaster reap the run's backends (their CPU is added when they exit)
    s1 = server_cpu_s()
    with psycopg.connect(url, row_factory=dict_row) as conn:
        spec = resolve(conn, spec)  # the run id includes the account's starting cash, as run_replay resolves it
        rows = conn.execute(ROW_COUNTS, {"r": spec.run_id}).fetchone()
    return {"bars": res["bars_processed"], "seconds": secs, "trades": res["trades"], "return_pct": res["return_pct"],
            "rows": rows, "run_id": spec.run_id, "engine_cpu_s": cpu,
            "server_cpu_s": None if s0 is None or s1 is None else s1 - s0}


def run_memory(url: str, window: tuple[str, str], tag: str) -> tuple[dict, dict]:
    """The same replay into a MemorySink: (with candle read and set-up, decision loop alone)."""
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import make_spec, resolve
    from ats.engine.sink import MemorySink

    with psycopg.connect(url, row_factory=dict_row) as conn:
        sp = resolve(conn, make_spec("replay", strategies=["sma_cross"], symbols=["BTCUSDT"], timeframe="5m",
                                     start=window[0], end=window[1], tag=tag))
        t = time.perf_counter()
        feed = ReplayFeed.load(conn, sp.symbols, "5m", sp.start, sp.end)
        eng = Engine(conn, sp, sink=MemorySink(sp.run_id, sp.account_id), feed=feed)
        t_loop = time.perf_counter()
        eng.run()
        end = time.perf_counter()
        conn.rollback()
    return ({"bars": eng.bars_done, "seconds": end - t, "trades": eng.stats["closed_trades"]},
            {"bars": eng.bars_done, "seconds": end - t_loop, "trades": eng.stats["closed_trades"]})


def run_ats(url: str, window: tuple[str, str], commit_every: int, repeat: int = 1):
    """Persisted and in-memory replays, ``repeat`` times each (fresh run ids), the best of each kept."""
    persisted = memory = loop = None
    for n in range(max(1, repeat)):
        p = run_persisted(url, window, commit_every, tag="" if n == 0 else f"repeat-{n}")
        m, lo = run_memory(url, window, tag=f"memory-{n}")
        persisted = p if persisted is None or p["seconds"] < persisted["seconds"] else persisted
        memory = m if memory is None or m["seconds"] < memory["seconds"] else memory
        loop = lo if loop is None or lo["seconds"] < loop["seconds"] else loop
    lessons = run_lessons(url, window)
    return persisted, memory, loop, lessons


def profile_persisted(url: str, window: tuple[str, str], commit_every: int, out: Path) -> dict:
    """cProfile of one persisted replay (engine thread) and the writer's time per table (wall s, server side)."""
    import cProfile
    import pstats
    from collections import Counter

    from ats.engine import sink as S

    spent: Counter = Counter()
    real_copy, real_orders, real_batch = S._copy, S._insert_orders, S.write_batch

    def copy(cur, table, lines):
        t0 = time.perf_counter()
        real_copy(cur, table, lines)
        spent[f"COPY {table}"] += time.perf_counter() - t0

    def orders(cur, o):
        t0 = time.perf_counter()
        real_orders(cur, o)
        spent["COPY + INSERT order_executions"] += time.perf_counter() - t0

    def batch(conn, b):
        t0 = time.perf_counter()
        real_batch(conn, b)
        spent["write_batch (all, incl. COMMIT)"] += time.perf_counter() - t0
        spent["batches"] += 1

    S._copy, S._insert_orders, S.write_batch = copy, orders, batch
    pr = cProfile.Profile()
    try:
        pr.enable()
        r = run_persisted(url, window, commit_every, tag="profile")
        pr.disable()
    finally:
        S._copy, S._insert_orders, S.write_batch = real_copy, real_orders, real_batch
    pr.dump_stats(str(out))
    print(f"cProfile of one persisted replay ({r['seconds']:.2f} s under the profiler), engine thread, by own time:")
    pstats.Stats(pr).sort_stats("tottime").print_stats(22)
    print("background writer (wall s; it waits on the server, so this is PostgreSQL's time):")
    for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<40} {v:>8.3f}" if k != "batches" else f"  {k:<40} {int(v):>8}")
    return dict(spent)


def multi_symbol(admin: str, data_dir: Path, n: int, commit_every: int) -> dict:
    """Replay ``n`` symbols of 5m bars, persisted, in a child process; its peak RSS (resource.RUSAGE_CHILDREN)."""
    real = sorted((data_dir / "binance").glob("*_USDT-5m.json"))
    if not real:
        raise SystemExit(f"no 5m files in {data_dir / 'binance'}")
    tmp = Path(tempfile.mkdtemp(prefix="ats-bench-multi-"))
    try:
        files = []
        for k in range(n):
            src = real[k % len(real)]
            base = src.name.split("_")[0]
            name = base if k < len(real) else f"{base}{k // len(real) + 1}"
            dst = tmp / "binance" / f"{name}_USDT-5m.json"  # the parent names the source, as in ../shared/data
            dst.parent.mkdir(exist_ok=True)
            dst.symlink_to(src.resolve())
            files.append(dst)
        name_db = f"ats_bench_multi_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name_db}"')
        url = with_dbname(admin, name_db)
        try:
            _, _, window = setup_db(admin, files[0], url=url, files=files)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            syms = [f.name.split("_")[0] + "USDT" for f in files]
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", url, window[0], window[1],
                                   str(commit_every), ",".join(syms)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"multi-symbol child failed: {proc.stderr[-2000:]}")
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["peak_rss_mb"] = peak_kb / 1024 if peak_kb > before else float("nan")
            res["symbols"] = syms
            return res
        finally:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name_db}" WITH (FORCE)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _child(argv: list[str]) -> int:
    url, lo, hi, commit_every, syms = argv
    r = run_persisted(url, (lo, hi), int(commit_every), symbols=syms.split(","))
    r["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(r, default=str))
    return 0


def _pct(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(xs, q)) if xs else float("nan")


def run_lessons(url: str, window: tuple[str, str]) -> dict:
    """The in-memory replay with and without lesson retrieval; per-entry-decision times (ms)."""
    from ats.engine import core, entries
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import make_spec, resolve
    from ats.engine.sink import MemorySink
    from ats.knowledge.lessons import LessonBook

    real_entry, real_consult = entries.on_entry_signal, LessonBook.consult
    out = {}
    for label, with_lessons in (("with", True), ("without", False)):
        times, consults = [], []

        def timed_entry(*a, **kw):
            t0 = time.perf_counter()
            real_entry(*a, **kw)
            times.append((time.perf_counter() - t0) * 1000)

        def timed_consult(self, ctx):
            t0 = time.perf_counter()
            r = real_consult(self, ctx)
            consults.append((time.perf_counter() - t0) * 1000)
            return r

        entries.on_entry_signal, LessonBook.consult = timed_entry, timed_consult
        try:
            with psycopg.connect(url, row_factory=dict_row) as conn:
                sp = resolve(conn, make_spec("replay", strategies=["sma_cross"], symbols=["BTCUSDT"], timeframe="5m",
                                             start=window[0], end=window[1], tag=f"lessons-{label}"))
                feed = ReplayFeed.load(conn, sp.symbols, "5m", sp.start, sp.end)
                eng = core.Engine(conn, sp, sink=MemorySink(sp.run_id, sp.account_id), feed=feed)
                if not with_lessons:
                    eng.lessons.book = LessonBook([])
                n_lessons = len(eng.lessons.book.lessons)
                t = time.perf_counter()
                eng.run()
                secs = time.perf_counter() - t
                conn.rollback()
        finally:
            entries.on_entry_signal, LessonBook.consult = real_entry, real_consult
        out[label] = {"lessons": n_lessons, "seconds": secs, "bars": eng.bars_done, "entries": len(times),
                      "trades": eng.stats["closed_trades"], "p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95),
                      "consult_p95_ms": _pct(consults, 95), "consult_max_ms": max(consults) if consults else 0.0}
    out["added_p95_ms"] = out["with"]["p95_ms"] - out["without"]["p95_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=market_data_dir(), help="OHLCV directory (default %(default)s)")
    ap.add_argument("--admin-url", default=os.environ.get("ATS_BENCH_ADMIN_URL"),
                    help="admin DSN of a PostgreSQL server for a scratch database (default: embedded)")
    ap.add_argument("--commit-every", type=int, default=2000, help="decision steps per committed batch (default 2000)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--repeat", type=int, default=1, help="replays of each kind, best kept (default 1)")
    ap.add_argument("--symbols", type=int, default=0,
                    help="also replay this many 5m symbols (10 = ~657,000 bars) in a child; print its peak RSS")
    ap.add_argument("--profile", type=Path, help="cProfile one persisted replay into this file and print the top")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        return _child(argv[1:])
    args = ap.parse_args(argv)
    path = (args.data_dir / "binance" / "BTC_USDT-5m.json").resolve()
    if "holdout" in path.parts or not path.is_file():
        print(f"need {path} (not from the holdout set)", file=sys.stderr)
        return 1
    try:
        import backtesting  # noqa: F401
    except ImportError:
        print("backtesting.py is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    tmp = srv = None
    admin = args.admin_url
    if not admin:
        import pgserver

        global PG_DATA
        tmp = tempfile.mkdtemp(prefix="ats-bench-pg-")
        PG_DATA = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srv = pgserver.get_server(tmp, cleanup_mode="delete")
        admin = srv.get_uri()
    name = None
    try:
        base = run_backtesting_py(path)
        name, url, window = setup_db(admin, path)
        persisted, memory, loop, lessons = run_ats(url, window, args.commit_every, args.repeat)
        prof = profile_persisted(url, window, args.commit_every, args.profile) if args.profile else None
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        multi = multi_symbol(admin, args.data_dir, args.symbols, args.commit_every) if args.symbols else None
    finally:
        if name:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if srv is not None:
            srv.cleanup()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"file": str(path), "backtesting_py": base, "ats_persisted": persisted, "ats_memory": memory,
           "ats_loop_only": loop, "lesson_retrieval": lessons, "peak_rss_mb": peak_mb, "multi_symbol": multi,
           "writer_profile": prof, "repeat": args.repeat}
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"SMA(20)/SMA(50) cross on {path.name}: {base['bars']:,} bars")
    print(f"{'engine':<34} {'seconds':>8} {'bars/s':>10} {'vs bt.py':>9} {'trades':>7}")
    for label, r in (("backtesting.py 0.6 (no persistence)", base), ("ats, audit trail persisted", persisted),
                     ("ats, in-memory sink", memory), ("ats, decision loop only (memory)", loop)):
        bps = r["bars"] / r["seconds"]
        print(f"{label:<34} {r['seconds']:>8.2f} {bps:>10,.0f} {bps / (base['bars'] / base['seconds']):>8.2f}x "
              f"{r['trades']:>7}")
    bt_bps = base["bars"] / base["seconds"]
    pbps = persisted["bars"] / persisted["seconds"]
    print(f"target: persisted >= {TARGET_X:.1f}x backtesting.py ({TARGET_X * bt_bps:,.0f} bars/s); today "
          f"{pbps / bt_bps:.2f}x ({pbps:,.0f} bars/s)" + (f", best of {args.repeat}" if args.repeat > 1 else ""))
    if persisted.get("server_cpu_s") is not None:
        print(f"persisted replay, CPU seconds (independent of the machine's load): engine process "
              f"{persisted['engine_cpu_s']:.2f} s + PostgreSQL {persisted['server_cpu_s']:.2f} s; backtesting.py's run "
              f"is CPU-bound: {base['seconds']:.2f} s wall")
    print("rows persisted by ats: " + ", ".join(f"{k} {v:,}" for k, v in persisted["rows"].items()))
    print(f"peak RSS of this process: {peak_mb:,.0f} MB (backtesting.py + every replay above; PostgreSQL not counted)")
    if multi is not None:
        mbps = multi["bars"] / multi["seconds"]
        print(f"{len(multi['symbols'])}-symbol 5m replay, persisted (child process): {multi['bars']:,} bars in "
              f"{multi['seconds']:.2f} s ({mbps:,.0f} bars/s), {multi['trades']} trades; peak RSS "
              f"{multi['self_peak_rss_mb']:,.0f} MB (target < {RSS_TARGET_MB} MB)")
    print(f"lesson retrieval (in-memory replay, same run; target <= 5 ms added p95 per entry decision):")
    print(f"{'replay':<34} {'seconds':>8} {'entries':>8} {'p50 ms':>8} {'p95 ms':>8} {'consult p95':>12} {'trades':>7}")
    for label in ("without", "with"):
        r = lessons[label]
        print(f"{label + ' lessons (' + str(r['lessons']) + ' in book)':<34} {r['seconds']:>8.2f} {r['entries']:>8} "
              f"{r['p50_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['consult_p95_ms']:>12.4f} {r['trades']:>7}")
    print(f"added by retrieval: {lessons['added_p95_ms']:+.3f} ms p95 per entry decision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
