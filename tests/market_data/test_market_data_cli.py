"""`ats data ...` end to end in a subprocess against a fresh database (issue 3)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


@pytest.fixture
def data_env(fresh_db_url, shared_data):
    return shared_data


def test_data_commands_end_to_end(data_env, tmp_path):
    btc = data_env / "binance" / "BTC_USDT-1h.json"
    spy = data_env / "equities" / "SPY_1d.csv"
    r = run_cli("data", "load", str(btc), str(spy))
    assert r.returncode == 0, r.stderr
    assert "BTCUSDT 1h source=binance rows=5482 new=5482" in r.stdout
    assert "SPY 1d source=csv rows=5849 new=5849" in r.stdout
    r = run_cli("data", "load", "--json", str(btc))
    assert r.returncode == 0 and json.loads(r.stdout)["rows_inserted"] == 0  # reload changes nothing

    bad = tmp_path / "BAD_USDT-1h.json"
    bad.write_text("[[1609459200000, 10, 11, 9, 10.5, 100], [1609462800000, 10, 9, 11, 10, 5]]")
    r = run_cli("data", "load", str(bad))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"ats: error: {bad} row 2: high 9 < low 11"

    r = run_cli("data", "coverage", "--json", "--as-of", "2021-07-17T21:00:00Z")
    assert r.returncode == 0, r.stderr
    grid = {(g["symbol"], g["timeframe"]): g for g in json.loads(r.stdout)}
    btc_row = grid[("BTCUSDT", "1h")]
    assert {"symbol", "timeframe", "first", "last", "expected", "present", "gaps", "status"} <= set(btc_row)
    assert len(btc_row["gaps"]) == 6 and sum(g["bars"] for g in btc_row["gaps"]) == 11
    assert btc_row["status"] == "green"
    r = run_cli("data", "coverage", "--as-of", "2021-07-17T21:00:00Z")
    assert r.returncode == 0 and "BTCUSDT" in r.stdout and "green" in r.stdout

    r = run_cli("data", "resample", "--symbol", "BTCUSDT")
    assert r.returncode == 0, r.stderr
    assert "BTCUSDT 1h->4h: 1374 candles (8 incomplete), 1374 new" in r.stdout

    r = run_cli("data", "anomalies", "--scan", "--as-of", "2021-07-17T21:00:00Z", "--symbol", "BTCUSDT", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(set(a) >= {"symbol", "timeframe", "open_time", "kind", "detail"} for a in rows)
    assert {a["kind"] for a in rows} == {"gap", "spike"}
    assert any(a["kind"] == "spike" and a["open_time"] == "2021-05-19T12:00:00Z" for a in rows)
    r = run_cli("data", "anomalies", "--symbol", "BTCUSDT", "--kind", "gap")
    assert r.returncode == 0 and r.stdout.count(" gap ") == 6 and "3 missing bar(s)" in r.stdout


def test_data_help_and_usage_errors(db_url, capsys):
    from ats.cli import build_parser

    parser = build_parser()
    for sub in ("load", "resample", "coverage", "anomalies", "backfill"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["data", sub, "--help"])
        assert exc.value.code == 0 and "usage: ats data " + sub in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["data", "coverage", "--as-of", "not-a-time"])
    assert exc.value.code == 2 and "--as-of" in capsys.readouterr().err
    r = run_cli("data", "load", "/nonexistent/file.json")
    assert r.returncode == 1 and r.stderr.strip() == "ats: error: /nonexistent/file.json: no such file or directory"
