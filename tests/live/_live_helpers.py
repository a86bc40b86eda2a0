"""Helpers of the live-loop tests: a Bybit simulator on 127.0.0.1 in this process, its state, the env."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

KEY, SECRET = "PLANTEDKEY-9f3a1c77e2", "PLANTEDSECRET-44d1b0aa97c3"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1000)


def start_sim(shared_data, *, start="2021-05-10T00:00:00", speed=20000.0, paused=False, **kw):
    from ats.execution.venue_sim.bybit import BybitSim, load_candles, serve

    path = shared_data / "binance" / "BTC_USDT-1h.json"
    sim = BybitSim(load_candles(str(path)), start_ms=ms(start), speed=speed, api_key=KEY, api_secret=SECRET,
                   start_paused=paused, **kw)
    srv = serve(sim)
    return sim, srv, f"http://127.0.0.1:{srv.server_address[1]}"


def sim_state(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/sim/state", timeout=5) as r:
        return json.load(r)


def sim_control(url: str, **body) -> dict:
    req = urllib.request.Request(f"{url}/sim/control", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def live_env(monkeypatch, url: str) -> None:
    monkeypatch.setenv("ATS_BYBIT_BASE_URL", url)
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)


def live_session(db_url: str, account: str = "default") -> dict | None:
    """The ``live_sessions`` row of ``account`` (None before a loop registered)."""
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        return c.execute("SELECT * FROM live_sessions WHERE account_id=%s", (account,)).fetchone()


def start_live(cmd: list[str], env: dict, db_url: str, log, *, cwd, timeout_s: float = 90.0) -> subprocess.Popen:
    """Start ``ats live run`` (``cmd``) writing to the open file ``log``; return once the loop has read the venue
    clock and registered its pid in ``live_sessions``. AssertionError with the log's tail if it exits first or
    does not register within ``timeout_s`` seconds."""
    p = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        s = live_session(db_url)
        if s is not None and s["pid"] == p.pid:
            return p
        if p.poll() is not None:
            raise AssertionError(f"live run exited early ({p.returncode}): {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError("live run did not start")
