"""Live decision-latency benchmark (run by hand, not a test): bar close -> order sent, live vs replay.

* live    - ``ats.live.loop.run_live --broker bybit`` against the local Bybit simulator on 127.0.0.1 (pybit,
            accelerated venue clock): from the moment the loop observes the bar closed on the venue clock
            (before fetching and storing its candle, rebuilding the engine window from the checkpoint, the
            decision, the risk gates) to the return of ``place_order`` for each order sent.
* replay  - the SAME engine step on the same stored candles in a replay (``Engine.step``, MemorySink, paper
            broker): from the start of the step to ``Broker.submit`` of each order - the named baseline.

Usage:  .venv/bin/python bench/live.py [--admin-url DSN] [--bars N] [--timeframe 1h]
Default admin DSN: postgresql://postgres@127.0.0.1:5432/postgres (a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

STRATS = ("btc_trend", "mean_reversion_short", "momentum", "trend_breakdown")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def live_part(url_db, candles, bars, tf, start_iso, speed):
    from datetime import datetime, timezone

    from ats.execution.venue_sim.bybit import BybitSim, load_candles, serve
    from ats.live.loop import LiveOptions, run_live

    start = int(datetime.fromisoformat(start_iso).replace(tzinfo=timezone.utc).timestamp() * 1000)
    sim = BybitSim(load_candles(candles), start_ms=start, speed=speed, api_key="benchkey", api_secret="benchsecret")
    srv = serve(sim)
    os.environ.update(ATS_BYBIT_BASE_URL=f"http://127.0.0.1:{srv.server_address[1]}", BYBIT_API_KEY="benchkey",
                      BYBIT_API_SECRET="benchsecret", ATS_DATABASE_URL=url_db)
    try:
        t0 = time.perf_counter()
        s = run_live(LiveOptions(broker="bybit", symbols=("BTCUSDT",), timeframe=tf, strategies=STRATS,
                                 max_bars=bars, reconcile_every_min=1e9, url=url_db))
        wall = time.perf_counter() - t0
    finally:
        srv.shutdown()
    return s, wall


def replay_part(url_db, run_id, tf):
    import psycopg
    from psycopg.rows import dict_row

    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import RunSpec
    from ats.engine.sink import MemorySink
    from ats.execution.paper import PaperBroker

    conn = psycopg.connect(url_db, row_factory=dict_row)
    p = conn.execute("SELECT params FROM engine_runs WHERE run_id=%s", (run_id,)).fetchone()["params"]
    last = conn.execute("SELECT max(open_time) AS t FROM candles WHERE symbol='BTCUSDT' AND timeframe=%s",
                        (tf,)).fetchone()["t"]
    from ats.timeutil import TIMEFRAME_SECONDS, parse_ts

    start = int(parse_ts(p["start"]).timestamp())
    end = int(last.timestamp()) + TIMEFRAME_SECONDS[tf]
    spec = RunSpec("replay", STRATS, ("BTCUSDT",), tf, start, end, "default", 10000.0, "bench-live")
    feed = ReplayFeed.load(conn, spec.symbols, tf, start, end)
    marks: list[float] = []
    lat: list[float] = []

    class TimedFeed:
        def __init__(self, f):
            self.f, self.timeframe, self.bars, self.reference = f, f.timeframe, f.bars, f.reference
            self.timeline = f.timeline

        def __len__(self):
            return len(self.f)

        def first_time(self):
            return self.f.first_time()

        def steps(self, after=None):
            for st in self.f.steps(after):
                marks.append(time.perf_counter())
                yield st

    class TimedBroker(PaperBroker):
        def submit(self, order):
            lat.append((time.perf_counter() - marks[-1]) * 1000.0)
            super().submit(order)

    eng = Engine(conn, spec, sink=MemorySink(spec.run_id, "default"), feed=TimedFeed(feed), broker=TimedBroker(),
                 fast=False)
    t0 = time.perf_counter()
    n = eng.run()
    wall = time.perf_counter() - t0
    conn.close()
    return lat, n, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--candles", default=str(ROOT.parent / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.json"))
    ap.add_argument("--timeframe", default="1h")
    ap.add_argument("--bars", type=int, default=96)
    ap.add_argument("--start", default="2021-05-11T00:00:00")
    ap.add_argument("--speed", type=float, default=12000.0, help="simulated ms per real ms")
    a = ap.parse_args()
    import psycopg

    from ats.db.migrate import migrate

    name = f"ats_bench_live_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(a.admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url_db = psycopg.conninfo.make_conninfo(a.admin_url, dbname=name)
    try:
        migrate(url_db)
        s, wall = live_part(url_db, a.candles, a.bars, a.timeframe, a.start, a.speed)
        lat_r, n_r, wall_r = replay_part(url_db, s["run_id"], a.timeframe)
        lat_l = s["latencies_ms"]
        print(f"decision latency, bar close -> order sent ({a.timeframe} BTCUSDT, {', '.join(STRATS)})")
        print(f"{'path':<34}{'orders':>8}{'p50 ms':>10}{'p95 ms':>10}{'bars':>7}{'wall s':>9}")
        print(f"{'live (pybit -> simulator, PG)':<34}{len(lat_l):>8}{pct(lat_l, 50):>10.2f}{pct(lat_l, 95):>10.2f}"
              f"{s['bars']:>7}{wall:>9.1f}")
        print(f"{'replay (Engine.step, baseline)':<34}{len(lat_r):>8}{pct(lat_r, 50):>10.2f}{pct(lat_r, 95):>10.2f}"
              f"{n_r:>7}{wall_r:>9.1f}")
    finally:
        with psycopg.connect(a.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
