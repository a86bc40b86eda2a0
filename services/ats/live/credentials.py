"""Venue credentials from the environment or the account's env file (refused unless mode 0600).

The values never reach logs, events, reports or exceptions: errors name the variable and the file, never a value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UsageError

VARS = {"bybit": ("BYBIT_API_KEY", "BYBIT_API_SECRET"), "alpaca": ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")}


def env_file_path(account_id: str) -> Path:
    """The account's credentials file: ``$ATS_SECRETS_DIR/<account>.env`` when that is set, else the per-account
    path seam's ``env`` (``<root>/.env`` for the default account, ``<root>/.env.<account>`` for others)."""
    base = os.environ.get("ATS_SECRETS_DIR")
    if base:
        return Path(base) / f"{account_id}.env"
    from ..paths import account_path

    return account_path("env", account_id)


def read_env_file(path: Path) -> dict:
    """``KEY=VALUE`` lines of ``path``; UsageError when the file is readable by group/others (mode != 0600)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UsageError(f"refusing credentials file {path}: mode {mode:04o}, expected 0600 (chmod 600 {path})")
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def venue_keys(venue: str, account_id: str) -> tuple[str, str]:
    """(key, secret) of ``venue`` from the environment, else from the account's env file.

    Raises
    ------
    UsageError
        Naming the variables and the file looked at (never a value) when none is found, or the file mode.
    """
    kv, sv = VARS[venue]
    k, s = os.environ.get(kv), os.environ.get(sv)
    if k and s:
        return k, s
    p = env_file_path(account_id)
    if p.exists():
        d = read_env_file(p)
        if d.get(kv) and d.get(sv):
            return d[kv], d[sv]
    raise UsageError(f"no {venue} credentials: set {kv} and {sv} or put them in {p} (mode 0600)")
