"""`ats investigate SYMBOL`: markdown + JSON twin under reports/investigations, figures reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.forensics.investigate import write_investigation

from _reports_helpers import RUN, seed_run
from conftest import run_cli


def test_write_investigation_files_and_sections(fresh_conn, tmp_path, monkeypatch):
    exp = seed_run(fresh_conn)
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    res = write_investigation(fresh_conn, "BTCUSDT")
    md_path, json_path = Path(res["md_path"]), Path(res["json_path"])
    assert md_path.parent == tmp_path / "reports" / "investigations"
    assert md_path.name.endswith("_BTCUSDT.md") and json_path.exists()
    md = md_path.read_text()
    for section in ("## Summary", "## Timeline", "## Trades: entries and exits", "## What blocked other signals",
                    "## P&L per trade reconciled against snapshots", "## Anomalies", "## Open questions",
                    "## Appendix: queries"):
        assert section in md
    assert "Circuit breakers that blocked BTCUSDT's entries: **daily_drawdown, market_volatility**" in md
    assert "gates in force" in md and "buy on" in md
    assert res["reconciled"] is True and res["trades"] == 2
    twin = json.loads(json_path.read_text())
    assert twin["pnl"]["realized_pnl_usd"] == pytest.approx(float(exp["realized_by_symbol"]["BTCUSDT"]))


def test_appendix_queries_reproduce_figures(fresh_db_url, tmp_path, monkeypatch):
    """Run the appendix's pnl_summary statement as the read-only role: it gives the summary's figures."""
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        exp = seed_run(c)
        res = write_investigation(c, "BTCUSDT", out_dir=tmp_path)
    twin = json.loads(Path(res["json_path"]).read_text())
    md = Path(res["md_path"]).read_text()
    q = next(q for q in twin["queries"] if q["name"] == "pnl_summary")
    assert q["sql"] in md
    from ats.db.connection import readonly_url
    with psycopg.connect(readonly_url(fresh_db_url), row_factory=dict_row) as ro:
        row = ro.execute(q["sql"]).fetchone()
        assert float(row["realized_pnl_usd"]) == pytest.approx(float(exp["realized_by_symbol"]["BTCUSDT"]))
        assert row["closed_trades"] == 2
        # every recorded statement runs read-only
        for entry in twin["queries"]:
            ro.execute(entry["sql"]).fetchall()


def test_cli_investigate(fresh_conn, tmp_path, monkeypatch):
    seed_run(fresh_conn)
    monkeypatch.setenv("ATS_HOME", str(tmp_path))
    r = run_cli("investigate", "BTCUSDT", "--since", "2021-05-18T07:00")
    assert r.returncode == 0, r.stderr
    assert "1 closed trade(s)" in r.stdout and "daily_drawdown, market_volatility" in r.stdout
    assert "reconciled with snapshots: yes" in r.stdout
    files = sorted((tmp_path / "reports" / "investigations").iterdir())
    assert [f.suffix for f in files] == [".json", ".md"]
    r = run_cli("investigate", "BTCUSDT", "--run-id", "nope")
    assert r.returncode == 1 and "engine run 'nope' not found" in r.stderr
