"""Isolation by construction (issue 13): two aggressive paper accounts replay side by side; one is blown up (its
equity written to zero), its files corrupted, its process killed, and from its own database role it tries to
rewrite the other's rows. The other account's rows, files and result are unchanged, and equal to the same run done
alone in a separate database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import ROOT, engine_db, engine_template  # noqa: F401  (fixtures)
from ats.accounts.scope import scoped_url
from conftest import clone_template, drop_database, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.dblayer]

WINDOW = ["--start", "2021-04-01", "--end", "2021-06-01", "--no-progress", "--commit-every", "20"]

# account-scoped rows that decide money, without serial ids or wall-clock columns, one md5 per table

PARTS = {
    "positions": "SELECT md5(coalesce(string_agg(concat_ws('|', strategy_name, symbol, side, opened_at, closed_at, qty, "
                 "entry_qty, avg_entry_price, avg_exit_price, realized_pnl_usd, fees_usd, close_reason), ',' ORDER BY "
                 "opened_at, strategy_name, symbol), '')) AS h FROM positions WHERE account_id = %(a)s",
    "snapshots": "SELECT md5(coalesce(string_agg(concat_ws('|', ts, cash_usd, positions_value_usd, equity_usd), ',' "
                 "ORDER BY ts), '')) AS h FROM portfolio_hourly_snapshots WHERE account_id = %(a)s",
    "blocked": "SELECT md5(coalesce(string_agg(concat_ws('|', ts, strategy_name, symbol, gate, reason), ',' ORDER BY ts, "
               "strategy_name, symbol, gate, reason), '')) AS h FROM blocked_signals WHERE account_id = %(a)s",
    "fills": "SELECT md5(coalesce(string_agg(concat_ws('|', symbol, side, qty, price, fee_usd, ts), ',' ORDER BY ts, "
             "symbol, side, qty), '')) AS h FROM fills WHERE account_id = %(a)s",
    "settings": "SELECT md5(coalesce(string_agg(concat_ws('|', key, value::text, effective_from), ',' ORDER BY key), "
                "'')) AS h FROM system_settings WHERE account_id = %(a)s",
}


def _fp(url: str, acct: str) -> dict:
    with psycopg.connect(url, row_factory=dict_row) as c:
        return {k: c.execute(q, {"a": acct}).fetchone()["h"] for k, q in PARTS.items()}


def _create(acct: str, symbols: str, home) -> None:
    uni = home / f"{acct}.txt"
    uni.write_text(symbols.replace(",", "\n"))
    r = run_cli("account", "create", acct, "--broker", "paper", "--starting-cash", "1000000", "--profile",
                "aggressive", "--universe", str(uni), env={"ATS_HOME": str(home)})
    assert r.returncode == 0, r.stderr


def _replay(acct: str, symbols: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ats.cli", "--account", acct, "engine", "replay", "--symbols",
                             symbols, *WINDOW], cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_blow_up_in_one_account_cannot_reach_another(engine_db, pg_admin_url, engine_template, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    env = {**os.environ, "ATS_DATABASE_URL": engine_db, "ATS_HOME": str(home)}
    env.pop("ATS_LOG_DIR", None)
    _create("aggr-a", "BTCUSDT,ETHUSDT", home)
    _create("aggr-b", "SOLUSDT,AVAXUSDT", home)

    # the reference: account b alone, in a database of its own
    ref_name, ref_url = clone_template(pg_admin_url, engine_template, prefix="ats_iso_ref")
    try:
        ref_env = {**env, "ATS_DATABASE_URL": ref_url, "ATS_HOME": str(tmp_path / "refhome")}
        (tmp_path / "refhome").mkdir()
        (tmp_path / "refhome" / "pyproject.toml").write_text('[project]\nname = "ats"\n')
        _create_ref = run_cli("account", "create", "aggr-b", "--broker", "paper", "--starting-cash", "1000000",
                              "--profile", "aggressive", "--universe", str(home / "aggr-b.txt"), env=ref_env)
        assert _create_ref.returncode == 0, _create_ref.stderr
        solo = _replay("aggr-b", "AVAXUSDT,SOLUSDT", ref_env)
        assert solo.wait(timeout=600) == 0, solo.stderr.read()
        ref_fp = _fp(ref_url, "aggr-b")

    finally:
        drop_database(pg_admin_url, ref_name)

    # side by side: both accounts replay at once (one heavy-run lock per account: neither is "busy")
    a = _replay("aggr-a", "BTCUSDT,ETHUSDT", env)
    b = _replay("aggr-b", "AVAXUSDT,SOLUSDT", env)
    deadline = time.time() + 300
    with psycopg.connect(engine_db, row_factory=dict_row, autocommit=True) as owner:
        while time.time() < deadline and a.poll() is None:
            n = owner.execute("SELECT coalesce(sum(bars_processed), 0) AS n FROM engine_runs WHERE account_id='aggr-a'"
                              ).fetchone()["n"]
            if n >= 100:
                break
            time.sleep(0.2)
    if a.poll() is None:
        a.send_signal(signal.SIGKILL)  # killed mid-run
    a.wait(timeout=60)

    # account a blows up: from its own role, its equity goes to zero, then it tries to reach b
    with psycopg.connect(scoped_url(engine_db, "aggr-a"), row_factory=dict_row) as c:
        run_a = c.execute("SELECT run_id FROM engine_runs ORDER BY started_at DESC LIMIT 1").fetchone()["run_id"]
        c.execute("INSERT INTO portfolio_hourly_snapshots (run_id, account_id, ts, cash_usd, positions_value_usd, "
                  "equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd, net_pnl_daily_usd, open_positions) "
                  "VALUES (%s, 'aggr-a', '2021-05-31 23:00+00', 0, 0, 0, -1000000, 0, 0, 0, 0)", (run_a,))
        c.commit()
        assert c.execute("SELECT count(*) AS n FROM engine_runs WHERE account_id='aggr-b'").fetchone()["n"] == 0
        assert c.execute("UPDATE positions SET realized_pnl_usd = -1 WHERE account_id = 'aggr-b'").rowcount == 0
        assert c.execute("DELETE FROM portfolio_hourly_snapshots WHERE account_id = 'aggr-b'").rowcount == 0
        assert c.execute("UPDATE system_settings SET value = '0' WHERE account_id = 'aggr-b'").rowcount == 0
        c.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            c.execute("INSERT INTO system_settings (account_id, key, value) VALUES ('aggr-b', 'breaker.manual_stop', "
                      "'true')")
        c.rollback()
    # ... and its files are corrupted
    for d in (home / ".ats" / "accounts" / "aggr-a", home / "logs" / "accounts" / "aggr-a"):
        d.mkdir(parents=True, exist_ok=True)
        for f in list(d.rglob("*")) + [d / "garbage.lock"]:
            if f.is_file() or not f.exists():
                f.write_bytes(b"\x00corrupt\xff")
    b_logs_before = sorted(p.name for p in (home / "logs" / "accounts" / "aggr-b").glob("*"))

    assert b.wait(timeout=600) == 0, b.stderr.read()  # b kept trading to the end
    assert _fp(engine_db, "aggr-b") == ref_fp  # same result as alone: nothing of a's reached it
    with psycopg.connect(engine_db, row_factory=dict_row) as c:
        st = c.execute("SELECT status FROM engine_runs WHERE account_id='aggr-b'").fetchone()["status"]
        assert st == "completed"
        # the default account was not touched either
        assert c.execute("SELECT count(*) AS n FROM engine_runs WHERE account_id='default'").fetchone()["n"] == 0
    # b's files live under its own directories, untouched by a's corruption
    assert all(b"corrupt" not in p.read_bytes() for p in (home / "logs" / "accounts" / "aggr-b").rglob("*")
               if p.is_file())
    assert b_logs_before == sorted(p.name for p in (home / "logs" / "accounts" / "aggr-b").glob("*"))
    # health check and investigate are scoped to the account asked for
    r = run_cli("--account", "aggr-b", "health-check", "--json", env={"ATS_HOME": str(home)})
    assert r.returncode in (0, 1), r.stderr
    assert "aggr-a" not in r.stdout
    r = run_cli("--account", "aggr-b", "investigate", "BTCUSDT", "--json", env={"ATS_HOME": str(home)})
    assert "aggr-a" not in r.stdout and r.returncode in (0, 1)
    r = run_cli("--account", "aggr-b", "pnl", "--account", "aggr-a", env={"ATS_HOME": str(home)})
    assert r.returncode == 2 and "one process, one account" in r.stderr
