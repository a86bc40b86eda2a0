"""Database access: DSN resolution (embedded pgserver or ATS_DATABASE_URL), connections, migrations, config store."""

from .connection import connect, database_url, readonly_url, server_info, stop_embedded, pool  # noqa: F401
