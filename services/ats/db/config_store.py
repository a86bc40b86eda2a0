"""Strategy configurations and system settings: current values and point-in-time ("as of T") reads.

Writes go to `strategy_configurations` / `system_settings`; triggers (migration 0001) append every change to
the `*_history` tables with ``valid_from = effective_from``. A change may be back-dated or scheduled by passing
``effective_from`` (UTC); otherwise it takes effect at the write's ``now()``.

Shapes: a strategy configuration is a dict ``{account_id, strategy_name, watchlist_enabled, buy_enabled,
sell_enabled, params: dict, valid_from}``; a setting is a JSON value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..errors import AtsError

GATES = ("watchlist_enabled", "buy_enabled", "sell_enabled")
DEFAULT_ACCOUNT = "default"


def upsert_strategy(conn: psycopg.Connection, strategy: str, *, account_id: str = DEFAULT_ACCOUNT,
                    params: dict | None = None, merge_params: bool = True,
                    effective_from: datetime | None = None, **gates: bool) -> dict:
    """Create or update one strategy's configuration; returns the current row.

    ``gates``: any of watchlist_enabled / buy_enabled / sell_enabled. ``params`` are merged into the existing
    params (``merge_params=False`` replaces them). Raises AtsError on an unknown gate name.
    """
    bad = set(gates) - set(GATES)
    if bad:
        raise AtsError(f"unknown strategy gate(s) {sorted(bad)}; expected {list(GATES)}")
    cur = conn.execute("SELECT * FROM strategy_configurations WHERE account_id=%s AND strategy_name=%s",
                       (account_id, strategy)).fetchone()
    if cur is None:
        cols = {"account_id": account_id, "strategy_name": strategy, "params": Jsonb(params or {}), **gates}
        if effective_from is not None:
            cols["effective_from"] = effective_from
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        return conn.execute(f"INSERT INTO strategy_configurations ({names}) VALUES ({marks}) RETURNING *",
                            list(cols.values())).fetchone()
    new_params = dict(cur["params"]) if merge_params else {}
    new_params.update(params or {})
    sets = {"params": Jsonb(new_params), **gates}
    if effective_from is not None:
        sets["effective_from"] = effective_from
    assign = ", ".join(f"{k} = %s" for k in sets)
    return conn.execute(
        f"UPDATE strategy_configurations SET {assign} WHERE account_id=%s AND strategy_name=%s RETURNING *",
        [*sets.values(), account_id, strategy]).fetchone()


def strategy_as_of(conn: psycopg.Connection, strategy: str, as_of: datetime, *,
                   account_id: str = DEFAULT_ACCOUNT, as_known_at: datetime | None = None) -> dict | None:
    """The configuration in force at ``as_of`` as the system knew it at ``as_known_at``.

    Bitemporal: ``valid_from`` is when a version takes effect (valid time), ``recorded_at`` when it was written
    (transaction time, wall clock). The answer is the latest history row with ``valid_from <= as_of`` among the
    rows with ``recorded_at <= as_known_at`` (all rows when ``as_known_at`` is None), so a change back-dated after
    the fact does not rewrite what was believed before it was recorded.

    Returns
    -------
    dict or None
        ``account_id, strategy_name, watchlist_enabled, buy_enabled, sell_enabled, params, valid_from``; None when the strategy did not exist (or was deleted) then.
    """
    row = conn.execute(
        """SELECT account_id, strategy_name, operation, watchlist_enabled, buy_enabled, sell_enabled, params,
                  valid_from
             FROM strategy_configurations_history
            WHERE account_id = %s AND strategy_name = %s AND valid_from <= %s
              AND (%s::timestamptz IS NULL OR recorded_at <= %s::timestamptz)
            ORDER BY valid_from DESC, history_id DESC LIMIT 1""",
        (account_id, strategy, as_of, as_known_at, as_known_at)).fetchone()
    if row is None or row["operation"] == "DELETE":
        return None
    row = dict(row)
    row.pop("operation")
    return row


def strategy_timeline(conn: psycopg.Connection, strategy: str, *, account_id: str = DEFAULT_ACCOUNT) -> list[dict]:
    """Every configuration version of a strategy, oldest first (history rows; DELETE rows included)."""
    return conn.execute(
        """SELECT * FROM strategy_configurations_history WHERE account_id=%s AND strategy_name=%s
            ORDER BY valid_from, history_id""", (account_id, strategy)).fetchall()


def current_strategies(conn: psycopg.Connection, *, account_id: str = DEFAULT_ACCOUNT) -> list[dict]:
    """All current strategy configurations of an account, by name."""
    return conn.execute("SELECT * FROM strategy_configurations WHERE account_id=%s ORDER BY strategy_name",
                        (account_id,)).fetchall()


def set_setting(conn: psycopg.Connection, key: str, value: Any, *, account_id: str = DEFAULT_ACCOUNT,
                description: str | None = None, effective_from: datetime | None = None) -> dict:
    """Create or update a system setting (any JSON value); returns the current row."""
    cols = {"account_id": account_id, "key": key, "value": Jsonb(value)}
    if description is not None:
        cols["description"] = description
    if effective_from is not None:
        cols["effective_from"] = effective_from
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in cols if k not in ("account_id", "key"))
    return conn.execute(
        f"INSERT INTO system_settings ({names}) VALUES ({marks}) "
        f"ON CONFLICT (account_id, key) DO UPDATE SET {updates} RETURNING *", list(cols.values())).fetchone()


def setting_as_of(conn: psycopg.Connection, key: str, as_of: datetime | None = None, *, default: Any = None,
                  account_id: str = DEFAULT_ACCOUNT, as_known_at: datetime | None = None) -> Any:
    """The value of ``key`` in force at ``as_of`` as known at ``as_known_at`` (see :func:`strategy_as_of`).

    ``as_of`` None = the current value (or, with ``as_known_at``, the value in force at ``as_known_at`` as known
    then). Returns ``default`` when the key had no value.
    """
    if as_of is None and as_known_at is None:
        row = conn.execute("SELECT value FROM system_settings WHERE account_id=%s AND key=%s",
                           (account_id, key)).fetchone()
        return default if row is None else row["value"]
    as_of = as_of if as_of is not None else as_known_at
    row = conn.execute(
        """SELECT operation, value FROM system_settings_history
            WHERE account_id=%s AND key=%s AND valid_from <= %s
              AND (%s::timestamptz IS NULL OR recorded_at <= %s::timestamptz)
            ORDER BY valid_from DESC, history_id DESC LIMIT 1""",
        (account_id, key, as_of, as_known_at, as_known_at)).fetchone()
    if row is None or row["operation"] == "DELETE":
        return default
    return row["value"]


def known_at_for(run_started_at: datetime, decision_ts: datetime) -> datetime:
    """When a run knew the configuration it used for a decision at ``decision_ts`` (engine clock).

    A live run decides on the venue's clock, so it knew what was recorded by ``decision_ts``; a replay or backtest
    of the past decided while it ran, so it knew what was recorded by its (wall-clock) start. Both are
    ``max(decision_ts, run_started_at)``.
    """
    return max(decision_ts, run_started_at)
