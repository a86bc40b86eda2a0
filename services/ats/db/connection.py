"""PostgreSQL connections for ATS.

DSN resolution (first match wins):
    1. ``ATS_DATABASE_URL``, then ``DATABASE_URL``: any PostgreSQL 15/16 server.
    2. Otherwise an embedded PostgreSQL 16 (the binaries of the `pgserver` wheel) in ``ATS_PGDATA`` or
       `<root>/.ats/pgdata`, started on demand by `ats.db.embedded` (crash-safe: file lock, atomic initdb, stale
       state repaired) so it outlives the command and is reused by the next one; ``ats db down`` stops it.

The read-only DSN (``readonly_url()``) is the same server and database as user ``ats_readonly`` (password from
``ATS_READONLY_PASSWORD`` when the server needs one). That role is created by migration 0001.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlsplit, urlunsplit, parse_qsl, urlencode

import psycopg
from psycopg.rows import dict_row

from ..errors import AtsError
from ..paths import state_dir

# pgserver's lock path comes from platformdirs, which warns when XDG_RUNTIME_DIR is unset (cron, CI, root
# shells); the fallback it picks is fine, so keep command output clean.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR is not set.*")

READONLY_ROLE = "ats_readonly"
EMBEDDED_DB = "ats"


def pgdata_dir() -> Path:
    """Data directory of the embedded server: ``ATS_PGDATA`` or `<root>/.ats/pgdata`."""
    env = os.environ.get("ATS_PGDATA")
    return Path(env) if env else state_dir() / "pgdata"


def external_url() -> str | None:
    """The DSN from ``ATS_DATABASE_URL`` / ``DATABASE_URL``, or None when the embedded server is used."""
    return os.environ.get("ATS_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def _embedded_server() -> str:
    """Admin DSN of the embedded server, started (or reused) robustly; see `ats.db.embedded`."""
    from . import embedded

    try:
        return embedded.ensure_running(pgdata_dir())
    except AtsError:
        raise
    except Exception as exc:  # initdb/pg_ctl failures surface as CalledProcessError/OSError
        raise AtsError(f"could not start the embedded PostgreSQL in {pgdata_dir()}: {exc}") from exc


def _ensure_embedded_database(admin_uri: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DB}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # a concurrent first start-up created it (the race surfaces as either error)


_cached_url: dict[str, str] = {}


def database_url() -> str:
    """The DSN this process uses: the owner's (:func:`owner_url`) for the default account; for a process bound to
    another account (``ATS_ACCOUNT`` / ``--account``) the same DSN with ``-c role=ats_acct_<id>``, so row-level
    security scopes every query to that account (``ats.accounts.scope``). Starts the embedded server if needed.

    Raises
    ------
    AtsError
        When the server cannot be started or reached.
    """
    from ..accounts.scope import scoped_url

    return scoped_url(owner_url())


def owner_url() -> str:
    """The owner's DSN (migrations, account creation, admin commands). Starts the embedded server if needed.

    Raises
    ------
    AtsError
        When the server cannot be started.
    """
    ext = external_url()
    if ext:
        return ext
    key = str(pgdata_dir().resolve())
    if key in _cached_url:
        return _cached_url[key]
    admin = _embedded_server()
    _ensure_embedded_database(admin)
    url = with_dbname(admin, EMBEDDED_DB)
    _cached_url[key] = url
    return url


def with_user(url: str, user: str, password: str | None = None) -> str:
    """Return `url` with its user (and password) replaced; works for URL-style DSNs with or without host."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        # key=value DSN
        kv = psycopg.conninfo.conninfo_to_dict(url)
        kv["user"] = user
        kv.pop("password", None)
        if password:
            kv["password"] = password
        return psycopg.conninfo.make_conninfo(**kv)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("user", "password")]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/"), parts.fragment))


def readonly_url(url: str | None = None) -> str:
    """DSN of the same database for the bound account's read-only role (``ats_readonly`` for the default account,
    ``ats_ro_<id>`` otherwise: row-level security shows it only its account); password ``ATS_READONLY_PASSWORD``
    if set. The MCP server of an account therefore takes the account from its environment, never from a tool
    argument a model could change."""
    from ..accounts.scope import readonly_role
    from ..paths import bound_account

    return with_user(url or owner_url(), readonly_role(bound_account()), os.environ.get("ATS_READONLY_PASSWORD"))


def connect(url: str | None = None, *, autocommit: bool = False, dict_rows: bool = True,
            application_name: str = "ats") -> psycopg.Connection:
    """Open a psycopg 3 connection (dict rows by default). Raises AtsError naming the target on failure."""
    target = url or database_url()
    try:
        return psycopg.connect(target, autocommit=autocommit, row_factory=dict_row if dict_rows else None,
                               application_name=application_name)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0]
        if 'role "ats_acct_' in first or 'role "ats_ro_' in first:
            from ..paths import bound_account

            raise AtsError(f"account {bound_account()!r} has no database role in {describe_url(target)}: create it "
                           f"with `ats account create {bound_account()} --broker ... --starting-cash ...`") from exc
        raise AtsError(f"cannot connect to PostgreSQL ({describe_url(target)}): {first}") from exc


@contextmanager
def transaction(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection inside one transaction: committed on success, rolled back on any exception."""
    conn = connect(url)
    try:
        with conn.transaction():
            yield conn
    finally:
        conn.close()


def pool(url: str | None = None, *, min_size: int = 1, max_size: int = 4):
    """A psycopg_pool.ConnectionPool (dict rows) for long-running services such as MCP servers."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(url or database_url(), min_size=min_size, max_size=max_size, open=True,
                          kwargs={"row_factory": dict_row, "autocommit": True})


def describe_url(url: str) -> str:
    """A DSN without its password, for messages and `ats db status`."""
    try:
        kv = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = kv.get("host", "localhost")
    return f"user={kv.get('user', '?')} host={host} port={kv.get('port', '5432')} dbname={kv.get('dbname', '?')}"


def server_info(url: str | None = None) -> dict:
    """{'mode': 'embedded'|'url', 'dsn': safe DSN, 'server_version': '16.2', 'pgdata': path|None}."""
    target = url or database_url()
    with connect(target, autocommit=True) as conn:
        ver = conn.execute("SHOW server_version").fetchone()["server_version"]
    mode = "url" if external_url() else "embedded"
    return {"mode": mode, "dsn": describe_url(target), "server_version": ver,
            "pgdata": None if mode == "url" else str(pgdata_dir())}


def stop_embedded() -> str:
    """Stop the embedded server (pg_ctl stop -m fast). Returns a one-line status; no-op message if not running."""
    if external_url():
        return "ATS_DATABASE_URL is set: no embedded server to stop"
    from . import embedded

    msg = embedded.stop(pgdata_dir())
    _cached_url.clear()
    return msg


def with_dbname(url: str, dbname: str) -> str:
    """Return `url` pointing at database ``dbname`` (same server, user and options)."""
    kv = psycopg.conninfo.conninfo_to_dict(url)
    kv["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**kv)
