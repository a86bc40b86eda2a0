"""Helpers of the live-loop tests: a Bybit simulator on 127.0.0.1 in this process, its state, the env."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone

CANDLES_1H = "/work/shared/data/ohlcv/binance/BTC_USDT-1h.json"
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
