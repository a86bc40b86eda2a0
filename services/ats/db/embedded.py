"""Crash-safe lifecycle of the embedded PostgreSQL (binaries of the `pgserver` wheel).

pgserver's own `get_server()` keeps a list of client pids in ``<pgdata>/.handle_pids.json`` written with a plain
truncate-and-write and never pruned: a ``kill -9`` at the wrong moment leaves it empty and every later start-up
fails (issue 11). We do not need that list (the server outlives every command and is stopped only by
``ats db down``), so this module drives ``initdb`` / ``pg_ctl`` from the wheel directly and makes start-up robust to
any state a crash can leave behind:

* one start-up at a time per data directory: ``flock`` on ``<parent>/.<pgdata name>.lock`` (released by the kernel
  when the holder dies, so a killed process never leaves it held);
* ``initdb`` runs in a sibling temporary directory that is renamed into place only when complete, so a crash during
  initdb leaves no half-initialised cluster (left-over temporaries are removed at the next start);
* a running postmaster is found from ``postmaster.pid`` *and* verified (live process, named postgres, working
  directory is this pgdata, accepting connections); a stale file (pid dead or reused by another process, empty or
  half-written) is set aside before ``pg_ctl start``;
* a server left running by a killed parent is reused (waiting while it is still starting up);
* pgserver's ``.handle_pids.json``, if present (older ATS versions), is pruned to live pids with an atomic write.

Everything we write goes through `atomic_write` (temporary file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import AtsError, BusyError

HANDLE_PIDS = ".handle_pids.json"
POSTMASTER_PID = "postmaster.pid"
SYSTEM_USER_WHEN_ROOT = "pgserver"  # pgserver's convention: postgres refuses to run as root
INITDB_TMP_INFIX = ".initdb-"
LOCK_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 30.0
SOCKET_PORT = 5432  # socket file name .s.PGSQL.5432; TCP is disabled (-h "")


def bin_dir() -> Path:
    """Directory of the PostgreSQL executables shipped in the `pgserver` wheel.

    Returns
    -------
    Path
        ``.../site-packages/pgserver/pginstall/bin``.

    Raises
    ------
    AtsError
        When the `pgserver` package is not installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH  # noqa: WPS433 (lazy: only the embedded path)
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise AtsError("embedded PostgreSQL needs the 'pgserver' package (pip install pgserver)") from exc
    return Path(POSTGRES_BIN_PATH)


# ---- atomic files -----------------------------------------------------------------------------------------

def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically: write a temporary sibling, fsync it, rename it, fsync the directory.

    Parameters
    ----------
    path : Path
        Target file; readers see either the old or the new content, never a partial one.
    text : str
        New content (UTF-8).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        st = path.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
    except (FileNotFoundError, PermissionError):
        pass
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ---- start-up lock -----------------------------------------------------------------------------------------

def lock_path(pgdata: Path) -> Path:
    """The start-up lock file of `pgdata`: ``<parent>/.<name>.lock`` (outside pgdata, which initdb needs empty)."""
    return pgdata.parent / f".{pgdata.name}.lock"


@contextmanager
def startup_lock(pgdata: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive start-up lock of `pgdata` (flock; the kernel releases it if the holder dies).

    Parameters
    ----------
    pgdata : Path
        Data directory whose lifecycle is serialised.
    timeout_s : float
        Seconds to wait for another ``ats`` process that is starting or stopping the same server.

    Raises
    ------
    BusyError
        When the lock is still held after `timeout_s`.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(lock_path(pgdata)), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BusyError(f"another ats process has been starting the embedded PostgreSQL in {pgdata} "
                                    f"for {timeout_s:.0f} s (lock {lock_path(pgdata)})") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# ---- bookkeeping of pgserver (legacy) ----------------------------------------------------------------------

@dataclass(frozen=True)
class HandlePidsState:
    """What `.handle_pids.json` holds: ``state`` is 'absent', 'ok', 'stale' (dead pids) or 'corrupt'."""

    state: str
    pids: tuple[int, ...] = ()
    live: tuple[int, ...] = ()


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def read_handle_pids(pgdata: Path) -> HandlePidsState:
    """Inspect pgserver's client-pid list in `pgdata` without changing it.

    Returns
    -------
    HandlePidsState
        'absent' (no file), 'corrupt' (empty, truncated or not a list of ints), 'stale' (holds dead pids) or 'ok'.
    """
    f = pgdata / HANDLE_PIDS
    if not f.exists():
        return HandlePidsState("absent")
    try:
        raw = json.loads(f.read_text(encoding="utf-8", errors="replace"))
    except (ValueError, OSError):
        return HandlePidsState("corrupt")
    if not isinstance(raw, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in raw):
        return HandlePidsState("corrupt")
    live = tuple(p for p in raw if p > 0 and _pid_alive(p))
    return HandlePidsState("ok" if len(live) == len(raw) else "stale", tuple(raw), live)


def repair_handle_pids(pgdata: Path) -> HandlePidsState:
    """Rewrite `.handle_pids.json` (atomically) to hold only live pids when it is corrupt or stale.

    Returns
    -------
    HandlePidsState
        The state found before the repair.
    """
    st = read_handle_pids(pgdata)
    if st.state in ("corrupt", "stale"):
        atomic_write(pgdata / HANDLE_PIDS, json.dumps(list(st.live)))
    return st


# ---- postmaster discovery ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PostmasterState:
    """The server of a data directory.

    Attributes
    ----------
    state : str
        'none' (no postmaster.pid, no server), 'running' (verified postmaster), 'stale' (postmaster.pid names a dead
        pid or another process), 'corrupt' (postmaster.pid unreadable and no server running).
    pid : int or None
        Postmaster pid when running; otherwise the pid the file names (if readable).
    socket_dir : Path or None
        Directory of the Unix socket when running.
    detail : str
        One-line explanation for `ats db doctor`.
    """

    state: str
    pid: int | None = None
    socket_dir: Path | None = None
    detail: str = ""


def _parse_postmaster_pid(pgdata: Path) -> tuple[int | None, Path | None]:
    try:
        lines = (pgdata / POSTMASTER_PID).read_text(errors="replace").splitlines()
    except OSError:
        return None, None
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        return None, None
    sock = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    return pid, sock


def _same_dir(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """True when `pid` is a live postgres postmaster whose data directory (its cwd) is `pgdata`."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE or p.name() != "postgres":
            return False
        return _same_dir(p.cwd(), pgdata)
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return False


def _find_postmaster(pgdata: Path) -> int | None:
    """Scan processes for the postmaster of `pgdata` (used when postmaster.pid is unreadable)."""
    import psutil

    for p in psutil.process_iter(attrs=["name", "pid"]):
        if p.info["name"] != "postgres":
            continue
        try:
            parent = p.parent()
            if parent is not None and parent.name() == "postgres":
                continue  # a backend or auxiliary process, not the postmaster
            if _same_dir(p.cwd(), pgdata):
                return p.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
    return None


def _socket_dir_of(pid: int) -> Path | None:
    import psutil

    try:
        args = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for i, a in enumerate(args):
        if a == "-k" and i + 1 < len(args):
            return Path(args[i + 1])
        if a.startswith("-k") and len(a) > 2:
            return Path(a[2:].strip())
    return None


def inspect_postmaster(pgdata: Path) -> PostmasterState:
    """Find and verify the server of `pgdata` from ``postmaster.pid`` and the process table (changes nothing).

    Returns
    -------
    PostmasterState
        See the class; a pid that is alive but not a postgres of this pgdata (pid reuse) counts as 'stale'.
    """
    f = pgdata / POSTMASTER_PID
    pid, sock = _parse_postmaster_pid(pgdata)
    if pid is not None and _is_our_postmaster(pid, pgdata):
        return PostmasterState("running", pid, _socket_dir_of(pid) or sock, f"postmaster pid {pid}")
    found = _find_postmaster(pgdata)
    if found is not None:
        return PostmasterState("running", found, _socket_dir_of(found),
                               f"postmaster pid {found} (postmaster.pid {'names ' + str(pid) if pid else 'unreadable'})")
    if not f.exists():
        return PostmasterState("none", detail="no server running, no postmaster.pid")
    if pid is None:
        return PostmasterState("corrupt", detail="postmaster.pid is empty or unreadable and no server runs")
    why = "dead" if not _pid_alive(pid) else "reused by another process"
    return PostmasterState("stale", pid, detail=f"postmaster.pid names pid {pid} ({why})")


def set_aside_postmaster_pid(pgdata: Path) -> Path | None:
    """Rename a stale ``postmaster.pid`` to ``postmaster.pid.stale`` (kept for inspection, not deleted).

    Returns
    -------
    Path or None
        The new name, or None when there was no file.
    """
    f = pgdata / POSTMASTER_PID
    if not f.exists():
        return None
    dest = pgdata / (POSTMASTER_PID + ".stale")
    os.replace(f, dest)
    fsync_dir(pgdata)
    return dest


# ---- initdb ------------------------------------------------------------------------------------------------

def is_initialized(pgdata: Path) -> bool:
    """True when `pgdata` holds a complete cluster (PG_VERSION and global/pg_control)."""
    return (pgdata / "PG_VERSION").is_file() and (pgdata / "global" / "pg_control").is_file()


def initdb_leftovers(pgdata: Path) -> list[Path]:
    """Temporary initdb directories a crashed start-up left next to `pgdata`."""
    if not pgdata.parent.exists():
        return []
    prefix = f".{pgdata.name}{INITDB_TMP_INFIX}"
    return sorted(p for p in pgdata.parent.iterdir() if p.name.startswith(prefix) and p.is_dir())


_OURS_IN_EMPTY_PGDATA = {HANDLE_PIDS, "log", POSTMASTER_PID + ".stale"}


def _run_kwargs() -> dict:
    if os.geteuid() != 0:
        return {}
    from pgserver.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
    return {"user": SYSTEM_USER_WHEN_ROOT}


def _prepare_permissions_for(path: Path) -> None:
    """As root, let the unprivileged `pgserver` user reach `path` and the wheel's binaries (pgserver's recipe)."""
    if os.geteuid() != 0:
        return
    import pwd
    import stat

    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(path)
    bins = bin_dir()
    if not os.access(bins / "postgres", os.X_OK) or not (bins / "postgres").stat().st_mode & stat.S_IXOTH:
        ensure_prefix_permissions(bins)
        ensure_folder_permissions(bins, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bins.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    pw = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: no orphaned initdb


def _run(args: list[str], timeout: float, *, die_with_parent: bool = False) -> subprocess.CompletedProcess:
    extra = {"preexec_fn": _die_with_parent} if die_with_parent and sys.platform.startswith("linux") else {}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          **_run_kwargs(), **extra)


def initdb(pgdata: Path) -> None:
    """Create the cluster in a temporary sibling directory and rename it to `pgdata` once complete.

    Raises
    ------
    AtsError
        When `pgdata` holds files that are not a cluster (never deleted), or initdb fails.
    """
    if pgdata.exists():
        foreign = [p.name for p in pgdata.iterdir() if p.name not in _OURS_IN_EMPTY_PGDATA]
        if foreign:
            raise AtsError(f"{pgdata} is not an initialised PostgreSQL data directory but holds files "
                           f"({', '.join(sorted(foreign)[:5])}); move them away or set ATS_PGDATA elsewhere")
    tmp = pgdata.parent / f".{pgdata.name}{INITDB_TMP_INFIX}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _prepare_permissions_for(tmp)
    res = _run([str(bin_dir() / "initdb"), "-D", str(tmp), "--auth=trust", "--auth-local=trust",
                "--encoding=utf8", "-U", "postgres"], timeout=300, die_with_parent=True)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AtsError(f"initdb failed for {pgdata}: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    if pgdata.exists():
        shutil.rmtree(pgdata)  # only our own bookkeeping files were there (checked above)
    os.rename(tmp, pgdata)
    fsync_dir(pgdata.parent)


def remove_initdb_leftovers(pgdata: Path) -> list[Path]:
    """Delete temporary initdb directories of crashed start-ups (they never hold data). Returns what was removed."""
    gone = initdb_leftovers(pgdata)
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


# ---- start / stop ------------------------------------------------------------------------------------------

def admin_uri(socket_dir: Path, database: str = "postgres") -> str:
    """DSN of the embedded server for role postgres over its Unix socket (pgserver's format)."""
    return f"postgresql://postgres:@/{database}?host={socket_dir}"


def _accepts_connections(socket_dir: Path) -> bool:
    import psycopg

    try:
        with psycopg.connect(admin_uri(socket_dir), connect_timeout=3, autocommit=True) as c:
            c.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _wait_ready(pgdata: Path, timeout_s: float) -> PostmasterState | None:
    """Wait for the server of `pgdata` to accept connections; None when it is not running (or stopped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = inspect_postmaster(pgdata)
        if st.state != "running":
            return None
        if st.socket_dir is not None and _accepts_connections(st.socket_dir):
            return st
        if time.monotonic() > deadline:
            raise AtsError(f"the embedded PostgreSQL in {pgdata} (pid {st.pid}) does not accept connections "
                           f"after {timeout_s:.0f} s; see {pgdata / 'log'}")
        time.sleep(0.1)


def _socket_dir_for(pgdata: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import platformdirs
        from pgserver.utils import find_suitable_socket_dir

    sock = find_suitable_socket_dir(pgdata, platformdirs.user_runtime_path("python_PostgresServer"))
    if os.geteuid() == 0 and not _same_dir(sock, pgdata):
        sock.chmod(0o777)
    return sock


def _log_tail(pgdata: Path, n: int = 3) -> str:
    try:
        return " | ".join((pgdata / "log").read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


def _start(pgdata: Path) -> Path:
    _prepare_permissions_for(pgdata)
    sock = _socket_dir_for(pgdata)
    res = _run([str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-t", str(int(READY_TIMEOUT_S)),
                "-o", '-h ""', "-o", f"-k {sock}", "-l", str(pgdata / "log"), "start"], timeout=READY_TIMEOUT_S + 15)
    if res.returncode != 0:
        raise AtsError(f"pg_ctl start failed for {pgdata}: {_log_tail(pgdata)}")
    return sock


def ensure_running(pgdata: Path) -> str:
    """Start the embedded server of `pgdata` (initialising it if needed) or reuse the running one.

    Safe against any state a crash of an ``ats`` process leaves behind and against concurrent callers (see the
    module docstring). Data is never deleted: a stale ``postmaster.pid`` is renamed, not removed.

    Parameters
    ----------
    pgdata : Path
        Data directory (created when missing; its parent is created too).

    Returns
    -------
    str
        Admin DSN (role postgres, database postgres) over the server's Unix socket.

    Raises
    ------
    AtsError
        When the directory holds something that is not a cluster, or the server cannot be started.
    BusyError
        When another process holds the start-up lock for longer than `LOCK_TIMEOUT_S`.
    """
    pgdata = Path(os.path.abspath(pgdata))
    st = inspect_postmaster(pgdata) if pgdata.exists() else PostmasterState("none")
    if st.state == "running" and st.socket_dir is not None and _accepts_connections(st.socket_dir):
        return admin_uri(st.socket_dir)  # fast path: no lock needed to reuse a healthy server
    with startup_lock(pgdata):
        remove_initdb_leftovers(pgdata)
        if not is_initialized(pgdata):
            initdb(pgdata)
        repair_handle_pids(pgdata)
        ready = _wait_ready(pgdata, READY_TIMEOUT_S)  # a server still starting from a killed parent
        if ready is not None:
            return admin_uri(ready.socket_dir)
        if inspect_postmaster(pgdata).state in ("stale", "corrupt"):
            set_aside_postmaster_pid(pgdata)
        _start(pgdata)
        ready = _wait_ready(pgdata, READY_TIMEOUT_S)
        if ready is None:
            raise AtsError(f"the embedded PostgreSQL in {pgdata} exited right after start: {_log_tail(pgdata)}")
        return admin_uri(ready.socket_dir)


def stop(pgdata: Path) -> str:
    """Stop the server of `pgdata` (``pg_ctl stop -m fast``) under the start-up lock.

    Returns
    -------
    str
        One-line status (also when nothing was running; a stale postmaster.pid is set aside).

    Raises
    ------
    AtsError
        When pg_ctl cannot stop a running server.
    """
    pgdata = Path(os.path.abspath(pgdata))
    if not pgdata.exists():
        return f"embedded PostgreSQL is not running ({pgdata})"
    with startup_lock(pgdata):
        st = inspect_postmaster(pgdata)
        if st.state != "running":
            if st.state in ("stale", "corrupt"):
                set_aside_postmaster_pid(pgdata)
            return f"embedded PostgreSQL is not running ({pgdata})"
        _prepare_permissions_for(pgdata)
        res = _run([str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], timeout=60)
        if res.returncode != 0:
            raise AtsError(f"pg_ctl stop failed for {pgdata}: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        return f"embedded PostgreSQL stopped ({pgdata})"
