"""The per-account path seam (issue 13): the default account's paths never change; others nest."""

from __future__ import annotations

from pathlib import Path

import pytest

from ats import paths


@pytest.fixture
def home(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    monkeypatch.delenv("ATS_LOG_DIR", raising=False)
    monkeypatch.delenv("ATS_ACCOUNT", raising=False)
    return tmp_path.resolve()


# exactly the paths ATS used before accounts existed (byte-identical strings)
DEFAULT_LAYOUT = {"logs": "logs", "reports": "reports", "locks": ".ats/locks", "cron": ".ats/cron",
                  "live": ".ats/live", "monitor": ".ats/monitor", "env": ".env"}


def test_default_account_paths_are_unchanged(home, monkeypatch):
    for kind, rel in DEFAULT_LAYOUT.items():
        assert str(paths.account_path(kind)) == str(home / rel)
        assert paths.account_path(kind, "default") == home / rel
    assert paths.logs_dir() == home / "logs" and paths.reports_dir() == home / "reports"
    monkeypatch.setenv("ATS_ACCOUNT", "default")
    assert paths.logs_dir() == home / "logs"
    monkeypatch.setenv("ATS_LOG_DIR", str(home / "elsewhere"))
    assert paths.logs_dir() == home / "elsewhere"


def test_bound_account_nests_everything(home, monkeypatch):
    monkeypatch.setenv("ATS_ACCOUNT", "aggr-1")
    assert paths.logs_dir() == home / "logs" / "accounts" / "aggr-1"
    assert paths.reports_dir() == home / "reports" / "accounts" / "aggr-1"
    assert paths.account_path("locks") == home / ".ats" / "accounts" / "aggr-1" / "locks"
    assert paths.account_path("env") == home / ".env.aggr-1"
    # no two accounts share a path of any kind
    a = {paths.account_path(k, "a") for k in paths.PATH_KINDS}
    b = {paths.account_path(k, "b") for k in paths.PATH_KINDS}
    d = {paths.account_path(k, "default") for k in paths.PATH_KINDS}
    assert not (a & b) and not (a & d) and not (b & d)


@pytest.mark.parametrize("bad", ["../x", "A", "", "a/b", "x" * 33])
def test_no_account_id_escapes(home, bad):
    with pytest.raises(ValueError, match="invalid account id"):
        paths.account_path("logs", bad)
