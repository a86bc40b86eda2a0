"""Helpers for the market-data tests: a module-scoped private database and vendor-shaped payload builders."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import clone_template, drop_database

UTC = timezone.utc


@pytest.fixture(scope="module")
def md_url(pg_admin_url, template_db):
    """A migrated database private to one test module (tests in the module share it)."""
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_md")
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def md_conn(md_url):
    """A dict-row connection to the module database (autocommit off; loaders commit per file)."""
    c = psycopg.connect(md_url, row_factory=dict_row)
    yield c
    c.rollback()
    c.close()


def db_fingerprint(conn) -> tuple:
    """(row count, md5 of all rows) of candles and system_events: equal fingerprints = database unchanged."""
    out = []
    for table, order in (("candles", "symbol, timeframe, open_time, source"), ("system_events", "event_id")):
        row = conn.execute(f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), '')) AS h "
                           f"FROM {table} t").fetchone()
        out.append((row["n"], row["h"]))
    conn.rollback()
    return tuple(out)


def ms(ts: str) -> int:
    """ISO UTC time -> Unix ms."""
    return int(datetime.fromisoformat(ts).replace(tzinfo=UTC).timestamp() * 1000)


def bybit_kline_response(symbol: str, rows_oldest_first: list[tuple], *, category: str = "spot") -> dict:
    """A dict shaped exactly like ``pybit.unified_trading.HTTP(...).get_kline(...)`` returns it (Bybit v5
    GET /v5/market/kline body): every value a string, ``list`` newest first, rows
    ``[startTime, open, high, low, close, volume, turnover]``. rows_oldest_first: (ms, o, h, l, c, v)."""
    lst = []
    for t, o, h, lo, c, v in reversed(rows_oldest_first):
        turnover = str(round(float(v) * float(c), 4))
        lst.append([str(t), str(o), str(h), str(lo), str(c), str(v), turnover])
    return {"retCode": 0, "retMsg": "OK",
            "result": {"category": category, "symbol": symbol, "list": lst},
            "retExtInfo": {}, "time": 1672025956592}
