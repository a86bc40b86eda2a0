"""Where ATS keeps its files, and the one seam that gives each account its own.

The project root holds `reports/`, `kb/`, `plans/`, `logs/`, `.ats/` (embedded database). It is, in order:
``ATS_HOME`` if set; the nearest ancestor of the current directory with a `pyproject.toml` naming the `ats`
project; the source checkout this package was imported from (editable install); else the current directory.

Accounts share no file: :func:`account_path` is the only place that decides where an account's logs, locks, cron
state, live-loop and live-monitor state, reports and env file live. With no account bound (``ATS_ACCOUNT`` unset
or ``default``) it returns exactly the paths ATS has always used; for account ``X`` they nest under
``accounts/X/`` (``logs/accounts/X``, ``reports/accounts/X``, ``.ats/accounts/X/...``) and the env file is
``.env.X``. ``logs_dir()`` and ``reports_dir()`` follow the bound account, so every writer that uses them is
scoped without knowing it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


def _is_ats_root(path: Path) -> bool:
    pp = path / "pyproject.toml"
    if not pp.is_file():
        return False
    try:
        head = pp.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return False
    return 'name = "ats"' in head


@lru_cache(maxsize=None)
def _root_for(cwd: str, env_home: str | None) -> Path:
    if env_home:
        return Path(env_home).resolve()
    here = Path(cwd).resolve()
    for cand in (here, *here.parents):
        if _is_ats_root(cand):
            return cand
    pkg_root = Path(__file__).resolve().parents[2]
    if _is_ats_root(pkg_root):
        return pkg_root
    return here


def project_root() -> Path:
    """The ATS project root (see module docstring)."""
    return _root_for(os.getcwd(), os.environ.get("ATS_HOME"))


def state_dir() -> Path:
    """Git-ignored runtime state: `<root>/.ats` (embedded database, locks, caches)."""
    return project_root() / ".ats"


DEFAULT_ACCOUNT = "default"

#: what :func:`account_path` knows; each value is (base for the default account, relative nesting for others)
PATH_KINDS = ("logs", "reports", "locks", "cron", "live", "monitor", "env")


def bound_account() -> str:
    """The account this process is bound to: ``ATS_ACCOUNT`` (set from ``--account`` at start), else ``default``."""
    return (os.environ.get("ATS_ACCOUNT") or DEFAULT_ACCOUNT).strip() or DEFAULT_ACCOUNT


def _base_logs() -> Path:
    env = os.environ.get("ATS_LOG_DIR")
    return Path(env) if env else project_root() / "logs"


def account_path(kind: str, account: str | None = None) -> Path:
    """The directory (or, for ``env``, the file) of ``kind`` for ``account`` (default: the bound account).

    Parameters
    ----------
    kind : str
        One of ``logs`` (JSON logs), ``reports`` (account-scoped reports), ``locks`` (heavy-run and cron locks),
        ``cron`` (cron bookkeeping), ``live`` (live-loop pid/state), ``monitor`` (live-monitor pid/state),
        ``env`` (the credentials file).
    account : str, optional
        Account id; ``None`` = :func:`bound_account`.

    Returns
    -------
    pathlib.Path
        For the default account exactly today's paths: ``<logs>``, ``<root>/reports``, ``<root>/.ats/locks``,
        ``<root>/.ats/cron``, ``<root>/.ats/live``, ``<root>/.ats/monitor``, ``<root>/.env``. For account ``X``:
        ``<logs>/accounts/X``, ``<root>/reports/accounts/X``, ``<root>/.ats/accounts/X/<kind>``,
        ``<root>/.env.X``.

    Raises
    ------
    ValueError
        Unknown ``kind``, or an account id that is not ``[a-z0-9][a-z0-9_-]{0,31}`` (no path can escape).
    """
    acct = bound_account() if account is None else account
    if kind not in PATH_KINDS:
        raise ValueError(f"account_path: unknown kind {kind!r}; expected one of {', '.join(PATH_KINDS)}")
    if not _valid_account_id(acct):
        raise ValueError(f"account_path: invalid account id {acct!r} (expected [a-z0-9][a-z0-9_-]{{0,31}})")
    root = project_root()
    if acct == DEFAULT_ACCOUNT:
        return {"logs": _base_logs(), "reports": root / "reports", "env": root / ".env"}.get(
            kind, root / ".ats" / kind)
    if kind == "logs":
        return _base_logs() / "accounts" / acct
    if kind == "reports":
        return root / "reports" / "accounts" / acct
    if kind == "env":
        return root / f".env.{acct}"
    return root / ".ats" / "accounts" / acct / kind


def _valid_account_id(acct: str) -> bool:
    import re

    return bool(re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", acct or ""))


def logs_dir() -> Path:
    """`ATS_LOG_DIR` or `<root>/logs` for the default account; `<that>/accounts/<id>` for a bound account."""
    return account_path("logs")


def reports_dir() -> Path:
    """`<root>/reports` (forensic reports, committed); `<root>/reports/accounts/<id>` for a bound account."""
    return account_path("reports")


def kb_dir() -> Path:
    """`<root>/kb` (knowledge-base articles, committed)."""
    return project_root() / "kb"


def plans_dir() -> Path:
    """`<root>/plans` (saved plans, committed, never overwritten)."""
    return project_root() / "plans"


def market_data_dir() -> Path:
    """Real candle files: `ATS_DATA_DIR` or `<root>/../shared/data/ohlcv` (may not exist on a user's machine)."""
    env = os.environ.get("ATS_DATA_DIR")
    return Path(env) if env else project_root().parent / "shared" / "data" / "ohlcv"
