"""Engine runs: the run specification, its deterministic id, the heavy-run lock and the engine_runs row.

A run is identified by its arguments: the same mode, strategies, symbols, timeframe, window, account, starting
cash, parameter overrides and tag always give the same ``run_id``, so re-running a killed replay with the same
arguments finds its checkpoint and resumes (``engine_runs.last_bar_time``, ``checkpoint``).

Only one heavy run (replay, backtest, demo) at a time per database: ``heavy_lock`` takes
``pg_try_advisory_lock`` on a dedicated connection and raises BusyError when another session holds it; nothing is
queued.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import psycopg
from psycopg.types.json import Jsonb

from ..db.connection import connect
from ..errors import BusyError, UsageError
from ..timeutil import TIMEFRAME_SECONDS

HEAVY_LOCK_KEY = 0x4154535F48454156  # "ATS_HEAV": the default account's key (unchanged since the first release)


def heavy_lock_key(account_id: str = "default") -> int:
    """Advisory-lock key of an account's heavy-run lock: :data:`HEAVY_LOCK_KEY` for ``default``, else the first
    63 bits of SHA-256("ats-heavy:" + account) -- one heavy run per account, accounts never wait for each other."""
    if account_id == "default":
        return HEAVY_LOCK_KEY
    return int.from_bytes(hashlib.sha256(f"ats-heavy:{account_id}".encode()).digest()[:8], "big") & (2 ** 63 - 1)
MODES = ("replay", "backtest", "live")


@dataclass(frozen=True)
class RunSpec:
    """What to run. ``start``/``end``: Unix seconds, bars with start <= open_time < end are decided on.
    ``starting_cash``: USD (None = the account's accounts.starting_cash, resolved by ``resolve``)."""

    mode: str
    strategies: tuple[str, ...]
    symbols: tuple[str, ...]
    timeframe: str
    start: int
    end: int
    account_id: str = "default"
    starting_cash: float | None = None
    tag: str = ""
    param_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"unknown run mode {self.mode!r}; expected one of {MODES}")
        if self.timeframe not in TIMEFRAME_SECONDS:
            raise UsageError(f"unknown timeframe {self.timeframe!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}")
        if self.end <= self.start:
            raise UsageError("--end must be after --start")
        if not self.symbols:
            raise UsageError("no symbols given")
        if not self.strategies:
            raise UsageError("no strategies given")

    def doc(self) -> dict:
        """The JSON stored in engine_runs.params (times as ISO-8601 UTC)."""
        d = asdict(self)
        d["strategies"], d["symbols"] = list(self.strategies), list(self.symbols)
        d["start"] = datetime.fromtimestamp(self.start, tz=timezone.utc).isoformat()
        d["end"] = datetime.fromtimestamp(self.end, tz=timezone.utc).isoformat()
        d["broker"] = "paper"
        return d

    @property
    def run_id(self) -> str:
        """``<mode>-<12 hex>``: SHA-256 of the canonical arguments (same arguments -> same id)."""
        h = hashlib.sha256(json.dumps(self.doc(), sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.mode}-{h}"


def make_spec(mode: str, *, strategies, symbols, timeframe: str, start, end, account_id: str = "default",
              starting_cash: float | None = None, tag: str = "", param_overrides: dict | None = None) -> RunSpec:
    """Build a RunSpec from CLI-ish values.

    Symbols are upper-cased and sorted, strategies sorted, so argument order does not change the run id.

    Parameters
    ----------
    mode : {'replay', 'backtest', ...}
        Run mode (``MODES``).
    strategies, symbols : list of str or str
        Lists or comma-separated strings.
    timeframe : str
        Candle timeframe.
    start, end : datetime or str or int
        Window (datetimes or ISO-8601 UTC strings; end exclusive).
    account_id : str
        Account.
    starting_cash : float, optional
        USD (default: the account's, see ``resolve``).
    tag : str
        Distinguishes otherwise identical runs.
    param_overrides : dict, optional
        Strategy name -> params overriding the stored configuration.

    Returns
    -------
    RunSpec

    Raises
    ------
    UsageError
        On an unknown mode or timeframe, an empty window, or no symbols or strategies.
    """
    from ..timeutil import parse_ts

    def _list(v):
        if isinstance(v, str):
            v = [x for x in v.split(",")]
        return tuple(sorted({x.strip() for x in v if x and x.strip()}))

    s = int(parse_ts(start, what="--start").timestamp())
    e = int(parse_ts(end, what="--end").timestamp())
    return RunSpec(mode, _list(strategies), tuple(x.upper() for x in _list(symbols)), timeframe, s, e, account_id,
                   starting_cash, tag or "", dict(param_overrides or {}))


def resolve(conn: psycopg.Connection, spec: RunSpec) -> RunSpec:
    """Fill in the account's starting cash when the spec leaves it None.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    spec : RunSpec
        The run.

    Returns
    -------
    RunSpec
        ``spec`` itself, or a copy with ``starting_cash`` from ``accounts`` (USD).

    Raises
    ------
    UsageError
        On an unknown account.
    """
    row = conn.execute("SELECT starting_cash::float8 AS c FROM accounts WHERE account_id = %s",
                       (spec.account_id,)).fetchone()
    if row is None:
        raise UsageError(f"unknown account {spec.account_id!r} (table accounts)")
    if spec.starting_cash is not None:
        return spec
    from dataclasses import replace

    return replace(spec, starting_cash=float(row["c"] if isinstance(row, dict) else row[0]))


@contextmanager
def heavy_lock(url: str | None = None, *, what: str = "run", account_id: str | None = None
               ) -> Iterator[psycopg.Connection]:
    """Hold the heavy-run advisory lock for the duration of the block (on its own connection).

    Parameters
    ----------
    url : str, optional
        Database URL (default ``ATS_DATABASE_URL``).
    what : str
        What holds it (shown to a session that finds it busy).
    account_id : str, optional
        Whose lock (:func:`heavy_lock_key`); default the process's bound account (``ATS_ACCOUNT``).

    Yields
    ------
    psycopg.Connection
        The connection holding the lock.

    Raises
    ------
    BusyError
        Immediately when another session holds it ("busy: ..." naming that session).
    """
    from ..paths import bound_account

    key = heavy_lock_key(account_id or bound_account())
    conn = connect(url, autocommit=True, application_name=f"ats-heavy:{what}"[:60])
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()["ok"]
        if not got:
            holder = conn.execute(
                """SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l
                     JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted
                      AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1""",
                (key,)).fetchone()
            who = (f"pid {holder['pid']} ({holder['application_name'] or 'unnamed'}, since "
                   f"{holder['backend_start']:%Y-%m-%d %H:%M:%S})" if holder else "another session")
            raise BusyError(f"busy: another heavy run (replay/backtest/demo) of account {account_id or bound_account()} holds "
                            f"its lock on this database: {who}; "
                            "nothing was queued, retry when it has finished")
        try:
            yield conn
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.Error:
                pass
    finally:
        conn.close()


def get_run(conn: psycopg.Connection, run_id: str) -> dict | None:
    """The ``engine_runs`` row of ``run_id``.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    run_id : str
        The run.

    Returns
    -------
    dict or None
        The row, None when there is none.
    """
    return conn.execute("SELECT * FROM engine_runs WHERE run_id = %s", (run_id,)).fetchone()


def begin_run(conn: psycopg.Connection, spec: RunSpec) -> tuple[str, dict]:
    """Create the run row or find it. Commits.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    spec : RunSpec
        The run.

    Returns
    -------
    tuple of (str, dict)
        (state, row): 'new' (created), 'resume' (exists, not completed: continue from its checkpoint) or
        'completed' (nothing to do).
    """
    rid = spec.run_id
    row = get_run(conn, rid)
    if row is None:
        conn.execute("""INSERT INTO engine_runs (run_id, account_id, mode, status, params)
                        VALUES (%s, %s, %s, 'running', %s)""",
                     (rid, spec.account_id, spec.mode, Jsonb(spec.doc())))
        conn.commit()
        return "new", get_run(conn, rid)
    if row["status"] == "completed":
        return "completed", row
    conn.execute("UPDATE engine_runs SET status='running' WHERE run_id=%s", (rid,))
    conn.commit()
    return "resume", get_run(conn, rid)


def finish_run(conn: psycopg.Connection, run_id: str, status: str, summary: dict | None) -> None:
    """Set the final status, finished_at and summary of a run. Commits.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection.
    run_id : str
        The run.
    status : {'completed', 'failed', 'interrupted'}
        Final status.
    summary : dict or None
        The run summary (None keeps the stored one).
    """
    conn.execute("UPDATE engine_runs SET status=%s, finished_at=now(), summary=coalesce(%s, summary) WHERE run_id=%s",
                 (status, None if summary is None else Jsonb(summary), run_id))
    conn.commit()
