"""Ingest benchmark (run by hand, not a test): COPY path vs row-by-row INSERT, side by side in one run.

Loads every candle file under the shared OHLCV directory (default ``ats.paths.market_data_dir()``, i.e.
``../shared/data/ohlcv``; never the holdout set) into fresh, migrated databases on one PostgreSQL server and
prints, with the targets of issue #18 beside today's figures:

* parse + validate rows/s: ``prepare_file`` (vectorised tokenizers + array checks, the production path) and,
  for reference, the general path ``validate(parse_file(f))`` that was the only path before (and still is
  the fallback for any other shape); target >= 1,000,000 rows/s
* copy        - ``load_file`` per file: prepare_file, text COPY into the temp staging table, plain INSERT (a
                first load) or upsert, one transaction per file (the production path for one file)
* copy-paths  - ``load_paths(url, files)`` over all files: the same per file, files prepared in order in a
                worker thread while earlier ones are written on two connections (the production path for a
                directory: ``ats demo``, the test fixtures)
* insert      - the same prepare_file, then one ``INSERT ... ON CONFLICT DO NOTHING`` statement per row (one
                round trip each), one transaction per file: the baseline of the speed-up (target >= 20x)
* executemany - for reference: psycopg 3 ``executemany`` of the same INSERT (pipelined), one transaction per file
* stage COPY text vs binary - the staging step alone, all rows: the pre-formatted text block
                (``Copy.write``) vs binary COPY with ``Copy.write_row`` of exact ``Decimal`` values, which is
                what binary NUMERIC needs from decimal text (why the loader uses text COPY)

Figures vary with the load of the machine (2 shared cores): compare the rows of one run, not runs. The fast
paths run 3 times, before, between and after the row-by-row baselines (median shown, each on a fresh
database); the baselines run once.

Usage:  .venv/bin/python bench/ingest.py [--data-dir DIR] [--admin-url DSN] [--skip-insert]
Without --admin-url a temporary embedded PostgreSQL (pgserver) is started and deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from decimal import Decimal
from pathlib import Path

import psycopg

from ats.db.connection import with_dbname
from ats.db.migrate import migrate
from ats.market_data.loaders import (_STAGE_COPY, _STAGE_COPY_FLAGS, _STAGE_DDL, expand_paths, load_file, load_paths,
                                     parse_file, prepare_file, validate)
from ats.paths import market_data_dir

INSERT_SQL = """INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume, source)
                VALUES (%s, %s, timestamptz 'epoch' + %s * interval '1 millisecond', %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING"""
#: issue #18, measured on main before this change (2-core machine)
ISSUE_BEFORE = "9.0x (51k rows/s; parse + validate 117k rows/s)"
TARGET_SPEEDUP = 20.0
TARGET_PARSE = 1_000_000
REPEAT = 3  # runs of the fast paths (median shown); the row-by-row baselines run once (20-60 s each)


def fresh_db(admin_url: str) -> tuple[str, str]:
    name = f"ats_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(admin_url, name)
    migrate(url)
    return name, url


def drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_copy(url: str, files: list[Path]) -> tuple[int, float]:
    rows = 0
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        for f in files:
            rows += load_file(conn, f).rows_inserted
        return rows, time.perf_counter() - t


def run_copy_paths(url: str, files: list[Path]) -> tuple[int, float]:
    t = time.perf_counter()
    rows = sum(r.rows_inserted for r in load_paths(url, files))  # opens its 2 writer connections
    return rows, time.perf_counter() - t


def run_insert(url: str, files: list[Path], *, many: bool) -> tuple[int, float]:
    rows = 0
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        for f in files:
            b = prepare_file(f)
            params = [(b.symbol, b.timeframe, r[0], r[1], r[2], r[3], r[4], r[5], b.source) for r in b.rows()]
            with conn.transaction():
                with conn.cursor() as cur:
                    if many:
                        cur.executemany(INSERT_SQL, params)
                    else:
                        for p in params:
                            cur.execute(INSERT_SQL, p)
            rows += len(params)
        return rows, time.perf_counter() - t


def stage_copy(url: str, files: list[Path], *, binary: bool) -> float:
    """Seconds to COPY every file's validated rows into the staging table (prepare_file excluded)."""
    blocks = [prepare_file(f) for f in files]
    with psycopg.connect(url) as conn:
        cur = conn.cursor()
        cur.execute(_STAGE_DDL)
        t = time.perf_counter()
        for b in blocks:
            cur.execute("TRUNCATE ats_candle_rows_stage")
            if binary:
                with cur.copy(_STAGE_COPY_FLAGS.replace("FROM STDIN", "FROM STDIN (FORMAT binary)")) as cp:
                    cp.set_types(["text", "int8", "numeric", "numeric", "numeric", "numeric", "numeric", "bool"])
                    for r in b.rows():
                        cp.write_row(("", r[0], Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]),
                                      Decimal(r[5]), True))
            else:
                with cur.copy(_STAGE_COPY) as cp:
                    cp.write(b.stage_text)
        conn.commit()
        return time.perf_counter() - t


def _median(runs: list[tuple[int, float]]) -> tuple[int, float]:
    """The (rows, seconds) run of median seconds."""
    return sorted(runs, key=lambda r: r[1])[len(runs) // 2]


def parse_rate(files: list[Path], fn) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(fn(f) for f in files)
    return n, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=market_data_dir(), help="OHLCV directory (default %(default)s)")
    ap.add_argument("--admin-url", default=os.environ.get("ATS_BENCH_ADMIN_URL"),
                    help="admin DSN of a PostgreSQL server to create scratch databases on (default: embedded)")
    ap.add_argument("--skip-insert", action="store_true", help="skip the slow row-by-row baselines")
    args = ap.parse_args(argv)
    data = args.data_dir.resolve()
    if "holdout" in data.parts:
        print("refusing to benchmark on the holdout set", file=sys.stderr)
        return 2
    files = [f for f in expand_paths([data]) if "holdout" not in f.parts]
    if not files:
        print(f"no candle files under {data}", file=sys.stderr)
        return 1
    tmp = None
    srv = None
    admin = args.admin_url
    if not admin:
        import pgserver

        tmp = tempfile.mkdtemp(prefix="ats-bench-pg-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srv = pgserver.get_server(tmp, cleanup_mode="delete")
        admin = srv.get_uri()
    general = parse_rate(files, lambda f: len(validate(parse_file(f))[0]))
    fast = _median([parse_rate(files, lambda f: len(prepare_file(f).open_ms)) for _ in range(REPEAT)])
    assert fast[0] == general[0], (fast, general)
    print(f"{len(files)} files, {fast[0]} candles under {data}")
    print(f"{'parse + validate':<34} {'seconds':>8} {'rows/s':>11}   target")
    print(f"{'  prepare_file (median of 3)':<34} {fast[1]:>8.3f} {fast[0] / fast[1]:>11,.0f}   "
          f">= {TARGET_PARSE:,} rows/s")
    print(f"{'  parse_file + validate (general)':<34} {general[1]:>8.3f} {general[0] / general[1]:>11,.0f}   "
          f"(the path before; issue #18 measured 117k rows/s)")
    fast_paths = [("copy", lambda u: run_copy(u, files)), ("copy-paths", lambda u: run_copy_paths(u, files))]
    slow_paths = [] if args.skip_insert else [("insert", lambda u: run_insert(u, files, many=False)),
                                              ("executemany", lambda u: run_insert(u, files, many=True))]
    # the fast paths run before, between and after the slow ones, so their median sees the same machine load
    schedule = list(fast_paths)
    for slow in slow_paths:
        schedule += [slow] + fast_paths
    while sum(label == "copy" for label, _ in schedule) < REPEAT:
        schedule += fast_paths
    runs: dict[str, list] = {}
    stage = {}
    try:
        for label, fn in schedule:
            name, url = fresh_db(admin)
            try:
                runs.setdefault(label, []).append(fn(url))
            finally:
                drop_db(admin, name)
        results = [(label, *_median(r)) for label, r in runs.items()]
        name, url = fresh_db(admin)
        try:
            for binary in (False, True):
                stage[binary] = stage_copy(url, files, binary=binary)
        finally:
            drop_db(admin, name)
    finally:
        if srv is not None:
            srv.cleanup()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    by = {label: (rows, secs) for label, rows, secs in results}
    print(f"\n{'path':<12} {'rows':>9} {'seconds':>9} {'rows/s':>10} {'vs insert':>10} {'db-only rows/s (approx)':>24}")
    base = by.get("insert", (0, 0.0))[1]
    for label, rows, secs in results:
        db_s = max(secs - fast[1], 1e-9)
        ratio = f"{base / secs:>9.1f}x" if base else f"{'-':>10}"
        print(f"{label:<12} {rows:>9} {secs:>9.2f} {rows / secs:>10,.0f} {ratio} {rows / db_s:>24,.0f}")
    if base:
        print(f"\nspeed-up vs row-by-row INSERT: copy (load_file) {base / by['copy'][1]:.1f}x, copy-paths "
              f"(load_paths) {base / by['copy-paths'][1]:.1f}x | target >= {TARGET_SPEEDUP:.0f}x | "
              f"issue #18 before: {ISSUE_BEFORE}")
    n = fast[0]
    print(f"stage COPY only, all rows: text block {stage[False]:.2f} s ({n / stage[False]:,.0f} rows/s) vs binary "
          f"write_row of Decimal {stage[True]:.2f} s ({n / stage[True]:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
