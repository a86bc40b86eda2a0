"""Fixtures of the dashboard tests: ``dash_db_url``, a session database in the state `ats demo` leaves (real
candles, the Dec 2020 - Jul 2021 replay), plus two backtests, a short replay of a second account ('family')
that ends holding positions, and a KB scan, so every page has something real to show."""

from __future__ import annotations

import psycopg
import pytest

from conftest import ROOT, clone_template, drop_database, run_cli

FAMILY = "family"


def _prepare(url: str, shared_data) -> None:
    from ats.demo import prepare_demo

    prepare_demo(url, data_dir=shared_data, progress=False)
    env = {"ATS_DATABASE_URL": url}
    for extra in ((), ("--strategies", "momentum")):
        out = run_cli("backtest", "run", "--symbols", "BTCUSDT,ETHUSDT", "--start", "2021-04-01", "--end",
                      "2021-06-01", "--no-progress", *extra, env=env)
        assert out.returncode == 0, out.stderr
    # a second account, created the supported way (settings, strategies, database roles in one transaction)
    out = run_cli("account", "create", FAMILY, "--broker", "paper", "--starting-cash", "10000", env=env)
    assert out.returncode == 0, out.stderr
    out = run_cli("engine", "replay", "--account", FAMILY, "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--start",
                  "2021-05-01", "--end", "2021-05-12", "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    out = run_cli("kb", "scan", env=env, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr


@pytest.fixture(scope="session")
def dash_db_url(pg_admin_url, template_db, shared_data):
    """DSN of the dashboard test database (see module docstring). Tests may add system_events rows only."""
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_dash")
    _prepare(url, shared_data)
    yield url
    drop_database(pg_admin_url, name)
