"""`ats live run` (the live loop of one account) and `ats live status`."""

from __future__ import annotations

import argparse

CLI_ORDER = 41


def _run(args) -> int:
    import json

    from ..db.migrate import migrate
    from ..timeutil import parse_ts
    from .loop import LiveOptions, run_live

    migrate()  # a long-running loop starts on an up-to-date schema (idempotent; as the owner; advisory-locked)

    opts = LiveOptions(account_id=args.account, broker=args.broker,
                       symbols=tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
                       timeframe=args.timeframe,
                       strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
                       until_ms=int(parse_ts(args.until, what="--until").timestamp() * 1000) if args.until else None,
                       max_bars=args.max_bars, progress=not args.no_progress, testnet=args.testnet, live=args.live,
                       tag=args.tag or "", reconcile_every_min=args.reconcile_every)
    s = run_live(opts)
    lat = sorted(s.get("latencies_ms") or [])
    out = {k: s.get(k) for k in ("run_id", "mode", "status", "bars", "orders_sent", "anomalies", "reconciliations",
                                 "mismatches")}
    if lat:
        out["latency_ms_p50"] = round(lat[len(lat) // 2], 2)
    print(json.dumps(out, default=str))
    return 0


def _status(args) -> int:
    import json
    import os

    from ..db import connect
    from ..procutil import pid_alive

    with connect() as conn:
        rows = conn.execute("SELECT * FROM live_sessions ORDER BY account_id").fetchall()
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    if not rows:
        print("no live loop has run (table live_sessions is empty)")
        return 0
    for r in rows:
        alive = pid_alive(r["pid"]) if r["host"] == os.uname().nodename else None
        state = r["state"] if alive is not False or r["state"] == "STOPPED" else f"{r['state']} (pid gone)"
        last = f"{r['last_bar_time']:%Y-%m-%d %H:%M}" if r["last_bar_time"] else "-"
        print(f"{r['account_id']:<12} pid {r['pid']:<7} {r['broker']:<7} {state:<10} last bar {last}  run {r['run_id']}"
              + (f"  why: {r['reason']}" if r["reason"] else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Register `ats live run` and `ats live status`."""
    p = sub.add_parser("live", help="the live loop: the engine on the venue's clock, candles and broker")
    ls = p.add_subparsers(dest="live_cmd", required=True)
    q = ls.add_parser("run", help="run one account's live loop (paper on live data by default)")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.add_argument("--broker", default="paper", choices=("paper", "bybit", "alpaca"))
    q.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT")
    q.add_argument("--timeframe", default="5m")
    q.add_argument("--strategies", default="momentum", help="comma-separated strategy names")
    q.add_argument("--until", default=None, help="stop when the venue clock reaches this ISO time")
    q.add_argument("--max-bars", type=int, default=None, help="stop after N bars (resumable)")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--testnet", action="store_true", help="the venue's testnet (Bybit api-testnet)")
    q.add_argument("--live", action="store_true", help="opt-in 1 of 3 for a production (real-money) endpoint")
    q.add_argument("--tag", default="", help="distinguishes two sessions with otherwise equal arguments")
    q.add_argument("--reconcile-every", type=float, default=60.0, help="venue minutes between reconciliations")
    q.set_defaults(func=_run)
    q = ls.add_parser("status", help="each account's loop: pid, last bar, ACTIVE/REDUCING/HALTED and why")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_status)
