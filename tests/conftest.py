"""Shared fixtures: a real PostgreSQL for every test session.

Server: ``ATS_TEST_DATABASE_URL`` (any PostgreSQL 15/16, admin rights to create databases and roles) or, by
default, an embedded pgserver in a temporary directory deleted at the end. A migrated template database is
built once per session; ``db_url`` is a clone used by the session (and exported as ATS_DATABASE_URL so CLI
subprocesses hit it), ``fresh_db_url`` is a new clone per test for tests that need isolation.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.db.connection import with_dbname
from ats.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ATS_DATA_DIR", ROOT.parent / "shared" / "data" / "ohlcv"))


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def pg_admin_url():
    """Admin DSN of the test server (embedded unless ATS_TEST_DATABASE_URL is set)."""
    ext = os.environ.get("ATS_TEST_DATABASE_URL")
    if ext:
        yield ext
        return
    import pgserver

    d = tempfile.mkdtemp(prefix="atspg-")
    srv = pgserver.get_server(d, cleanup_mode="delete")
    yield srv.get_uri()
    srv.cleanup()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url):
    """Name of a migrated template database (created once per session, dropped at the end)."""
    name = f"ats_tpl_{uuid.uuid4().hex[:10]}"
    with _admin(pg_admin_url) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    migrate(with_dbname(pg_admin_url, name))
    yield name
    with _admin(pg_admin_url) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clone_template(admin_url: str, template: str, prefix: str = "ats_test") -> tuple[str, str]:
    """CREATE DATABASE <new> TEMPLATE <template>; returns (name, url)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin(admin_url) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, with_dbname(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with _admin(admin_url) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def db_url(pg_admin_url, template_db, tmp_path_factory):
    """The session's database (a clone of the template); exported as ATS_DATABASE_URL for subprocesses."""
    name, url = clone_template(pg_admin_url, template_db)
    old = {k: os.environ.get(k) for k in ("ATS_DATABASE_URL", "ATS_LOG_DIR")}
    os.environ["ATS_DATABASE_URL"] = url
    os.environ["ATS_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))
    yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    drop_database(pg_admin_url, name)


@pytest.fixture
def fresh_db_url(pg_admin_url, template_db, monkeypatch):
    """A brand-new migrated database for one test; ATS_DATABASE_URL points at it during the test."""
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_fresh")
    monkeypatch.setenv("ATS_DATABASE_URL", url)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def conn(db_url):
    """A dict-row connection to the session database; rolled back (not committed) at the end of the test."""
    c = psycopg.connect(db_url, row_factory=dict_row)
    yield c
    c.rollback()
    c.close()


@pytest.fixture
def fresh_conn(fresh_db_url):
    """A dict-row connection to a fresh database (autocommit off)."""
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    yield c
    c.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/ohlcv (real candles); tests needing it are skipped with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (set ATS_DATA_DIR)")
    return SHARED_DATA


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run `python -m ats.cli ARGS` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "ats.cli", *args], capture_output=True, text=True,
                          env=e, cwd=str(cwd or ROOT), timeout=timeout)


# ---- shared data fixtures (filled in by the market-data and engine modules) ----------------------------

@pytest.fixture(scope="session")
def candles_db_url(pg_admin_url, template_db, shared_data):
    """A session database with every file under ../shared/data/ohlcv loaded (read-only use, please)."""
    from ats.market_data.loaders import load_paths

    name, url = clone_template(pg_admin_url, template_db, prefix="ats_candles")
    load_paths(url, sorted(p for p in shared_data.rglob("*") if p.is_file()))
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def demo_db_url(pg_admin_url, template_db, shared_data):
    """A session database in the state `ats demo` leaves: real candles loaded and the Dec 2020 - Jul 2021
    replay done (read-only use, please)."""
    from ats.demo import prepare_demo

    name, url = clone_template(pg_admin_url, template_db, prefix="ats_demo")
    prepare_demo(url, data_dir=shared_data, progress=False)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture(autouse=True)
def _unbind_account():
    """Undo an in-process CLI call's account binding after each test: ``ats.accounts.scope.bind`` sets
    ``ATS_ACCOUNT`` for the rest of the process (one process, one account), which would otherwise reach the
    subprocesses of later tests (seen: ``one process, one account: asked for aggr-b, default``)."""
    before = os.environ.get("ATS_ACCOUNT")
    yield
    if before is None:
        os.environ.pop("ATS_ACCOUNT", None)
    else:
        os.environ["ATS_ACCOUNT"] = before
