"""`ats db ...`: up, status, url, migrate, down, doctor, backup, restore."""

from __future__ import annotations

CLI_ORDER = 10

import argparse
import json
from pathlib import Path

from ..errors import AtsError

from . import connection, migrate as mig


def _up(args) -> int:
    url = connection.database_url()
    applied = mig.migrate(url)
    info = connection.server_info(url)
    st = mig.status(url)
    print(f"database up ({info['mode']}): PostgreSQL {info['server_version']}, migration level {st['level']:04d}"
          + (f", applied {len(applied)} now" if applied else ""))
    return 0


def _status(args) -> int:
    url = connection.database_url()
    info = connection.server_info(url)
    st = mig.status(url)
    doc = {**info, "migration_level": st["level"], "applied": st["applied"], "pending": st["pending"]}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"mode:            {info['mode']}" + (f" ({info['pgdata']})" if info["pgdata"] else ""))
    print(f"dsn:             {info['dsn']}")
    print(f"server version:  PostgreSQL {info['server_version']}")
    print(f"migration level: {st['level']:04d} ({st['applied']} applied, {len(st['pending'])} pending)")
    for p in st["pending"]:
        print(f"  pending: {p}")
    return 0


def _url(args) -> int:
    url = connection.database_url()
    print(connection.readonly_url(url) if args.role == "readonly" else url)
    return 0


def _migrate(args) -> int:
    applied = mig.migrate()
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"up to date (level {mig.status()['level']:04d})")
    return 0


def _down(args) -> int:
    print(connection.stop_embedded())
    return 0


def _backup(args) -> int:
    from . import backup as bk

    url = connection.database_url()
    try:
        man = bk.backup(args.dir, url=url)
        keep_daily, keep_weekly = bk.rotation_settings(url)
        deleted = bk.rotate(args.dir or bk.default_dir(), keep_daily, keep_weekly)
    except Exception as exc:
        event = bk.record_outcome("backup_failed", {"error": str(exc)[:500]}, severity="error", url=url)
        raise AtsError(f"backup failed{f' (system_events event_id={event})' if event else ''}: {exc}") from exc
    bk.record_outcome("backup_done", {"file": man.file, "size_bytes": man.size_bytes, "sha256": man.sha256,
                                      "duration_s": man.duration_s, "deleted": [p.name for p in deleted]}, url=url)
    total = sum(man.row_counts.values())
    print(f"backup {Path(args.dir or bk.default_dir()) / man.file}: {man.size_bytes} bytes in {man.duration_s}s, "
          f"{len(man.row_counts)} tables / {total} rows, PostgreSQL {man.server_version}; rotation "
          f"(keep {keep_daily} daily, {keep_weekly} weekly) deleted {len(deleted)}")
    return 0


def _restore(args) -> int:
    from . import backup as bk

    res = bk.restore(args.file, args.into)
    if res.ok:
        print(f"restored {args.file} into {res.database} in {res.duration_s}s: row counts of {res.tables} "
              f"tables equal the manifest")
        return 0
    bk.record_outcome("restore_mismatch", {"file": str(args.file), "into": args.into,
                                           "mismatches": {k: list(v) for k, v in res.mismatches.items()}},
                      severity="error")
    for table, (want, got) in res.mismatches.items():
        print(f"  {table}: manifest {want}, restored {got}")
    print(f"restore of {args.file} into {res.database}: {len(res.mismatches)} tables differ from the manifest")
    return 1
def _doctor(args) -> int:
    from .doctor import run_doctor

    res = run_doctor(repair=args.repair)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        for c in res.checks:
            print(f"{c.status:<9} {c.name:<15} {c.detail}")
    return 0 if res.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats db` and its subcommands to the top-level parser."""
    p = sub.add_parser("db", help="database: status, url, migrate, up, down, doctor",
                       description="The ATS database: embedded PostgreSQL (pgserver) unless ATS_DATABASE_URL is set.")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    from .config_commands import register as register_config  # `ats config`: the config store's commands

    register_config(sub)
    q = dsub.add_parser("up", help="start (embedded) and migrate the database, print its status")
    q.set_defaults(func=_up)
    q = dsub.add_parser("status", help="embedded or URL, server version, migration level")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_status)
    q = dsub.add_parser("url", help="print the DSN")
    q.add_argument("--role", choices=["owner", "readonly"], default="owner",
                   help="owner (default) or readonly (the ats_readonly role the MCP server uses)")
    q.set_defaults(func=_url)
    q = dsub.add_parser("migrate", help="apply pending migrations (idempotent)")
    q.set_defaults(func=_migrate)
    q = dsub.add_parser("down", help="stop the embedded PostgreSQL")
    q.set_defaults(func=_down)
    q = dsub.add_parser("backup", help="pg_dump -Fc + manifest (sizes, sha256, row counts), then rotate",
                        description="Dump the database (pg_dump -Fc with a client matching the server), write "
                                    "a manifest beside it and rotate (settings backup.keep_daily / keep_weekly).")
    q.add_argument("--dir", type=Path, default=None, help="backup directory (default db_backups/ or ATS_BACKUP_DIR)")
    q.set_defaults(func=_backup)
    q = dsub.add_parser("restore", help="restore a dump into a new scratch database and verify row counts",
                        description="Create database NAME, pg_restore FILE into it, compare every table's row "
                                    "count with the manifest (exit 1 on any mismatch).")
    q.add_argument("file", type=Path, help="a .dump written by `ats db backup`")
    q.add_argument("--into", required=True, metavar="NAME", help="new scratch database (must not exist)")
    q.set_defaults(func=_restore)
    q = dsub.add_parser("doctor", help="check and repair the embedded server's state after a crash",
                        description="Check (and by default repair) what a crash can leave behind in the embedded "
                                    "PostgreSQL: stale postmaster.pid, corrupt .handle_pids.json, half-done initdb, "
                                    "a server not running. Exit 1 when a problem remains.")
    q.add_argument("--json", action="store_true", help="print JSON")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--repair", dest="repair", action="store_true", default=True, help="repair (default)")
    mode.add_argument("--check-only", dest="repair", action="store_false", help="report only, change nothing")
    q.set_defaults(func=_doctor)
