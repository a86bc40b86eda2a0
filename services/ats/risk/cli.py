"""`ats risk ...`: circuit-breaker states, the manual STOP flag (stop / resume), the risk settings."""

from __future__ import annotations

CLI_ORDER = 22

import argparse
import json


def _breakers(args) -> int:
    from ..db import connect
    from ..portfolio.pnl import latest_run

    with connect() as conn:
        run = args.run or latest_run(conn, args.account)
        rows = [] if run is None else conn.execute(
            "SELECT breaker, scope, state, since, reason FROM breaker_states WHERE run_id=%s ORDER BY breaker, scope",
            (run,)).fetchall()
        flag = conn.execute("SELECT value FROM system_settings WHERE account_id=%s AND key='breaker.manual_stop'",
                            (args.account,)).fetchone()
    doc = {"run_id": run, "manual_stop": None if flag is None else flag["value"], "breakers": rows}
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"manual STOP flag: {'ON' if doc['manual_stop'] is True else 'off'}")
    if run is None:
        print("no engine run yet")
        return 0
    tripped = [r for r in rows if r["state"] == "tripped"]
    print(f"run {run}: {len(tripped)} breaker(s) tripped at the end of the run, {len(rows)} ever tripped")
    for r in rows:
        print(f"  {r['breaker']:<19} {r['scope']:<10} {r['state']:<8} since {r['since']:%Y-%m-%d %H:%M}  {r['reason']}")
    return 0


def _set_stop(args, on: bool) -> int:
    from ..db import connect
    from ..db import config_store as cs
    from ..db.events import record_event

    with connect() as conn:
        cs.set_setting(conn, "breaker.manual_stop", on, account_id=args.account)
        record_event(conn, "risk", "manual_stop_set" if on else "manual_stop_cleared", severity="warning" if on else "info",
                     account_id=args.account, payload={"reason": args.reason, "setting": "breaker.manual_stop"})
        conn.commit()
    print(f"manual STOP flag {'set: new entries halt' if on else 'cleared: entries allowed'} for account "
          f"{args.account} (exits always continue). Effective-dated from now: replays/backtests read the flag as of "
          f"each bar (bars before now are not affected); a running live loop re-reads it every bar")
    return 0


def _settings(args) -> int:
    from ..db import connect
    from ..db import config_store as cs
    from ..timeutil import parse_ts
    from .settings import SETTINGS

    with connect() as conn:
        vals = {k: cs.setting_as_of(conn, k, parse_ts(args.as_of) if args.as_of else None, default=d,
                                    account_id=args.account) for k, (d, _) in SETTINGS.items()}
    if args.json:
        print(json.dumps(vals, indent=2))
        return 0
    for k, v in vals.items():
        print(f"{k:<42} {json.dumps(v):<8} {SETTINGS[k][1]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats risk`."""
    p = sub.add_parser("risk", help="circuit breakers, manual STOP flag, risk settings")
    rs = p.add_subparsers(dest="risk_command", required=True, metavar="COMMAND")
    q = rs.add_parser("breakers", help="breaker states of a run (default: latest) and the STOP flag")
    q.add_argument("--run", default=None, help="engine run id")
    q.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_breakers)
    q = rs.add_parser("stop", help="set the manual STOP flag: halt new entries (exits continue); effective-dated from "
                                   "now: replays/backtests read it as of each bar, a running live loop every bar")
    q.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    q.add_argument("--reason", default="operator", help="why (recorded in system_events)")
    q.set_defaults(func=lambda a: _set_stop(a, True))
    q = rs.add_parser("resume", help="clear the manual STOP flag")
    q.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    q.add_argument("--reason", default="operator", help="why (recorded in system_events)")
    q.set_defaults(func=lambda a: _set_stop(a, False))
    q = rs.add_parser("settings", help="risk, breaker and paper-broker settings in force (or --as-of T)")
    q.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    q.add_argument("--as-of", default=None, help="ISO-8601 UTC time")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_settings)
