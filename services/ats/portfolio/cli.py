"""`ats pnl`: P&L windows (today / 7d / 30d / 6m / all-time) from portfolio_hourly_snapshots only."""

from __future__ import annotations

CLI_ORDER = 21

import argparse
import json


def _pnl(args) -> int:
    from ..db import connect
    from ..engine.summary import format_pnl
    from .pnl import pnl_windows

    with connect() as conn:
        p = pnl_windows(conn, account_id=args.account, run_id=args.run)
    if args.json:
        print(json.dumps(p, indent=2))
        return 0
    print(f"run {p['run_id']} (account {p['account_id']}): equity {p['equity_usd']:,.2f} USD")
    print("\n".join(format_pnl(p)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats pnl`."""
    p = sub.add_parser("pnl", help="P&L windows from portfolio snapshots (today, 7d, 30d, 6m, all-time)",
                       description="Differences of equity between portfolio_hourly_snapshots rows; never sums of "
                                   "balances or of net_pnl_daily_usd (a running cumulative).")
    p.add_argument("--run", default=None, help="engine run id (default: the account's latest run)")
    p.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_pnl)
