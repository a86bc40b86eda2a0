"""Ingest benchmark (run by hand, not a test): COPY path vs row-by-row INSERT, side by side in one run.

Loads every candle file under the shared OHLCV directory (default ``ats.paths.market_data_dir()``, i.e.
``../shared/data/ohlcv``; never the holdout set) into fresh, migrated databases on one PostgreSQL server and
prints rows/s for:

* copy      - ``ats.market_data.loaders.load_file``: parse + validate, COPY into a temp staging table,
              INSERT ... ON CONFLICT, one transaction per file (the production path)
* insert    - the same parse + validate, then one ``INSERT ... ON CONFLICT DO NOTHING`` statement per row
              (one round trip each), one transaction per file
* executemany - for reference: psycopg 3 ``executemany`` of the same INSERT (pipelined), one transaction per file

Usage:  .venv/bin/python bench/ingest.py [--data-dir DIR] [--admin-url DSN]
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
from pathlib import Path

import psycopg

from ats.db.connection import with_dbname
from ats.db.migrate import migrate
from ats.market_data.loaders import expand_paths, load_file, parse_file, validate
from ats.paths import market_data_dir

INSERT_SQL = """INSERT INTO candles (symbol, timeframe, open_time, open, high, low, close, volume, source)
                VALUES (%s, %s, timestamptz 'epoch' + %s * interval '1 millisecond', %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING"""


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


def run_insert(url: str, files: list[Path], *, many: bool) -> tuple[int, float]:
    rows = 0
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        for f in files:
            batch = parse_file(f)
            valid, _ = validate(batch)
            params = [(batch.symbol, batch.timeframe, r[0], r[1], r[2], r[3], r[4], r[5], batch.source) for r in valid]
            with conn.transaction():
                with conn.cursor() as cur:
                    if many:
                        cur.executemany(INSERT_SQL, params)
                    else:
                        for p in params:
                            cur.execute(INSERT_SQL, p)
            rows += len(params)
        return rows, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=market_data_dir(), help="OHLCV directory (default %(default)s)")
    ap.add_argument("--admin-url", default=os.environ.get("ATS_BENCH_ADMIN_URL"),
                    help="admin DSN of a PostgreSQL server to create scratch databases on (default: embedded)")
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
    t = time.perf_counter()
    parsed = sum(len(validate(parse_file(f))[0]) for f in files)
    parse_s = time.perf_counter() - t
    print(f"{len(files)} files, {parsed} candles under {data}")
    print(f"parse + validate only: {parse_s:.2f} s ({parsed / parse_s:,.0f} rows/s; included in every path below)")
    results = []
    try:
        for label, fn in (("copy", lambda u: run_copy(u, files)),
                          ("insert", lambda u: run_insert(u, files, many=False)),
                          ("executemany", lambda u: run_insert(u, files, many=True))):
            name, url = fresh_db(admin)
            try:
                rows, secs = fn(url)
            finally:
                drop_db(admin, name)
            results.append((label, rows, secs))
    finally:
        if srv is not None:
            srv.cleanup()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    base = results[0][2]
    print(f"{'path':<12} {'rows':>9} {'seconds':>9} {'rows/s':>10} {'vs copy':>8} {'db-only rows/s (approx)':>24}")
    for label, rows, secs in results:
        db_s = max(secs - parse_s, 1e-9)
        print(f"{label:<12} {rows:>9} {secs:>9.2f} {rows / secs:>10,.0f} {secs / base:>7.1f}x {rows / db_s:>24,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
