"""Numbered plain-SQL migrations.

Files `services/ats/db/migrations/NNNN_name.sql` are applied in numeric order, each in its own transaction,
and recorded in `schema_migrations(version, name, checksum, applied_at)` with the SHA-256 of the file. Running
`migrate()` again applies nothing; an applied file whose checksum changed is refused (AtsError naming the file).
Concurrent runs are serialized with a PostgreSQL advisory lock.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

from ..errors import AtsError
from .connection import READONLY_ROLE, connect

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x415453_4D494752  # "ATS" "MIGR"


@dataclass(frozen=True)
class Migration:
    """One migration file: version (int), name, path, checksum (sha256 hex of the file bytes)."""

    version: int
    name: str
    path: Path
    checksum: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in order. Raises AtsError on a misnamed .sql file or a duplicate version."""
    found: dict[int, Migration] = {}
    for p in sorted(directory.glob("*.sql")):
        m = _NAME_RE.match(p.name)
        if not m:
            raise AtsError(f"migration file {p.name} does not match NNNN_name.sql")
        v = int(m.group(1))
        if v in found:
            raise AtsError(f"migration version {v:04d} used twice: {found[v].path.name} and {p.name}")
        found[v] = Migration(v, m.group(2), p, hashlib.sha256(p.read_bytes()).hexdigest())
    return [found[v] for v in sorted(found)]


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def applied(conn: psycopg.Connection) -> dict[int, dict]:
    """{version: row} of applied migrations (empty when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS e").fetchone()
    if not _val(exists):
        return {}
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version").fetchall()
    return {(_val(r, "version")): r for r in rows}


def _val(row, key=None):
    if row is None:
        return None
    if isinstance(row, dict):
        return row[key] if key else next(iter(row.values()))
    return row[0]


def verify(conn: psycopg.Connection, migrations: list[Migration]) -> None:
    """Raise AtsError if an applied migration's file changed or disappeared."""
    done = applied(conn)
    by_version = {m.version: m for m in migrations}
    for v, row in done.items():
        m = by_version.get(v)
        name = row["name"] if isinstance(row, dict) else row[1]
        checksum = row["checksum"] if isinstance(row, dict) else row[2]
        if m is None:
            raise AtsError(f"applied migration {v:04d}_{name}.sql is missing from {MIGRATIONS_DIR}")
        if m.checksum != checksum:
            raise AtsError(f"migration {m.path.name} was edited after it was applied (checksum differs); "
                           "add a new migration instead")


def migrate(url: str | None = None, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the file names applied (empty list when up to date).

    Raises AtsError naming the file when a migration fails (that file's transaction is rolled back; earlier
    files stay applied) or when an applied file was edited.
    """
    migrations = discover(directory)
    done_now: list[str] = []
    if url is None:
        from .connection import owner_url

        url = owner_url()  # migrations run as the owner, never as an account's scoped role
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_table(conn)
            verify(conn, migrations)
            done = applied(conn)
            for m in migrations:
                if m.version in done:
                    continue
                sql = m.path.read_text(encoding="utf-8")
                try:
                    with conn.transaction():
                        conn.execute(sql)
                        conn.execute("INSERT INTO schema_migrations(version, name, checksum) VALUES (%s, %s, %s)",
                                     (m.version, m.name, m.checksum))
                except psycopg.Error as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise AtsError(f"migration {m.path.name} failed: {first}") from exc
                done_now.append(m.path.name)
            pw = os.environ.get("ATS_READONLY_PASSWORD")
            if pw:
                conn.execute(pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    pgsql.Identifier(READONLY_ROLE), pgsql.Literal(pw)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done_now


def status(url: str | None = None, directory: Path = MIGRATIONS_DIR) -> dict:
    """{'level': highest applied version or 0, 'applied': n, 'pending': [file names], 'latest': highest on disk}."""
    migrations = discover(directory)
    with connect(url, autocommit=True) as conn:
        done = applied(conn)
    return {
        "level": max(done) if done else 0,
        "applied": len(done),
        "pending": [m.path.name for m in migrations if m.version not in done],
        "latest": migrations[-1].version if migrations else 0,
    }
