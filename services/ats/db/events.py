"""The `system_events` audit log: append one event (never update or delete)."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

DEFAULT_ACCOUNT = "default"


def record_event(conn: psycopg.Connection, component: str, event_type: str, *, severity: str = "info",
                 symbol: str | None = None, payload: dict | None = None, ts: datetime | None = None,
                 account_id: str | None = DEFAULT_ACCOUNT) -> int:
    """Append one `system_events` row (ts defaults to now(); pass the engine clock in replays). Returns event_id."""
    row = conn.execute(
        """INSERT INTO system_events (ts, account_id, component, event_type, severity, symbol, payload)
           VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s) RETURNING event_id""",
        (ts, account_id, component, event_type, severity, symbol, Jsonb(payload or {}))).fetchone()
    return row["event_id"] if isinstance(row, dict) else row[0]
