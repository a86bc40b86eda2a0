"""Helpers for the embedded-server tests: run `ats` against an ATS_HOME whose embedded PostgreSQL is under test.

Everything goes through the real CLI in subprocesses (never ATS_DATABASE_URL), so these tests exercise exactly the
start-up path a user's commands take.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def home_env(home: Path) -> dict:
    """Environment for an `ats` subprocess using the embedded server of `home` (ATS_DATABASE_URL removed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATS_DATABASE_URL", "DATABASE_URL")}
    env.update({"ATS_HOME": str(home), "ATS_PGDATA": str(home / ".ats" / "pgdata")})
    paths = [str(ROOT / "services"), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def ats(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m ats.cli ARGS` with the embedded server of `home`; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "ats.cli", *args], capture_output=True, text=True,
                          env=home_env(home), cwd=str(home), timeout=timeout)


def ats_popen(home: Path, *args: str) -> subprocess.Popen:
    """Start `python -m ats.cli ARGS` in the background (output discarded) with the embedded server of `home`."""
    return subprocess.Popen([sys.executable, "-m", "ats.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=home_env(home), cwd=str(home))


def new_home() -> Path:
    """A new empty ATS_HOME under the system temp dir.

    Not under pytest's tmp_path: pytest resets its base directory to mode 0700 whenever any session starts, and
    when tests run as root the server runs as the unprivileged user 'pgserver', which must reach its data directory.
    """
    return Path(tempfile.mkdtemp(prefix="ats-dbcrash-"))


def pgdata(home: Path) -> Path:
    """The data directory the helpers point ATS_PGDATA at."""
    return home / ".ats" / "pgdata"


def admin_url(home: Path) -> str:
    """Owner DSN of the embedded database of `home` (starts the server through the CLI)."""
    out = ats(home, "db", "url")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def stop(home: Path) -> None:
    """Stop the embedded server of `home` with the pg_ctl of the wheel (works whatever state ATS left)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    d = pgdata(home)
    if not (d / "postmaster.pid").exists():
        return
    kw = {"user": "pgserver"} if os.geteuid() == 0 else {}
    res = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "pg_ctl"), "-D", str(d), "-m", "fast", "-w", "stop"],
                         capture_output=True, text=True, timeout=60, **kw)
    assert res.returncode == 0 or "Is server running?" in res.stderr, res.stderr
