"""The local Alpaca simulator as alpaca-py sees it: auth, response shapes, faults, the accelerated clock, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, OptionLegRequest

from ats.execution.alpaca import AlpacaBroker, RetryPolicy, iron_condor_legs
from ats.execution.venue_sim.alpaca import AlpacaSim, load_bars

KEY, SECRET = "PKSIMTEST2", "simsecret2"


@pytest.fixture
def sim(shared_data):
    spy = load_bars(shared_data / "equities" / "SPY_1d.csv")
    s = AlpacaSim([spy, load_bars(shared_data / "equities" / "AAPL_1d.csv")], KEY, SECRET,
                  start_ms=spy.t[400] + spy.tf_ms).start()
    yield s
    s.stop()


def client(sim, secret=SECRET):
    c = TradingClient(KEY, secret, paper=True, url_override=sim.url)
    c._retry = 0
    return c


def mkt(cid, symbol="SPY"):
    return MarketOrderRequest(symbol=symbol, qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                              client_order_id=cid)


def test_auth_headers_are_checked(sim):
    with pytest.raises(APIError) as ei:
        client(sim, "wrong").get_account()
    assert ei.value.status_code == 401
    assert client(sim).get_account().status.value == "ACTIVE"


def test_duplicate_client_order_id_is_422(sim):
    c = client(sim)
    c.submit_order(mkt("dup-1"))
    with pytest.raises(APIError) as ei:
        c.submit_order(mkt("dup-1"))
    assert ei.value.status_code == 422 and "unique" in ei.value.message
    assert len(sim.orders) == 1


def test_dropped_response_is_a_connection_error_but_the_order_exists(sim):
    sim.faults.drop_next_order_response = True
    c = client(sim)
    with pytest.raises(requests.exceptions.ConnectionError):
        c.submit_order(mkt("drop-1"))
    assert c.get_order_by_client_id("drop-1").client_order_id == "drop-1"


def test_mleg_order_shape_parses_with_legs(sim):
    ic = iron_condor_legs("SPY", "1999-09-17", (120, 125, 135, 140), 1)
    legs = [OptionLegRequest(symbol=lg.symbol, side=OrderSide(lg.side), ratio_qty=1) for lg in ic.legs]
    o = client(sim).submit_order(MarketOrderRequest(qty=1, order_class=OrderClass.MLEG, legs=legs,
                                                    time_in_force=TimeInForce.DAY, client_order_id="ic-1"))
    assert o.order_class == OrderClass.MLEG and [lg.symbol for lg in o.legs] == [lg.symbol for lg in ic.legs]
    assert all(float(lg.ratio_qty) == 1 for lg in o.legs)
    assert {p.symbol for p in client(sim).get_all_positions()} == {lg.symbol for lg in ic.legs}


def test_option_leg_on_unknown_underlying_is_refused(sim):
    legs = [OptionLegRequest(symbol="QQQ990917P00100000", side=OrderSide.SELL, ratio_qty=1),
            OptionLegRequest(symbol="QQQ990917P00090000", side=OrderSide.BUY, ratio_qty=1)]
    with pytest.raises(APIError) as ei:
        client(sim).submit_order(MarketOrderRequest(qty=1, order_class=OrderClass.MLEG, legs=legs,
                                                    time_in_force=TimeInForce.DAY))
    assert ei.value.status_code == 422 and sim.orders == []


def test_cli_serves_an_accelerated_clock_and_bars(shared_data):
    data = shared_data / "equities"
    env = dict(os.environ, ALPACA_API_KEY=KEY, ALPACA_SECRET_KEY=SECRET,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = ("import argparse, sys; from ats.execution.venue_sim.alpaca import register_alpaca_sim; "
            "p = argparse.ArgumentParser(); register_alpaca_sim(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "alpaca", "--port", "0", "--speed", "86400",
                             "--start", "2005-03-01T00:00:00Z", "--candles", str(data / "SPY_1d.csv"),
                             "--candles", str(data / "AAPL_1d.csv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "alpaca simulator on http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() else line
        url = line.split(" on ")[1].split()[0]
        b = AlpacaBroker(KEY, SECRET, base_url=url, data_url=url, run_id="cli", retry=RetryPolicy(sleep=time.sleep))
        t0 = b.server_time_ms()
        time.sleep(0.5)
        dt = b.server_time_ms() - t0
        assert 0.4 * 86_400_000 < dt < 3 * 86_400_000                  # ~half a simulated day in half a second
        bars = b.closed_candles("AAPL", "1d", t0 - 10 * 86_400_000, b.server_time_ms())
        assert bars and all(c.symbol == "AAPL" for c in bars)
        assert b.preflight().endpoint_kind == "local"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
