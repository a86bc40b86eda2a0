"""`ats account ...`: create, list, show and fund accounts (thin: the work is in ats.accounts.store)."""

from __future__ import annotations

import json

CLI_ORDER = 15


def _create(args) -> int:
    from ..db.connection import transaction
    from .store import AccountSpec, create_account, parse_usd, read_universe

    spec = AccountSpec(account_id=args.id, broker=args.broker, starting_cash_usd=parse_usd(args.starting_cash),
                       profile=args.profile, universe=read_universe(args.universe) if args.universe else None)
    with transaction() as conn:
        doc = create_account(conn, spec)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"account {doc['account_id']} created: broker {doc['broker']}, profile {doc['profile']}, "
              f"starting cash {float(doc['starting_cash_usd']):,.2f} USD, universe "
              f"{', '.join(doc['universe']) if doc['universe'] else '(the watchlist setting)'}")
        print(f"  bind a process to it with --account {doc['account_id']} or ATS_ACCOUNT={doc['account_id']}")
    return 0


def _print_one(doc: dict) -> None:
    run = doc["latest_run"] or {}
    eq = f"{float(doc['equity_usd']):,.2f} USD at {doc['equity_ts']}" if doc["equity_usd"] else "no snapshot yet"
    print(f"{doc['account_id']:<16} {doc['broker']:<7} {doc['profile']:<12} state {doc['trading_state']:<8} "
          f"equity {eq}")
    print(f"  starting cash {float(doc['starting_cash_usd']):,.2f} USD, funded +{float(doc['funded_usd']):,.2f} USD; "
          f"latest run {run.get('run_id', '-')} ({run.get('mode', '-')}, {run.get('status', '-')}), "
          f"last bar {run.get('last_bar_time') or '-'}")
    for t in doc["tripped"]:
        print(f"  tripped: {t['breaker']} [{t['scope']}] since {t['since']}: {t['reason']}")
    pf = doc["preflight"]
    print(f"  preflight: {'none recorded' if pf is None else ('passed' if pf['passed'] else 'FAILED') + ' at ' + pf['ts']}")


def _list(args) -> int:
    from ..db.connection import connect
    from .store import list_accounts

    with connect() as conn:
        docs = list_accounts(conn)
    if args.json:
        print(json.dumps(docs, indent=2))
    else:
        for d in docs:
            _print_one(d)
    return 0


def _show(args) -> int:
    from ..db.connection import connect
    from .store import show_account

    with connect() as conn:
        doc = show_account(conn, args.id)
    print(json.dumps(doc, indent=2)) if args.json else _print_one(doc)
    return 0


def _fund(args) -> int:
    from ..db.connection import transaction
    from .store import fund_account, parse_usd

    with transaction() as conn:
        adj = fund_account(conn, args.id, parse_usd(args.usd, "--usd"), reason=args.reason)
    print(f"account {args.id}: +{float(adj['amount_usd']):,.2f} USD paper cash recorded "
          f"(adjustment {adj['adjustment_id']}); a running paper loop adds it at its next bar")
    return 0


def register(sub) -> None:
    """Add `ats account` to the CLI."""
    p = sub.add_parser("account", help="accounts that share nothing: create, list, show, fund")
    a = p.add_subparsers(dest="account_cmd", required=True, metavar="ACTION")
    q = a.add_parser("create", help="create an account (settings, strategies, database roles) in one transaction")
    q.add_argument("id", help="account id: 1-32 of a-z 0-9 - _")
    q.add_argument("--broker", required=True, choices=["paper", "bybit", "alpaca"])
    q.add_argument("--starting-cash", required=True, metavar="USD")
    q.add_argument("--universe", metavar="FILE", help="symbols, one per line or comma-separated (# comments)")
    q.add_argument("--profile", default="conservative", choices=["conservative", "aggressive"])
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_create)
    q = a.add_parser("list", help="every account with equity, trading state, last bar, preflight")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)
    q = a.add_parser("show", help="one account's state")
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_show)
    q = a.add_parser("fund", help="paper top-up (an append-only adjustment and an event)")
    q.add_argument("id")
    q.add_argument("--usd", required=True)
    q.add_argument("--reason", default="paper top-up")
    q.set_defaults(func=_fund)
