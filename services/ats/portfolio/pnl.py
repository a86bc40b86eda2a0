"""P&L windows from ``portfolio_hourly_snapshots`` only.

A window's P&L is the difference of equity between two snapshots: the latest one (``as_of``) and the latest one
at or before the window start (or the run's first snapshot, written at the run start with the starting equity,
when the run is younger than the window). Never sum balances, never sum ``net_pnl_daily_usd`` (a running
cumulative since 00:00 UTC): both give wrong answers (CLAUDE.md, anti-patterns).

Windows: today (since 00:00 UTC of as_of), 7d, 30d, 6m (182 days), all_time (since the run's first snapshot).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from ..errors import AtsError

WINDOWS = (("today", None), ("7d", timedelta(days=7)), ("30d", timedelta(days=30)), ("6m", timedelta(days=182)),
           ("all_time", "all"))


def latest_run(conn: psycopg.Connection, account_id: str = "default") -> str | None:
    """The account's trading run: its most recently started live, paper-live or replay run with snapshots; a
    backtest only when the account has no other run (a backtest is an experiment, not the account's P&L).

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection.
    account_id : str
        Account.

    Returns
    -------
    str or None
        The run id, None when there is none.
    """
    row = conn.execute(
        """SELECT r.run_id FROM engine_runs r
            WHERE r.account_id = %s AND EXISTS (SELECT 1 FROM portfolio_hourly_snapshots s WHERE s.run_id = r.run_id)
            ORDER BY (r.mode = 'backtest'), r.started_at DESC, r.run_id DESC LIMIT 1""", (account_id,)).fetchone()
    return None if row is None else (row["run_id"] if isinstance(row, dict) else row[0])


def pnl_windows(conn: psycopg.Connection, account_id: str = "default", run_id: str | None = None) -> dict:
    """P&L per window for one run, from snapshots only.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    account_id : str
        Account.
    run_id : str, optional
        The run (default: the account's latest run with snapshots).

    Returns
    -------
    dict
        ``{"run_id", "account_id", "as_of" (ISO UTC), "equity_usd", "today"|"7d"|"30d"|"6m"|"all_time":
        {"pnl_usd", "pnl_pct", "from_ts", "from_equity_usd", "covered"}}``; ``covered`` is False when the run is
        younger than the window (the P&L then starts at the run's first snapshot). USD floats, pct in percent.

    Raises
    ------
    AtsError
        When the run has no snapshots (or the account has no run).
    """
    rid = run_id or latest_run(conn, account_id)
    if rid is None:
        raise AtsError(f"no portfolio snapshots for account {account_id!r} (run `ats demo` or `ats engine replay`)")
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    last = cur.execute("""SELECT ts, equity_usd::float8 AS equity FROM portfolio_hourly_snapshots
                           WHERE run_id = %s ORDER BY ts DESC LIMIT 1""", (rid,)).fetchone()
    first = cur.execute("""SELECT ts, equity_usd::float8 AS equity FROM portfolio_hourly_snapshots
                            WHERE run_id = %s ORDER BY ts ASC LIMIT 1""", (rid,)).fetchone()
    if last is None:
        raise AtsError(f"run {rid!r} has no portfolio_hourly_snapshots")
    as_of: datetime = last["ts"]
    out = {"run_id": rid, "account_id": account_id, "as_of": as_of.isoformat(), "equity_usd": round(last["equity"], 2)}
    for name, span in WINDOWS:
        if span == "all":
            base, covered = first, True
        else:
            start = (as_of.replace(hour=0, minute=0, second=0, microsecond=0) if span is None else as_of - span)
            base = cur.execute("""SELECT ts, equity_usd::float8 AS equity FROM portfolio_hourly_snapshots
                                   WHERE run_id = %s AND ts <= %s ORDER BY ts DESC LIMIT 1""", (rid, start)).fetchone()
            covered = base is not None
            if base is None:
                base = first
        pnl = last["equity"] - base["equity"]
        out[name] = {"pnl_usd": round(pnl, 2),
                     "pnl_pct": round(pnl / base["equity"] * 100.0, 4) if base["equity"] else None,
                     "from_ts": base["ts"].isoformat(), "from_equity_usd": round(base["equity"], 2),
                     "covered": covered}
    return out
