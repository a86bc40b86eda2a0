"""Every writer outside the database goes through the per-account path seam (issue 13), and the default account's
paths are exactly the ones ATS always used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ats import paths

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services" / "ats"


@pytest.fixture
def home(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    for v in ("ATS_LOG_DIR", "ATS_ACCOUNT", "ATS_SECRETS_DIR"):
        monkeypatch.delenv(v, raising=False)
    return tmp_path.resolve()


def _writers() -> dict:
    """writer -> a function giving the path it writes (as the writer computes it)."""
    from ats.forensics.daily import write_daily  # noqa: F401  (imported: the writer exists)
    from ats.live.credentials import env_file_path
    from ats.ops.headless import TaskLock, cron_log_path
    from ats.ops.schedule import PromptSpec

    return {
        "service log (ats.log)": lambda: paths.logs_dir() / "engine.log",
        "cron transcript (ops.headless)": lambda: cron_log_path("investigate"),
        "cron lock (ops.headless.TaskLock)": lambda: TaskLock("investigate").path,
        "cron bookkeeping (ops.headless)": lambda: paths.account_path("cron") / "investigate.mcp.json",
        "one-shot prompt done mark (ops.schedule)": lambda: PromptSpec.done_path(_Prompt("breaker-soak-review")),
        "investigation report (forensics.investigate)": lambda: paths.reports_dir() / "investigations",
        "health report (forensics.health)": lambda: paths.reports_dir() / "health",
        "daily summary (forensics.daily)": lambda: paths.account_path("reports") / "daily",
        "live-monitor state": lambda: paths.account_path("monitor"),
        "live-loop state": lambda: paths.account_path("live"),
        "credentials (live.credentials)": lambda: env_file_path(paths.bound_account()),
    }


class _Prompt:
    def __init__(self, name):
        self.name = name


LEGACY = {  # the default account's paths, relative to the project root: never change them
    "service log (ats.log)": "logs/engine.log",
    "cron transcript (ops.headless)": "logs/cron/investigate.log",
    "cron lock (ops.headless.TaskLock)": ".ats/locks/cron-investigate.lock",
    "cron bookkeeping (ops.headless)": ".ats/cron/investigate.mcp.json",
    "one-shot prompt done mark (ops.schedule)": ".ats/cron/done/breaker-soak-review.json",
    "investigation report (forensics.investigate)": "reports/investigations",
    "health report (forensics.health)": "reports/health",
    "daily summary (forensics.daily)": "reports/daily",
    "live-monitor state": ".ats/monitor",
    "live-loop state": ".ats/live",
    "credentials (live.credentials)": ".env",
}


def test_default_account_writers_keep_their_paths(home):
    got = {k: str(f().relative_to(home)) for k, f in _writers().items()}
    assert got == LEGACY


def test_a_bound_account_nests_every_writer(home, monkeypatch):
    monkeypatch.setenv("ATS_ACCOUNT", "aggr-1")
    for name, f in _writers().items():
        p = str(f().relative_to(home))
        assert "aggr-1" in p, f"{name} writes {p}: not nested under the account"
        assert p != LEGACY[name]


def test_no_module_builds_a_writer_path_around_the_seam():
    """state_dir() is the embedded database's home (db/connection.py) and the seam's base (paths.py) only; nobody
    joins project_root() with logs/reports/.env by hand."""
    offenders = []
    for f in SERVICES.rglob("*.py"):
        rel = f.relative_to(SERVICES).as_posix()
        text = f.read_text(encoding="utf-8")
        if rel not in ("paths.py", "db/connection.py", "db/embedded.py", "db/doctor.py") and "state_dir()" in text:
            offenders.append(f"{rel}: state_dir()")
        for m in re.finditer(r'project_root\(\)\s*/\s*"(logs|reports|\.env[^"]*)"', text):
            if rel != "paths.py":
                offenders.append(f"{rel}: project_root() / {m.group(1)!r}")
    assert not offenders, "write through ats.paths.account_path / logs_dir / reports_dir: " + ", ".join(offenders)
