"""`ats db doctor`: check (and repair) the state of the embedded PostgreSQL a crash may have left behind.

Checks, in order (each ends 'ok', 'repaired' or 'problem'):

1. ``mode``          : embedded server or ``ATS_DATABASE_URL`` (then nothing else is checked).
2. ``start_lock``    : the start-up lock file is free (a held lock means another ats is starting the server).
3. ``initdb_tmp``    : no temporary initdb directory from a crashed first start (repair: removed; never data).
4. ``cluster``       : the data directory holds a complete cluster, or does not exist yet (created on first use).
5. ``handle_pids``   : pgserver's ``.handle_pids.json`` is absent or a list of live pids (repair: atomic rewrite).
6. ``postmaster_pid``: ``postmaster.pid`` names the live postmaster of this pgdata (repair: stale file set aside).
7. ``server``        : the server accepts connections (repair: started, or a starting server waited for).
8. ``database``      : database ``ats`` exists (repair: created).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import embedded

OK, REPAIRED, PROBLEM = "ok", "repaired", "problem"


@dataclass(frozen=True)
class Check:
    """One doctor check: ``name``, ``status`` ('ok' | 'repaired' | 'problem') and a one-line ``detail``."""

    name: str
    status: str
    detail: str


@dataclass
class DoctorResult:
    """All checks of one doctor run.

    Attributes
    ----------
    pgdata : str or None
        Data directory examined (None when ``ATS_DATABASE_URL`` is used).
    repair : bool
        Whether repairs were allowed (False with ``--check-only``).
    checks : list of Check
        In the order they ran.
    """

    pgdata: str | None
    repair: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check ended in 'problem'."""
        return all(c.status != PROBLEM for c in self.checks)

    def to_dict(self) -> dict:
        """JSON-ready form: pgdata, repair, ok, checks."""
        return {"pgdata": self.pgdata, "repair": self.repair, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


def _lock_free(pgdata: Path) -> bool:
    lp = embedded.lock_path(pgdata)
    if not lp.exists():
        return True
    fd = os.open(str(lp), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _check_leftovers(pgdata: Path, repair: bool) -> Check:
    left = embedded.initdb_leftovers(pgdata)
    if not left:
        return Check("initdb_tmp", OK, "no temporary initdb directory")
    names = ", ".join(p.name for p in left)
    if not repair:
        return Check("initdb_tmp", PROBLEM, f"left by a crashed first start: {names} (repair removes them)")
    embedded.remove_initdb_leftovers(pgdata)
    return Check("initdb_tmp", REPAIRED, f"removed {names}")


def _check_cluster(pgdata: Path) -> Check:
    if not pgdata.exists():
        return Check("cluster", OK, f"{pgdata} does not exist yet (initialised on first use)")
    if embedded.is_initialized(pgdata):
        return Check("cluster", OK, f"PostgreSQL {(pgdata / 'PG_VERSION').read_text().strip()} cluster in {pgdata}")
    others = [p.name for p in pgdata.iterdir() if p.name not in embedded._OURS_IN_EMPTY_PGDATA]
    if others:
        return Check("cluster", PROBLEM, f"{pgdata} is not a cluster but holds {', '.join(sorted(others)[:5])}")
    return Check("cluster", OK, f"{pgdata} holds no cluster yet (initialised on first use)")


def _check_handle_pids(pgdata: Path, repair: bool) -> Check:
    st = embedded.read_handle_pids(pgdata)
    if st.state == "absent":
        return Check("handle_pids", OK, "no .handle_pids.json (not used by ATS)")
    if st.state == "ok":
        return Check("handle_pids", OK, f".handle_pids.json lists {len(st.pids)} live pid(s)")
    what = ("empty or unparsable" if st.state == "corrupt"
            else f"{len(st.pids) - len(st.live)} dead of {len(st.pids)} pids")
    if not repair:
        return Check("handle_pids", PROBLEM, f".handle_pids.json is {what} (repair rewrites it)")
    embedded.repair_handle_pids(pgdata)
    return Check("handle_pids", REPAIRED, f".handle_pids.json was {what}; rewrote it with {len(st.live)} live pid(s)")


def _check_postmaster_pid(pgdata: Path, repair: bool) -> Check:
    st = embedded.inspect_postmaster(pgdata)
    if st.state in ("running", "none"):
        return Check("postmaster_pid", OK, st.detail)
    if not repair:
        return Check("postmaster_pid", PROBLEM, f"{st.detail} (repair sets it aside)")
    dest = embedded.set_aside_postmaster_pid(pgdata)
    return Check("postmaster_pid", REPAIRED, f"{st.detail}; moved to {dest.name if dest else '-'}")


def _check_server(pgdata: Path, repair: bool) -> tuple[Check, str | None]:
    st = embedded.inspect_postmaster(pgdata) if pgdata.exists() else embedded.PostmasterState("none")
    if st.state == "running" and st.socket_dir is not None and embedded._accepts_connections(st.socket_dir):
        return Check("server", OK, f"running, {st.detail}, socket {st.socket_dir}"), embedded.admin_uri(st.socket_dir)
    if not repair:
        return Check("server", PROBLEM, f"not accepting connections ({st.detail}); repair starts it"), None
    try:
        uri = embedded.ensure_running(pgdata)
    except Exception as exc:  # report, never raise: the doctor's job is to say what is wrong
        return Check("server", PROBLEM, f"could not start: {str(exc).splitlines()[0] if str(exc) else exc!r}"), None
    now = embedded.inspect_postmaster(pgdata)
    return Check("server", REPAIRED, f"started, {now.detail}"), uri


def _check_database(admin: str, repair: bool) -> Check:
    import psycopg

    from .connection import EMBEDDED_DB, _ensure_embedded_database

    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)).fetchone()
    if exists:
        return Check("database", OK, f"database {EMBEDDED_DB!r} exists")
    if not repair:
        return Check("database", PROBLEM, f"database {EMBEDDED_DB!r} missing (repair creates it)")
    _ensure_embedded_database(admin)
    return Check("database", REPAIRED, f"created database {EMBEDDED_DB!r}")


def run_doctor(pgdata: Path | None = None, *, repair: bool = True) -> DoctorResult:
    """Check the embedded server's on-disk and process state; repair what a crash left behind.

    Parameters
    ----------
    pgdata : Path, optional
        Data directory; default `ats.db.connection.pgdata_dir()`.
    repair : bool
        False checks only (``--check-only``): repairable states are reported as 'problem'.

    Returns
    -------
    DoctorResult
        One `Check` per line of the module docstring; ``result.ok`` is False when a problem remains.
    """
    from .connection import external_url, pgdata_dir

    if external_url() and pgdata is None:
        res = DoctorResult(None, repair)
        res.checks.append(Check("mode", OK, "ATS_DATABASE_URL is set: no embedded server to check"))
        return res
    d = Path(os.path.abspath(pgdata or pgdata_dir()))
    res = DoctorResult(str(d), repair)
    res.checks.append(Check("mode", OK, f"embedded PostgreSQL in {d}"))
    if not _lock_free(d):
        res.checks.append(Check("start_lock", OK, "held: another ats process is starting or stopping the server"))
    else:
        res.checks.append(Check("start_lock", OK, f"free ({embedded.lock_path(d).name})"))
    # repairs of on-disk state happen under the start-up lock, so no concurrent start-up sees them half done
    with (embedded.startup_lock(d) if repair else nullcontext()):
        res.checks.append(_check_leftovers(d, repair))
        cluster = _check_cluster(d)
        res.checks.append(cluster)
        if cluster.status == PROBLEM:
            return res
        if d.exists():
            res.checks.append(_check_handle_pids(d, repair))
            res.checks.append(_check_postmaster_pid(d, repair))
    server, admin = _check_server(d, repair)
    res.checks.append(server)
    if admin is not None:
        res.checks.append(_check_database(admin, repair))
    return res
