"""`ats db ...`: up, status, url, migrate, down."""

from __future__ import annotations

CLI_ORDER = 10

import argparse
import json

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats db` and its subcommands to the top-level parser."""
    p = sub.add_parser("db", help="database: status, url, migrate, up, down",
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
