"""`ats demo`: the main job on a fresh machine.

Today: bring the database up (embedded unless ATS_DATABASE_URL), migrate it, print its status. The engine
issue extends it with real candles, a replay of Dec 2020 - Jul 2021 and a summary.
"""

from __future__ import annotations

CLI_ORDER = 1

import argparse

from .db import connection, migrate as mig


def run_demo(args) -> int:
    """Run the demo; returns the exit code."""
    url = connection.database_url()
    applied = mig.migrate(url)
    info = connection.server_info(url)
    st = mig.status(url)
    print(f"database: {info['mode']} PostgreSQL {info['server_version']} ({info['dsn']})")
    print(f"migrations: level {st['level']:04d}, {len(applied)} applied now")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats demo`."""
    p = sub.add_parser("demo", help="the main job: database up, real candles, replay, summary")
    p.set_defaults(func=run_demo)
