"""`ats venue-sim ...` (local venue simulators) and `ats broker preflight` (the read-only go-live check).

Offline rehearsal of the live loop (two terminals; any key/secret pair, the simulator checks the signatures):

    # terminal 1: a Bybit v5 simulator, one simulated hour per 0.18 s
    BYBIT_API_KEY=k BYBIT_API_SECRET=s ats venue-sim bybit --port 18765 \
        --candles ../shared/data/ohlcv/binance/BTC_USDT-1h.json --speed 20000 --start 2021-05-17
    # terminal 2: the live loop against it (a loopback endpoint needs no go-live opt-in)
    ATS_BYBIT_BASE_URL=http://127.0.0.1:18765 BYBIT_API_KEY=k BYBIT_API_SECRET=s \
        ats live run --broker bybit --symbols BTCUSDT --timeframe 1h --until 2021-05-24
    ats live status

    # Alpaca: SPY daily bars, one simulated day per 0.6 s
    ALPACA_API_KEY=k ALPACA_SECRET_KEY=s ats venue-sim alpaca --port 18766 \
        --candles ../shared/data/equities/SPY_1d.csv --speed 150000 --start 2008-09-01
    ATS_ALPACA_BASE_URL=http://127.0.0.1:18766 ATS_ALPACA_DATA_URL=http://127.0.0.1:18766 \
        ALPACA_API_KEY=k ALPACA_SECRET_KEY=s ats live run --broker alpaca --symbols SPY --timeframe 1d \
        --until 2008-10-08
"""

from __future__ import annotations

import argparse

CLI_ORDER = 40


def _sim_bybit(args) -> int:
    import os
    import time

    from ..timeutil import parse_ts
    from .venue_sim.bybit import BybitSim, load_candles, serve

    start = int(parse_ts(args.start, what="--start").timestamp() * 1000) if args.start else None
    sim = BybitSim(load_candles(args.candles), symbol=args.symbol, start_ms=start, speed=args.speed,
                   api_key=os.environ.get("BYBIT_API_KEY", "simkey"),
                   api_secret=os.environ.get("BYBIT_API_SECRET", "simsecret"), read_only=args.read_only,
                   start_paused=args.paused)
    srv = serve(sim, args.port)
    port = srv.server_address[1]
    print(f"bybit simulator on http://127.0.0.1:{port} ({args.symbol} from {args.candles}, speed x{args.speed:g}); "
          f"point the loop at it: ATS_BYBIT_BASE_URL=http://127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.shutdown()
    return 0


def _preflight(args) -> int:
    from ..live.preflight import run_preflight_cli

    return run_preflight_cli(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Register `ats venue-sim` and `ats broker`."""
    p = sub.add_parser("venue-sim", help="local venue simulators on 127.0.0.1 (offline rehearsal of the live loop)")
    vs = p.add_subparsers(dest="venue", required=True)
    q = vs.add_parser("bybit", help="Bybit v5 REST simulator (spot + linear perpetual, one symbol)")
    q.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port, printed)")
    q.add_argument("--candles", required=True, help="OHLCV JSON file [[open_ms,o,h,l,c,v],...]")
    q.add_argument("--symbol", default="BTCUSDT")
    q.add_argument("--speed", type=float, default=1.0, help="simulated ms per real ms (60 = one hour per minute)")
    q.add_argument("--start", default=None, help="simulated start time ISO (default: 400 bars into the file)")
    q.add_argument("--read-only", action="store_true", help="the API key reports read-only permissions")
    q.add_argument("--paused", action="store_true", help="start with the clock paused (POST /sim/control)")
    q.set_defaults(func=_sim_bybit)
    from .venue_sim.alpaca import register_alpaca_sim  # light: the server imports only the standard library

    register_alpaca_sim(vs)

    b = sub.add_parser("broker", help="venue brokers: the read-only go-live preflight")
    bs = b.add_subparsers(dest="broker_cmd", required=True)
    q = bs.add_parser("preflight", help="read-only checks of a venue account against the expected values")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.add_argument("--broker", default="bybit", choices=("bybit", "alpaca"))
    q.add_argument("--testnet", action="store_true")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_preflight)
