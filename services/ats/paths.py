"""Where ATS keeps its files.

The project root holds `reports/`, `kb/`, `plans/`, `logs/`, `.ats/` (embedded database). It is, in order:
``ATS_HOME`` if set; the nearest ancestor of the current directory with a `pyproject.toml` naming the `ats`
project; the source checkout this package was imported from (editable install); else the current directory.
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


def logs_dir() -> Path:
    """`ATS_LOG_DIR` or `<root>/logs`."""
    env = os.environ.get("ATS_LOG_DIR")
    return Path(env) if env else project_root() / "logs"


def reports_dir() -> Path:
    """`<root>/reports` (forensic reports, committed)."""
    return project_root() / "reports"


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
