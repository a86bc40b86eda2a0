"""Live monitor, the daemon: start / run / status / stop of the background process that appends one
:func:`ats.ops.monitor.poll` line per interval to ``logs/live-monitor/<account>/<YYYY-MM-DD>.jsonl``.

Files (through :mod:`ats.paths`; ``ATS_LOG_DIR`` moves the logs like every other log):

- the trail: ``<logs>/live-monitor/<account>/<UTC date of the poll>.jsonl``, one JSON object per line, appended
  with one ``write`` each (``O_APPEND``); the daemon's own stderr goes to ``daemon.log`` beside it;
- state: ``account_path('monitor', account)`` (``.ats/monitor`` for the default account): ``monitor.lock`` (held
  with ``fcntl.flock`` for the daemon's whole life: the authority on "running"), ``monitor.pid`` (the pid) and
  ``monitor.json`` (pid, session id, interval, started_at / stopped_at, the trail directory).

A second ``start`` while the lock is held fails with "already running (pid N)". A pidfile whose lock is free is
stale (the daemon was killed): ``start``, ``status`` and ``stop`` say so; ``start`` replaces it. ``start`` detaches
the daemon with ``subprocess.Popen(start_new_session=True)``: it survives the terminal or chat session that started
it, not a reboot (by design: a reboot ends the live loop too). SIGTERM ends it after the current poll.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..errors import AtsError, BusyError

DEFAULT_INTERVAL_S = 30.0
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class MonitorPaths:
    """Where one account's monitor keeps its trail and state (see module docstring)."""

    account: str
    log_dir: Path
    state_dir: Path

    @property
    def lock(self) -> Path:
        return self.state_dir / "monitor.lock"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "monitor.pid"

    @property
    def state(self) -> Path:
        return self.state_dir / "monitor.json"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "daemon.log"

    def jsonl(self, when: datetime) -> Path:
        """The trail file of the UTC date of ``when``."""
        return self.log_dir / f"{when.astimezone(timezone.utc):%Y-%m-%d}.jsonl"


def monitor_paths(account: str | None = None) -> MonitorPaths:
    """The monitor's paths for ``account`` (default: the bound account).

    The trail is ``<logs>/live-monitor/<account>/`` with ``<logs>`` = ``ATS_LOG_DIR`` or ``<root>/logs`` (the
    base of :func:`ats.paths.account_path` ``('logs', 'default')``: every account's trail sits under one
    ``live-monitor/`` directory, named by account); state is ``account_path('monitor', account)``.

    Raises
    ------
    ValueError
        An invalid account id (from :func:`ats.paths.account_path`).
    """
    acct = account or paths.bound_account()
    state = paths.account_path("monitor", acct)
    return MonitorPaths(acct, paths.account_path("logs", paths.DEFAULT_ACCOUNT) / "live-monitor" / acct, state)


# ---------------------------------------------------------------------------------------------------- lock

class MonitorLock:
    """The daemon's exclusive ``flock`` on ``monitor.lock`` (non-blocking)."""

    def __init__(self, mp: MonitorPaths):
        self.mp = mp
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        self.mp.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.mp.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def lock_is_held(mp: MonitorPaths) -> bool:
    """True when some process holds the monitor lock of ``mp`` (probe: take and release it at once)."""
    probe = MonitorLock(mp)
    if probe.acquire():
        probe.release()
        return False
    return True


def read_pid(mp: MonitorPaths) -> int | None:
    """The pid in ``monitor.pid``, or None (absent or unreadable)."""
    try:
        return int(mp.pidfile.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def read_state(mp: MonitorPaths) -> dict:
    """``monitor.json`` as a dict ({} when absent or unreadable)."""
    try:
        return json.loads(mp.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Liveness:
    """What the lock and the pidfile say: running (lock held), pid, stale (a pidfile without a lock holder)."""

    running: bool
    pid: int | None
    stale: bool

    def stale_message(self) -> str:
        return f"stale pidfile: monitor pid {self.pid} is not running (killed?)"


def liveness(mp: MonitorPaths) -> Liveness:
    """Running = the lock is held; stale = a pidfile exists while nobody holds the lock."""
    held = lock_is_held(mp)
    pid = read_pid(mp)
    return Liveness(held, pid, stale=(not held and pid is not None))


# ---------------------------------------------------------------------------------------------------- trail

def append_line(mp: MonitorPaths, line: dict) -> Path:
    """Append ``line`` as one JSON line to the trail file of its ``ts`` (one ``write``, ``O_APPEND``); returns it."""
    when = datetime.fromisoformat(line["ts"]) if isinstance(line.get("ts"), str) else datetime.now(timezone.utc)
    path = mp.jsonl(when)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def trail_files(mp: MonitorPaths) -> list[Path]:
    """The account's trail files, oldest first."""
    return sorted(mp.log_dir.glob("????-??-??.jsonl")) if mp.log_dir.is_dir() else []


def read_lines(mp: MonitorPaths, since: str | None = None, until: str | None = None) -> list[dict]:
    """Every trail line with ``since <= ts <= until`` (ISO UTC strings compared as times), oldest first.

    A line that is not valid JSON (a write cut by a crash) is skipped; the caller sees only whole lines.
    """
    lo = datetime.fromisoformat(since) if since else None
    hi = datetime.fromisoformat(until) if until else None
    out = []
    for f in trail_files(mp):
        if lo is not None and f.stem < f"{lo:%Y-%m-%d}":
            continue
        with f.open(encoding="utf-8") as fh:
            for raw in fh:
                try:
                    line = json.loads(raw)
                    ts = datetime.fromisoformat(line["ts"])
                except (ValueError, KeyError, TypeError):
                    continue
                if (lo is None or ts >= lo) and (hi is None or ts <= hi):
                    out.append(line)
    return out


def last_line(mp: MonitorPaths) -> dict | None:
    """The newest whole line of the trail, or None."""
    for f in reversed(trail_files(mp)):
        lines = f.read_text(encoding="utf-8").splitlines()
        for raw in reversed(lines):
            try:
                return json.loads(raw)
            except ValueError:
                continue
    return None


# ---------------------------------------------------------------------------------------------------- poll

def poll_once(account: str, cursor: dict | None = None) -> dict:
    """One poll for ``account`` on a fresh autocommit connection (see :func:`ats.ops.monitor.poll`).

    Raises
    ------
    AtsError
        The database cannot be reached.
    """
    from ..db.connection import connect
    from .monitor import poll

    with connect(autocommit=True, application_name=f"ats-monitor:{account}"[:60]) as conn:
        return poll(conn, account, cursor=cursor)


def unreachable_line(account: str, exc: Exception, cursor: dict | None) -> dict:
    """The line of a poll that failed (database unreachable, or a bug): one critical ``monitor`` deviation naming
    the exception's type and first line (connection errors name the target, never a password), cursor kept."""
    now = datetime.now(timezone.utc).isoformat()
    msg = f"{type(exc).__name__}: " + (str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    dev = {"check": "monitor", "kind": "poll_failed", "severity": "critical", "id": "monitor:poll_failed:db",
           "message": f"poll failed: {msg}", "evidence": []}
    return {"ts": now, "account": account, "run_id": (cursor or {}).get("run_id"), "cursor": cursor or {},
            "checks": {}, "deviations": [dev], "counts": {"critical": 1}}


def resume_cursor(mp: MonitorPaths) -> dict | None:
    """The cursor of the trail's newest line: where "since the last poll" continues."""
    line = last_line(mp)
    return (line or {}).get("cursor")


# ---------------------------------------------------------------------------------------------------- daemon

def run_daemon(account: str, interval_s: float = DEFAULT_INTERVAL_S, *, max_polls: int | None = None) -> int:
    """The daemon's body (``ats monitor run``): take the lock, write the pidfile, poll every ``interval_s`` seconds
    until SIGTERM / SIGINT (or ``max_polls``), then remove the pidfile and release the lock.

    Parameters
    ----------
    account : str
        The watched account.
    interval_s : float
        Seconds between the starts of two polls (> 0).
    max_polls : int, optional
        Stop after this many polls (tests, one-shot runs).

    Returns
    -------
    int
        0 after a clean stop.

    Raises
    ------
    BusyError
        Another monitor of this account holds the lock ("already running (pid N)").
    AtsError
        ``interval_s`` <= 0.
    """
    if not interval_s or interval_s <= 0:
        raise AtsError(f"monitor: --interval must be > 0 seconds, got {interval_s}")
    mp = monitor_paths(account)
    lock = MonitorLock(mp)
    if not lock.acquire():
        raise BusyError(f"monitor for account {account} already running (pid {read_pid(mp)})")
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    session = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
    started = datetime.now(timezone.utc).isoformat()
    try:
        mp.log_dir.mkdir(parents=True, exist_ok=True)
        mp.pidfile.write_text(f"{os.getpid()}\n", encoding="utf-8")
        _write_json(mp.state, {"account": account, "pid": os.getpid(), "session": session, "interval_s": interval_s,
                               "started_at": started, "stopped_at": None, "log_dir": str(mp.log_dir)})
        cursor = resume_cursor(mp)
        print(f"{started} monitor {session} of account {account}: pid {os.getpid()}, every {interval_s:g} s",
              file=sys.stderr, flush=True)
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                line = poll_once(account, cursor)
            except Exception as exc:  # noqa: BLE001 - database down or a failing check: say so in the trail, go on
                if not isinstance(exc, AtsError):
                    traceback.print_exc(file=sys.stderr)
                line = unreachable_line(account, exc, cursor)
            line["monitor"] = {"pid": os.getpid(), "session": session, "poll": n + 1, "interval_s": interval_s}
            append_line(mp, line)
            cursor = line.get("cursor") or cursor
            n += 1
            if max_polls is not None and n >= max_polls:
                break
            stop.wait(max(0.0, interval_s - (time.monotonic() - t0)))
        print(f"{datetime.now(timezone.utc).isoformat()} monitor {session} stopped after {n} poll(s)",
              file=sys.stderr, flush=True)
        return 0
    finally:
        st = read_state(mp)
        if st.get("session") == session:
            st.update(stopped_at=datetime.now(timezone.utc).isoformat())
            _write_json(mp.state, st)
        if read_pid(mp) == os.getpid():
            mp.pidfile.unlink(missing_ok=True)
        for s, h in old.items():
            signal.signal(s, h)
        lock.release()


def start_daemon(account: str, interval_s: float = DEFAULT_INTERVAL_S) -> dict:
    """Start the detached daemon for ``account`` and wait until it holds the lock.

    Returns
    -------
    dict
        ``{pid, account, interval_s, log_dir, replaced_stale: pid or None}``.

    Raises
    ------
    BusyError
        The monitor of this account is already running ("already running (pid N)").
    AtsError
        The daemon exited or did not take the lock within START_TIMEOUT_S (the tail of ``daemon.log`` says why).
    """
    if not interval_s or interval_s <= 0:
        raise AtsError(f"monitor: --interval must be > 0 seconds, got {interval_s}")
    mp = monitor_paths(account)
    live = liveness(mp)
    if live.running:
        raise BusyError(f"monitor for account {account} already running (pid {live.pid})")
    replaced = None
    if live.stale:
        replaced = live.pid
        mp.pidfile.unlink(missing_ok=True)
    mp.log_dir.mkdir(parents=True, exist_ok=True)
    mp.state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ats.cli", "--account", account, "monitor", "run", "--interval", str(interval_s)]
    env = dict(os.environ, ATS_ACCOUNT=account)
    with open(mp.daemon_log, "ab") as log:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                 cwd=str(paths.project_root()), start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if read_pid(mp) == child.pid and lock_is_held(mp):
            return {"pid": child.pid, "account": account, "interval_s": interval_s, "log_dir": str(mp.log_dir),
                    "replaced_stale": replaced}
        rc = child.poll()
        if rc is not None:
            tail = _tail(mp.daemon_log)
            if "already running" in tail:
                raise BusyError(f"monitor for account {account} already running (pid {read_pid(mp)})")
            raise AtsError(f"monitor daemon exited with {rc} before taking its lock: {tail}")
        time.sleep(0.05)
    raise AtsError(f"monitor daemon (pid {child.pid}) did not take its lock within {START_TIMEOUT_S:.0f} s; "
                   f"see {mp.daemon_log}")


def stop_daemon(account: str, timeout_s: float = STOP_TIMEOUT_S) -> dict:
    """SIGTERM the running daemon of ``account`` and wait until it released the lock.

    Returns
    -------
    dict
        ``{stopped: bool, pid, stale: bool, killed: bool, state: monitor.json}``: ``stopped`` False when nothing was
        running (``stale`` True when a pidfile of a dead daemon was found and removed); ``killed`` True when the
        daemon ignored SIGTERM for ``timeout_s`` seconds and was sent SIGKILL.
    """
    mp = monitor_paths(account)
    live = liveness(mp)
    if not live.running:
        if live.stale:
            mp.pidfile.unlink(missing_ok=True)
        return {"stopped": False, "pid": live.pid, "stale": live.stale, "killed": False, "state": read_state(mp)}
    pid = live.pid
    if pid is None:
        raise AtsError(f"monitor lock of account {account} is held but {mp.pidfile} has no pid: stop it by hand")
    os.kill(pid, signal.SIGTERM)
    killed = False
    deadline = time.monotonic() + timeout_s
    while lock_is_held(mp):
        if time.monotonic() > deadline:
            if killed:
                raise AtsError(f"monitor pid {pid} still holds its lock after SIGKILL")
            os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 5
        time.sleep(0.05)
    if killed:
        mp.pidfile.unlink(missing_ok=True)
    return {"stopped": True, "pid": pid, "stale": False, "killed": killed, "state": read_state(mp)}


def status(account: str) -> dict:
    """Whether the monitor of ``account`` runs, and what its trail holds for the current (or last) session.

    Returns
    -------
    dict
        ``{account, running, pid, stale, session, interval_s, started_at, stopped_at, log_dir, lines,
        last_poll, deviations: {distinct, by_severity: {severity: n}, ids: [...]}, last_counts}`` (lines and
        deviations since the session's start).
    """
    mp = monitor_paths(account)
    live = liveness(mp)
    st = read_state(mp)
    lines = read_lines(mp, since=st.get("started_at")) if st.get("started_at") else []
    distinct: dict[str, str] = {}
    for ln in lines:
        for d in ln.get("deviations") or []:
            distinct.setdefault(d["id"], d["severity"])
    by_sev: dict[str, int] = {}
    for sev in distinct.values():
        by_sev[sev] = by_sev.get(sev, 0) + 1
    last = lines[-1] if lines else None
    return {"account": account, "running": live.running, "pid": live.pid, "stale": live.stale,
            "session": st.get("session"), "interval_s": st.get("interval_s"), "started_at": st.get("started_at"),
            "stopped_at": st.get("stopped_at"), "log_dir": str(mp.log_dir), "lines": len(lines),
            "last_poll": last["ts"] if last else None,
            "deviations": {"distinct": len(distinct), "by_severity": by_sev, "ids": sorted(distinct)},
            "last_counts": (last or {}).get("counts")}


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:].strip().replace("\n", " | ")
    except OSError:
        return "(no daemon log)"
