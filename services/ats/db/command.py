"""The one connection helper of the `ats` command handlers.

Every package's ``cli.py`` opens its connection here, so that the application name seen in
``pg_stat_activity`` and the "apply pending migrations on an older database" rule live in one place.
"""

from __future__ import annotations

import psycopg


def command_connection(application_name: str = "ats", *, require_table: str | None = None) -> psycopg.Connection:
    """Open the connection of one CLI command (dict rows, autocommit off).

    Parameters
    ----------
    application_name : str
        Shown in ``pg_stat_activity`` (e.g. ``"ats-docs-cli"``).
    require_table : str, optional
        A table the command needs. When it does not exist (an older database), pending migrations are applied
        with :func:`ats.db.migrate.migrate` and a fresh connection is returned.

    Returns
    -------
    psycopg.Connection
        An open connection; use it as a context manager.

    Raises
    ------
    ats.errors.AtsError
        When the server cannot be reached (message names the target, never the password).
    """
    from .connection import connect

    conn = connect(application_name=application_name)
    if require_table is None:
        return conn
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS e", (require_table,)).fetchone()
    if row["e"]:
        return conn
    from .migrate import migrate

    conn.close()
    migrate()  # as the owner
    return connect(application_name=application_name)
