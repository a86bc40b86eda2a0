"""Shared fixtures and helpers for the engine tests (tests/engine/, tests/risk/, tests/execution/ ...).

``engine_template``: a migrated database with the shared 1h crypto candles plus the AVAX and BTC 5m files loaded
and the 1h feed anomalies scanned (as `ats demo` does), created once per session (cached across test modules) and used as a CREATE
DATABASE template; ``engine_db`` clones it per test (a fresh, writable database with real candles; exported as
ATS_DATABASE_URL for CLI subprocesses).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import SHARED_DATA, clone_template, drop_database
from ats.db.connection import with_dbname

_TEMPLATES: dict[tuple[str, str], str] = {}
FILES_5M = ("AVAX_USDT-5m.json", "BTC_USDT-5m.json")


def utc(s: str) -> datetime:
    """ISO text -> aware UTC datetime."""
    d = datetime.fromisoformat(s)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def raw_rows(base: str, tf: str = "1h") -> list[list]:
    """The shared data file rows [open_ms, open, high, low, close, volume] of BASE_USDT-<tf>.json."""
    return json.loads((SHARED_DATA / "binance" / f"{base}_USDT-{tf}.json").read_text())


def raw_by_time(base: str, tf: str = "1h") -> dict[int, list]:
    """{open time (Unix s): row} from the shared file."""
    return {int(r[0] // 1000): r for r in raw_rows(base, tf)}


def _build_template(admin_url: str, base_template: str) -> str:
    from ats.market_data.anomalies import detect_anomalies
    from ats.market_data.loaders import load_paths

    name, url = clone_template(admin_url, base_template, prefix="ats_engtpl")
    files = sorted((SHARED_DATA / "binance").glob("*-1h.json")) + [SHARED_DATA / "binance" / f for f in FILES_5M]
    load_paths(url, files)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        detect_anomalies(conn, timeframes=["1h"], as_of="2021-07-18")  # as the demo does (1h only)
        conn.commit()
    return name


@pytest.fixture(scope="session")
def engine_template(pg_admin_url, template_db, shared_data):
    """Name of the candles+anomalies template database (built once per session)."""
    key = (pg_admin_url, template_db)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _build_template(pg_admin_url, template_db)
    yield _TEMPLATES[key]
    name = _TEMPLATES.pop(key, None)
    if name:
        try:
            drop_database(pg_admin_url, name)
        except psycopg.Error:
            pass


@pytest.fixture
def engine_db(pg_admin_url, engine_template, monkeypatch, tmp_path):
    """A fresh writable clone of the engine template; ATS_DATABASE_URL points at it during the test."""
    name, url = clone_template(pg_admin_url, engine_template, prefix="ats_eng")
    monkeypatch.setenv("ATS_DATABASE_URL", url)
    monkeypatch.setenv("ATS_LOG_DIR", str(tmp_path / "logs"))
    yield url
    drop_database(pg_admin_url, name)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, row_factory=dict_row)


def memory_run(conn, strategies, symbols, start, end, *, timeframe="1h", overrides=None, tag=""):
    """Run the engine into a MemorySink (nothing persisted); returns (engine, sink)."""
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import make_spec, resolve
    from ats.engine.sink import MemorySink

    spec = resolve(conn, make_spec("replay", strategies=strategies, symbols=symbols, timeframe=timeframe,
                                   start=start, end=end, param_overrides=overrides or {}, tag=tag))
    feed = ReplayFeed.load(conn, spec.symbols, timeframe, spec.start, spec.end)
    sink = MemorySink(spec.run_id, spec.account_id)
    eng = Engine(conn, spec, sink=sink, feed=feed)
    eng.run()
    conn.rollback()
    return eng, sink


def breaker_intervals(conn, run_id: str, breaker: str, scope: str = "*") -> list[tuple[datetime, datetime | None]]:
    """[(tripped_at, reset_at or None)] of one breaker/scope from system_events (the audit trail)."""
    rows = conn.execute(
        """SELECT ts, event_type FROM system_events WHERE component='risk' AND payload->>'run_id'=%s
              AND payload->>'breaker'=%s AND payload->>'scope'=%s ORDER BY ts, event_id""",
        (run_id, breaker, scope)).fetchall()
    out, start = [], None
    for r in rows:
        if r["event_type"] == "breaker_tripped" and start is None:
            start = r["ts"]
        elif r["event_type"] == "breaker_reset" and start is not None:
            out.append((start, r["ts"]))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def inside(ts: datetime, intervals) -> bool:
    """True when ts is in [trip, reset) of one of the intervals (reset None = until the end)."""
    return any(a <= ts and (b is None or ts < b) for a, b in intervals)


def unique_db_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


ROOT = Path(__file__).resolve().parents[1]
__all__ = ["engine_template", "engine_db", "raw_rows", "raw_by_time", "utc", "connect", "memory_run",
           "breaker_intervals", "inside", "with_dbname", "ROOT"]
