"""Database backup and restore: ``pg_dump -Fc`` with a manifest, rotation, and a verified restore.

A backup is two files in the backup directory (default ``<root>/db_backups``)::

    ats_<dbname>_<YYYYmmddTHHMMSSZ>.dump     custom-format archive (pg_dump -Fc)
    ats_<dbname>_<YYYYmmddTHHMMSSZ>.json     manifest: size, sha256, duration, server version, row counts

The client binaries are chosen to match the server: the embedded server's own (``pgserver/pginstall/bin``),
``ATS_PG_BIN`` if set, ``/usr/lib/postgresql/<major>/bin``, then ``pg_dump`` on PATH; a client whose major
version is older than the server's is refused (pg_dump cannot dump a newer server).

Rotation (settings ``backup.keep_daily`` / ``backup.keep_weekly`` in ``system_settings``, migration 0110) keeps
the newest dump of each of the last N UTC days that have a dump, and the newest dump of each of the last M ISO
weeks that have one (grandfather-father-son, without the monthly tier); everything else is deleted with its
manifest. Failures are recorded as ``system_events`` (component ``backup``, event_type ``backup_failed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from ..errors import AtsError, UsageError
from ..paths import project_root
from .connection import connect, database_url, describe_url, with_dbname

#: key -> (default, description); seeded by migration 0110.
SETTINGS: dict[str, tuple[int, str]] = {
    "backup.keep_daily": (7, "keep the newest dump of each of the last N UTC days that have one"),
    "backup.keep_weekly": (4, "also keep the newest dump of each of the last M ISO weeks that have one"),
}
NAME_RE = re.compile(r"^ats_(?P<db>[A-Za-z0-9_]+)_(?P<ts>\d{8}T\d{6}Z)\.dump$")
TS_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass
class Manifest:
    """What a dump holds: written beside it as ``<stem>.json``.

    Parameters
    ----------
    file : str
        Dump file name (no directory).
    database : str
        Name of the dumped database.
    created_at : str
        UTC ISO-8601 time the dump started.
    size_bytes : int
        Size of the dump file.
    sha256 : str
        Hex SHA-256 of the dump file.
    duration_s : float
        Wall-clock time of pg_dump (seconds).
    server_version : str
        ``SHOW server_version`` of the source server (e.g. ``16.2``).
    pg_dump : str
        Path and ``--version`` of the client used.
    row_counts : dict
        ``{"schema.table": exact count(*)}`` of every base table in the public schema at dump time.
    """

    file: str
    database: str
    created_at: str
    size_bytes: int
    sha256: str
    duration_s: float
    server_version: str
    pg_dump: str
    row_counts: dict[str, int] = field(default_factory=dict)

    def path_in(self, directory: Path) -> Path:
        """The manifest path in ``directory``."""
        return directory / (Path(self.file).stem + ".json")


# ---- client binaries ----------------------------------------------------------------------------------

def _major(version_text: str) -> int:
    m = re.search(r"(\d+)(?:\.\d+)?", version_text)
    if not m:
        raise AtsError(f"cannot read a PostgreSQL version from {version_text!r}")
    return int(m.group(1))


def _candidate_dirs(server_major: int) -> list[Path]:
    dirs: list[Path] = []
    if os.environ.get("ATS_PG_BIN"):
        dirs.append(Path(os.environ["ATS_PG_BIN"]))
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # binaries shipped inside the wheel

        dirs.append(Path(POSTGRES_BIN_PATH))
    except Exception:  # pragma: no cover - pgserver is a declared dependency
        pass
    dirs.append(Path(f"/usr/lib/postgresql/{server_major}/bin"))
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).parent)
    return dirs


def pg_tool(name: str, server_version: str) -> Path:
    """The ``pg_dump`` / ``pg_restore`` binary to use against a server of ``server_version``.

    Parameters
    ----------
    name : str
        ``"pg_dump"`` or ``"pg_restore"``.
    server_version : str
        The server's ``server_version`` (``"16.2"``, ``"15.20 (Debian ...)"``).

    Returns
    -------
    Path
        A client of the same major version if one exists, else the oldest newer one.

    Raises
    ------
    AtsError
        When no candidate is at least the server's major version.
    """
    major = _major(server_version)
    found: list[tuple[int, Path]] = []
    for d in _candidate_dirs(major):
        exe = d / name
        if not exe.is_file():
            continue
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
        if out.returncode == 0:
            m = re.search(r"\)\s+(\d+)", out.stdout)
            if m:
                found.append((int(m.group(1)), exe))
    exact = [p for v, p in found if v == major]
    if exact:
        return exact[0]
    newer = sorted((v, p) for v, p in found if v > major)
    if newer:
        return newer[0][1]
    seen = ", ".join(f"{p} ({v})" for v, p in found) or "none"
    raise AtsError(f"no {name} for PostgreSQL {major} found (tried ATS_PG_BIN, pgserver, "
                   f"/usr/lib/postgresql/{major}/bin, PATH; found: {seen})")


# ---- dump ---------------------------------------------------------------------------------------------

def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact ``count(*)`` of every base table in schema public, ``{"public.table": n}`` sorted by name."""
    tables = [r[0] if not isinstance(r, dict) else r["relname"] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname").fetchall()]
    counts = {}
    for t in tables:
        row = conn.execute(f'SELECT count(*) AS n FROM public."{t}"').fetchone()
        counts[f"public.{t}"] = row["n"] if isinstance(row, dict) else row[0]
    return counts


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_dir() -> Path:
    """``ATS_BACKUP_DIR`` or ``<project root>/db_backups``."""
    env = os.environ.get("ATS_BACKUP_DIR")
    return Path(env) if env else project_root() / "db_backups"


def backup(directory: Path | None = None, *, url: str | None = None, now: datetime | None = None) -> Manifest:
    """Dump the database with ``pg_dump -Fc`` and write its manifest beside it.

    Parameters
    ----------
    directory : Path, optional
        Backup directory (created 0700); default :func:`default_dir`.
    url : str, optional
        DSN of the database; default the ATS database.
    now : datetime, optional
        UTC time used in the file name (tests); default the wall clock.

    Returns
    -------
    Manifest
        The manifest written to ``<stem>.json``.

    Raises
    ------
    AtsError
        pg_dump missing or failed (the partial dump is removed), or the directory is not writable.
    """
    target = url or database_url()
    directory = Path(directory or default_dir())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    with connect(target, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            info = conn.execute("SELECT current_database() AS db, current_setting('server_version') AS v").fetchone()
            counts = row_counts(conn)
    exe = pg_tool("pg_dump", info["v"])
    name = f"ats_{re.sub(r'[^A-Za-z0-9_]', '_', info['db'])}_{started.strftime(TS_FORMAT)}.dump"
    out, part = directory / name, directory / (name + ".part")
    t0 = time.monotonic()
    res = subprocess.run([str(exe), "-Fc", "--no-password", "-f", str(part), "--dbname", target],
                         capture_output=True, text=True)
    duration = time.monotonic() - t0
    if res.returncode != 0:
        part.unlink(missing_ok=True)
        raise AtsError(f"pg_dump of {describe_url(target)} failed (exit {res.returncode}): "
                       f"{_last_line(res.stderr)}")
    part.rename(out)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout.strip()
    man = Manifest(file=name, database=info["db"], created_at=started.isoformat(timespec="seconds"),
                   size_bytes=out.stat().st_size, sha256=sha256_file(out), duration_s=round(duration, 3),
                   server_version=info["v"], pg_dump=f"{exe} ({version})", row_counts=counts)
    man.path_in(directory).write_text(json.dumps(asdict(man), indent=2) + "\n", encoding="utf-8")
    return man


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# ---- rotation -----------------------------------------------------------------------------------------

def dump_time(path: Path) -> datetime | None:
    """The UTC time encoded in a dump's file name, or None for a file that is not an ATS dump."""
    m = NAME_RE.match(path.name)
    if not m:
        return None
    return datetime.strptime(m.group("ts"), TS_FORMAT).replace(tzinfo=timezone.utc)


def plan_rotation(paths: list[Path], keep_daily: int, keep_weekly: int) -> tuple[list[Path], list[Path]]:
    """Split dumps into (keep, delete) by the daily/weekly rule of the module docstring.

    Parameters
    ----------
    paths : list of Path
        Dump files; names that are not ATS dumps are ignored (neither kept nor deleted).
    keep_daily, keep_weekly : int
        N days and M ISO weeks (>= 0). The newest dump is always kept.

    Returns
    -------
    (keep, delete) : tuple of lists of Path, each sorted oldest first.
    """
    if keep_daily < 0 or keep_weekly < 0:
        raise UsageError(f"backup rotation: keep_daily={keep_daily}, keep_weekly={keep_weekly} must be >= 0")
    dated = sorted(((dump_time(p), p) for p in paths if dump_time(p) is not None), reverse=True)
    keep: set[Path] = set()
    days: list = []
    weeks: list = []
    for ts, p in dated:  # newest first: the first dump seen of a day / week is its newest
        day, week = ts.date(), ts.isocalendar()[:2]
        if day not in days:
            days.append(day)
            if len(days) <= keep_daily:
                keep.add(p)
        if week not in weeks:
            weeks.append(week)
            if len(weeks) <= keep_weekly:
                keep.add(p)
    if dated:
        keep.add(dated[0][1])
    ordered = [p for _, p in reversed(dated)]
    return [p for p in ordered if p in keep], [p for p in ordered if p not in keep]


def rotation_settings(url: str | None = None) -> tuple[int, int]:
    """(keep_daily, keep_weekly) from ``system_settings`` (defaults of :data:`SETTINGS` when absent)."""
    from .config_store import setting_as_of

    with connect(url or database_url()) as conn:
        vals = [int(setting_as_of(conn, k, default=SETTINGS[k][0])) for k in ("backup.keep_daily",
                                                                                "backup.keep_weekly")]
    return vals[0], vals[1]


def rotate(directory: Path, keep_daily: int, keep_weekly: int) -> list[Path]:
    """Delete the dumps (and their manifests) that :func:`plan_rotation` does not keep; returns the deleted dumps."""
    _, delete = plan_rotation(list(Path(directory).glob("ats_*.dump")), keep_daily, keep_weekly)
    for p in delete:
        p.unlink(missing_ok=True)
        p.with_suffix(".json").unlink(missing_ok=True)
    return delete


# ---- restore ------------------------------------------------------------------------------------------

@dataclass
class RestoreResult:
    """Outcome of :func:`restore`: the scratch database and every table whose count differs from the manifest.

    ``mismatches`` maps ``"public.table"`` to ``(expected, restored)``; a table missing on either side has
    ``None`` on that side.
    """

    database: str
    url: str
    tables: int
    mismatches: dict[str, tuple[int | None, int | None]]
    duration_s: float

    @property
    def ok(self) -> bool:
        """True when every row count equals the manifest's."""
        return not self.mismatches


def load_manifest(dump: Path) -> Manifest:
    """Read ``<dump stem>.json``; AtsError when it is missing or the dump's sha256 differs from it."""
    mpath = dump.with_suffix(".json")
    if not mpath.is_file():
        raise AtsError(f"no manifest {mpath} beside {dump}")
    man = Manifest(**json.loads(mpath.read_text(encoding="utf-8")))
    digest = sha256_file(dump)
    if digest != man.sha256:
        raise AtsError(f"{dump}: sha256 {digest[:12]}... differs from its manifest ({man.sha256[:12]}...)")
    return man


def restore(dump: Path, into: str, *, url: str | None = None) -> RestoreResult:
    """Restore ``dump`` into a NEW database ``into`` on the same server and compare row counts with its manifest.

    Parameters
    ----------
    dump : Path
        A ``.dump`` written by :func:`backup` (its manifest must be beside it).
    into : str
        Name of the scratch database to create; it must not exist (never restores over a database).
    url : str, optional
        DSN of the server (any database on it); default the ATS database.

    Returns
    -------
    RestoreResult

    Raises
    ------
    AtsError
        Missing/corrupt dump or manifest, target exists, pg_restore failed (the scratch DB is dropped).
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", into):
        raise UsageError(f"--into {into!r}: use letters, digits and _ (a new scratch database name)")
    dump = Path(dump)
    if not dump.is_file():
        raise AtsError(f"no dump file {dump}")
    man = load_manifest(dump)
    base = url or database_url()
    with connect(base, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (into,)).fetchone():
            raise AtsError(f"database {into!r} already exists: restore only into a new scratch database")
        version = admin.execute("SHOW server_version").fetchone()["server_version"]
        admin.execute(f'CREATE DATABASE "{into}"')
    target = with_dbname(base, into)
    exe = pg_tool("pg_restore", version)
    t0 = time.monotonic()
    res = subprocess.run([str(exe), "--no-owner", "--no-acl", "--exit-on-error", "--no-password",
                          "--dbname", target, str(dump)], capture_output=True, text=True)
    duration = time.monotonic() - t0
    if res.returncode != 0:
        with connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{into}" WITH (FORCE)')
        raise AtsError(f"pg_restore of {dump.name} into {into} failed (exit {res.returncode}): "
                       f"{_last_line(res.stderr)}")
    with connect(target) as conn:
        got = row_counts(conn)
    mism = {t: (man.row_counts.get(t), got.get(t)) for t in sorted(set(man.row_counts) | set(got))
            if man.row_counts.get(t) != got.get(t)}
    return RestoreResult(database=into, url=target, tables=len(got), mismatches=mism, duration_s=round(duration, 3))


def record_outcome(event_type: str, payload: dict, *, severity: str = "info", url: str | None = None) -> int | None:
    """Append a ``system_events`` row (component 'backup'): ``backup_done`` / ``backup_failed`` / ``restore_*``.

    Returns the event_id, or None when the database itself is unreachable (the caller still exits non-zero).
    """
    from .events import record_event

    try:
        with connect(url or database_url()) as conn:
            with conn.transaction():
                return record_event(conn, "backup", event_type, severity=severity, payload=payload)
    except Exception:
        return None
