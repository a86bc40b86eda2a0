"""`ats monitor`: the live monitor's lock, pidfile and stale detection through the real CLI and daemon, and the
DONE-WHEN soak: a monitored paper-live day through the Bybit simulator with a deliberately removed stop loss,
named with its evidence rows in the audit report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "live"))

from _live_helpers import sim_control, start_sim  # noqa: E402

STRATS = "btc_trend,momentum,mean_reversion,trend_breakdown"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An ATS project root of its own (state in .ats/monitor, trail in logs/, reports/) for this test."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    monkeypatch.setenv("ATS_HOME", str(h))
    monkeypatch.setenv("ATS_LOG_DIR", str(h / "logs"))
    monkeypatch.delenv("ATS_ACCOUNT", raising=False)
    return h


def _env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = f"{ROOT / 'services'}:{ROOT}"
    e.update(extra)
    return e


def _ats(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ats.cli", *args], capture_output=True, text=True,
                          env=env or _env(), cwd=str(ROOT), timeout=timeout)


def _pid(home: Path) -> int | None:
    f = home / ".ats" / "monitor" / "monitor.pid"
    return int(f.read_text()) if f.exists() else None


def _gone(pid: int, timeout=10.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our grandchild may linger as a zombie until init reaps it
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _trail(home: Path) -> list[dict]:
    out = []
    for f in sorted((home / "logs" / "live-monitor" / "default").glob("*.jsonl")):
        out += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return out


# ---------------------------------------------------------------------------------------------------- lock

def test_the_lock_admits_one_holder(home):
    from ats.ops.monitor_daemon import MonitorLock, lock_is_held, monitor_paths

    mp = monitor_paths("default")
    a, b = MonitorLock(mp), MonitorLock(mp)
    assert a.acquire() and not b.acquire() and lock_is_held(mp)
    a.release()
    assert not lock_is_held(mp) and b.acquire()
    b.release()
    assert mp.lock == home / ".ats" / "monitor" / "monitor.lock"


def test_second_start_refused_stale_pidfile_detected_and_replaced(fresh_db_url, home):
    r = _ats("monitor", "start", "--interval", "0.3")
    assert r.returncode == 0, r.stderr
    pid = _pid(home)
    assert pid and f"pid {pid}" in r.stdout
    try:
        again = _ats("monitor", "start", "--interval", "0.3")
        assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
        st = json.loads(_ats("monitor", "status", "--json").stdout)
        assert st["running"] and st["pid"] == pid and not st["stale"]
        os.kill(pid, signal.SIGKILL)  # the daemon this test started, by its id: a killed monitor
        assert _gone(pid)
        st = json.loads(_ats("monitor", "status", "--json").stdout)
        assert not st["running"] and st["stale"] and st["pid"] == pid
        assert "stale pidfile" in _ats("monitor", "status").stdout
        r = _ats("monitor", "start", "--interval", "0.3")
        assert r.returncode == 0, r.stderr
        assert f"stale pidfile: monitor pid {pid} was not running" in r.stdout
        new = _pid(home)
        assert new and new != pid
        time.sleep(1.0)
        r = _ats("monitor", "stop")
        assert r.returncode == 0 and f"stopped (pid {new})" in r.stdout, r.stdout + r.stderr
        assert _gone(new) and _pid(home) is None
        lines = _trail(home)
        assert len(lines) >= 2 and {ln["monitor"]["pid"] for ln in lines} >= {new}
        assert all(ln["deviations"][0]["id"] == "loop:no_session:default" for ln in lines if ln["monitor"]["pid"] == new)
        r = _ats("monitor", "stop")
        assert r.returncode == 1 and "not running" in r.stdout
    finally:
        for p in {pid, _pid(home)} - {None}:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_poll_once_without_a_live_session(fresh_db_url, home):
    r = _ats("monitor", "poll", "--once", "--append")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert set(line["checks"]) == {"loop", "breakers", "positions", "feed", "latency", "reconciliation", "errors",
                                   "strategies"}
    assert [d["id"] for d in line["deviations"]] == ["loop:no_session:default"]
    assert _trail(home)[-1]["ts"] == line["ts"]


def test_report_groups_a_deviation_seen_in_several_polls(home):
    from ats.ops.monitor_report import ASSESSMENT_HEADING, render, synthesize

    dev = {"check": "positions", "kind": "sl_missing", "severity": "critical", "id": "positions:sl_missing:position7",
           "message": "no stop loss", "evidence": [{"_table": "positions", "position_id": 7, "sl_price": None}]}
    lines = [{"ts": f"2026-01-01T00:00:0{i}+00:00", "run_id": "r", "deviations": [dev] if i else [],
              "checks": {"positions": {"expected": "SL set", "observed": {"open": 1}, "deviations": 1 if i else 0}}}
             for i in range(3)]
    doc = synthesize(lines, account="default")
    (d,) = doc["deviations"]
    assert (d["polls"], d["first_seen"], d["last_seen"]) == (2, lines[1]["ts"], lines[2]["ts"])
    assert doc["checks"]["positions"]["polls_with_deviations"] == 2 and doc["counts"]["critical"] == 1
    md = render(doc)
    assert "### [critical] positions:sl_missing:position7" in md and "| 7 | NULL |" in md
    assert md.rstrip().splitlines()[-3] == ASSESSMENT_HEADING


# ---------------------------------------------------------------------------------------------------- the soak

def _db(url):
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


def _wait(pred, timeout, what, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _open_position_with_sl(url, run_id):
    with _db(url) as c:
        return c.execute("""SELECT position_id, run_id, context FROM positions WHERE run_id = %s AND status = 'open'
                             AND context->>'sl_price' IS NOT NULL ORDER BY position_id LIMIT 1""",
                         (run_id,)).fetchone()


def _remove_stop_loss(url, pos_id, bar_ts):
    """The injected deviation: the stop loss of an open position removed in the database (the current row and a
    'manual' TP/SL history row, position_targets being where the schema records target changes)."""
    with _db(url) as c, c.transaction():
        c.execute("UPDATE positions SET context = jsonb_set(context, '{sl_price}', 'null') WHERE position_id = %s",
                  (pos_id,))
        c.execute("""INSERT INTO position_targets (position_id, run_id, ts, tp_price, sl_price, trailing_stop, reason)
                     SELECT position_id, run_id, %s, (context->>'tp_price')::numeric, NULL,
                            (context->>'trailing_stop')::numeric, 'manual' FROM positions WHERE position_id = %s""",
                  (bar_ts, pos_id))


def test_monitored_paper_live_day_names_the_injected_missing_stop_loss(fresh_db_url, shared_data, home, tmp_path):
    sim, srv, url = start_sim(shared_data, start="2021-05-12T00:00:00", speed=2400, paused=True)
    env = _env(ATS_DATABASE_URL=fresh_db_url, ATS_BYBIT_BASE_URL=url)
    log = open(tmp_path / "live.log", "w")
    live = subprocess.Popen([sys.executable, "-m", "ats.cli", "live", "run", "--broker", "paper", "--symbols",
                             "BTCUSDT", "--timeframe", "1h", "--strategies", STRATS, "--until", "2021-05-13T00:00:00",
                             "--no-progress"], env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
    mon_pid = None
    try:
        def session():
            with _db(fresh_db_url) as c:
                return c.execute("SELECT * FROM live_sessions WHERE account_id = 'default' AND pid = %s",
                                 (live.pid,)).fetchone()
        s = _wait(lambda: session() or (live.poll() is not None and pytest.fail((tmp_path / "live.log").read_text())),
                  60, "the live loop to register")
        r = _ats("monitor", "start", "--interval", "1", env=env)
        assert r.returncode == 0, r.stderr
        mon_pid = _pid(home)
        assert "running (pid" in _ats("monitor", "status", env=env).stdout
        sim_control(url, pause=False)

        pos = _wait(lambda: _open_position_with_sl(fresh_db_url, s["run_id"]), 90, "an open position with a stop loss")
        sim_control(url, pause=True)  # the venue clock stands still: no bar, no exit while the stop is removed
        time.sleep(0.5)  # a step already under way commits first
        with _db(fresh_db_url) as c:
            bar = c.execute("SELECT last_bar_time FROM live_sessions WHERE account_id = 'default'").fetchone()
        _remove_stop_loss(fresh_db_url, pos["position_id"], bar["last_bar_time"])
        dev_id = f"positions:sl_missing:position{pos['position_id']}"
        _wait(lambda: any(d["id"] == dev_id for ln in _trail(home) for d in ln["deviations"]), 20,
              "a poll that sees the missing stop loss")
        sim_control(url, pause=False)

        assert live.wait(timeout=120) == 0, (tmp_path / "live.log").read_text()[-3000:]
        n = len(_trail(home))
        _wait(lambda: len(_trail(home)) > n, 10, "a poll after the loop stopped")
        r = _ats("monitor", "stop", "--save-report", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _gone(mon_pid)
    finally:
        if live.poll() is None:
            live.kill()
        if mon_pid is not None and not _gone(mon_pid, timeout=0.1):
            os.kill(mon_pid, signal.SIGKILL)
        srv.shutdown()
        log.close()

    trail = _trail(home)
    assert len(trail) >= 10, "several polls over the simulated day"
    assert all(set(ln["checks"]) >= {"loop", "positions", "feed", "strategies"} for ln in trail)
    last = trail[-1]
    assert last["checks"]["loop"]["observed"]["state"] == "STOPPED" and last["clock"]["source"] == "venue"
    assert any(ln["checks"]["loop"]["observed"].get("alive") for ln in trail)
    assert any(ln["checks"]["strategies"]["observed"]["signals_since_last_poll"] for ln in trail)

    (md,) = (home / "reports" / "live-monitor" / "default").glob("*.md")
    doc = json.loads(md.with_suffix(".json").read_text())
    assert doc["polls"] == len([ln for ln in trail if ln["ts"] >= doc["session"]["started_at"]])
    crit = [d for d in doc["deviations"] if d["severity"] == "critical"]
    assert [d["id"] for d in crit] == [dev_id], "the injected deviation and nothing else is critical"
    ev = {row["_table"]: row for row in crit[0]["evidence_first"]}
    assert ev["positions"]["position_id"] == pos["position_id"] and ev["positions"]["sl_price"] is None
    assert ev["position_targets"]["reason"] == "manual" and ev["position_targets"]["sl_price"] is None
    assert ev["engine_runs.checkpoint"]["sl_price"] is not None  # the engine still holds its stop
    assert ev["strategy_configurations_history"]["sl_pct"] > 0
    text = md.read_text()
    assert f"### [critical] {dev_id}" in text and "no stop loss in positions.context, position_targets" in text
    assert "## Expected vs observed" in text and text.rstrip().endswith("-->")
    assert "## Agent assessment" in text


# ---------------------------------------------------------------------------------------------------- the checks

def test_poll_names_each_broken_rule_with_its_rows(fresh_db_url, home):
    """A recorded live session whose loop died, with an oversized position held past its max hold, an entry with the
    buy gate off, a checkpoint position the table does not show, no candle and an error event: one deviation each."""
    from datetime import datetime, timezone

    from psycopg.types.json import Jsonb

    from ats.db.config_store import upsert_strategy
    from ats.db.events import record_event
    from ats.ops.monitor import poll

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = lambda iso: datetime.fromisoformat(iso).replace(tzinfo=timezone.utc)  # noqa: E731
    with _db(fresh_db_url) as c:  # the gate was switched off before the run started (the run knew it)
        upsert_strategy(c, "momentum", buy_enabled=False, effective_from=t("2021-05-01T00:00:00"))
    with _db(fresh_db_url) as c, c.transaction():
        c.execute("""INSERT INTO engine_runs (run_id, account_id, mode, params, last_bar_time, checkpoint)
                     VALUES ('paper-live-t', 'default', 'paper-live', %s, %s, %s)""",
                  (Jsonb({"timeframe": "1h", "symbols": ["BTCUSDT"], "strategies": ["momentum", "btc_trend"]}),
                   t("2021-05-20T00:00:00"),
                   Jsonb({"portfolio": {"positions": [{"position_id": 99, "strategy": "btc_trend", "symbol": "BTCUSDT",
                                                       "side": "long", "sl_price": 1.0, "tp_price": 2.0}]}})))
        c.execute("""INSERT INTO live_sessions (account_id, run_id, broker, endpoint, pid, host, state, last_bar_time)
                     VALUES ('default', 'paper-live-t', 'alpaca', 'http://127.0.0.1:9', %s, %s, 'ACTIVE', %s)""",
                  (dead.pid, os.uname().nodename, t("2021-05-20T00:00:00")))
        sig = c.execute("""INSERT INTO signals (run_id, account_id, strategy_name, symbol, timeframe, ts, side, intent,
                                                position_side, price, status)
                           VALUES ('paper-live-t', 'default', 'momentum', 'BTCUSDT', '1h', %s, 'buy', 'open', 'long',
                                   50000, 'accepted') RETURNING signal_id""", (t("2021-05-10T00:00:00"),)).fetchone()
        pos = c.execute("""INSERT INTO positions (run_id, account_id, strategy_name, symbol, side, status, qty, entry_qty,
                                                  avg_entry_price, opened_at, entry_signal_id, context)
                           VALUES ('paper-live-t', 'default', 'momentum', 'BTCUSDT', 'long', 'open', 0.018, 0.018,
                                   50000, %s, %s, %s) RETURNING position_id""",
                        (t("2021-05-10T00:00:00"), sig["signal_id"],
                         Jsonb({"tp_price": 53000.0, "sl_price": 48500.0}))).fetchone()
        c.execute("""INSERT INTO position_targets (position_id, run_id, ts, tp_price, sl_price, reason)
                     VALUES (%s, 'paper-live-t', %s, 53000, 48500, 'initial')""",
                  (pos["position_id"], t("2021-05-10T00:00:00")))
        c.execute("""INSERT INTO order_executions (client_order_id, run_id, account_id, signal_id, position_id,
                                                   strategy_name, symbol, side, position_side, intent, qty, notional_usd,
                                                   decision_price, status, filled_qty, submitted_at, updated_at)
                     VALUES ('t-open-1', 'paper-live-t', 'default', %s, %s, 'momentum', 'BTCUSDT', 'buy', 'long', 'open',
                             0.018, 900, 50000, 'filled', 0.018, %s, %s)""",
                  (sig["signal_id"], pos["position_id"], t("2021-05-10T00:00:00"), t("2021-05-10T00:00:00")))
        record_event(c, "engine", "step_failed", severity="error", payload={"run_id": "paper-live-t", "error": "boom"})
    with psycopg.connect(fresh_db_url, row_factory=dict_row, autocommit=True) as c:
        line = poll(c, "default")
        again = poll(c, "default", cursor=line["cursor"])
    pid = pos["position_id"]
    got = {d["id"]: d for d in line["deviations"]}
    assert set(got) == {f"loop:loop_dead:pid{dead.pid}", f"positions:size_exceeds:order{_order_id(fresh_db_url)}",
                        f"positions:max_hold_exceeded:position{pid}", f"positions:state_mismatch:position{pid}",
                        "positions:state_mismatch:position99", f"strategies:entry_with_buy_gate_off:order"
                        f"{_order_id(fresh_db_url)}", f"errors:step_failed:event{_event_id(fresh_db_url)}",
                        "feed:stale:BTCUSDT"}, got
    assert got[f"loop:loop_dead:pid{dead.pid}"]["severity"] == "critical"
    size = got[f"positions:size_exceeds:order{_order_id(fresh_db_url)}"]
    assert size["evidence"][-1]["notional_usd"] == 900 and "trade_amount_usd 500.00" in size["message"]
    gate = got[f"strategies:entry_with_buy_gate_off:order{_order_id(fresh_db_url)}"]
    assert [r["buy_enabled"] for r in gate["evidence"] if r["_table"] == "strategy_configurations_history"] == [False]
    assert line["checks"]["feed"]["observed"]["clock"] == "wall"  # alpaca: no public clock
    assert line["checks"]["strategies"]["observed"]["strategies"]["momentum"]["entries"] == 1
    # since the last poll: the entry and the error were seen once; the standing facts are seen again
    ids = {d["id"] for d in again["deviations"]}
    assert not any(i.startswith(("strategies:", "errors:")) for i in ids)
    assert f"positions:max_hold_exceeded:position{pid}" in ids and f"loop:loop_dead:pid{dead.pid}" in ids


def _order_id(url):
    with _db(url) as c:
        return c.execute("SELECT order_id FROM order_executions WHERE client_order_id = 't-open-1'").fetchone()["order_id"]


def _event_id(url):
    with _db(url) as c:
        return c.execute("SELECT event_id FROM system_events WHERE event_type = 'step_failed'").fetchone()["event_id"]
