"""`ats investigate`, `ats health-check`, `ats report 24h|weekly|watchlist`: forensic reports (markdown + JSON).

Reports land under ``ats.paths.reports_dir()``; each prints the paths it wrote. The work is done by
``ats.forensics.*``; this module only parses arguments.
"""

from __future__ import annotations

CLI_ORDER = 40

import argparse
import json

from ..db.command import command_connection
from ..timeutil import parse_ts


def _investigate(args) -> int:
    from .investigate import write_investigation

    since = parse_ts(args.since, what="--since") if args.since else None
    until = parse_ts(args.until, what="--until") if args.until else None
    with command_connection("ats-forensics-cli") as conn:
        res = write_investigation(conn, args.symbol, since=since, until=until, out_dir=args.out_dir,
                                  run_id=args.run_id)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        rec = res["reconciled"]
        print(f"{res['symbol']}: {res['trades']} closed trade(s), realized {res['realized_pnl_usd']:+.2f} USD, "
              f"reconciled with snapshots: {'n/a' if rec is None else ('yes' if rec else 'NO')}, "
              f"breakers that blocked signals: {', '.join(res['breakers']) or 'none'}, anomalies: {res['anomalies']}")
        for p in res["paths"]:
            print(p)
    return 0


def _health(args) -> int:
    from .health import write_health_check

    with command_connection("ats-forensics-cli") as conn:
        res = write_health_check(conn, run_id=args.run_id, since=args.since, until=args.until, out_dir=args.out_dir)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(f"health check: {'PASS' if res['passed'] else 'FAIL'} ({len(res['violations'])} rule violation(s))")
        for v in res["violations"][:20]:
            print(f"  VIOLATION {v['rule']}: position {v['position_id']} {v['strategy_name']} {v['symbol']} "
                  f"{v['ts']}: {v['detail'].get('message', '')}")
        for v in res.get("retroactive", [])[:20]:
            print(f"  retroactive (not a violation) {v['rule']}: position {v['position_id']} {v['strategy_name']} "
                  f"{v['symbol']} {v['ts']}: a change recorded {v['changed_recorded_at']} (valid from "
                  f"{v['changed_valid_from']}) would make it: {v['detail'].get('message', '')}")
        for f in res["findings"]:
            print(f"  note: {f}")
        for p in res["paths"]:
            print(p)
    return 0 if res["passed"] else 1


def _report_24h(args) -> int:
    from .periodic import report_24h

    as_of = parse_ts(args.as_of, what="--as-of") if args.as_of else None
    res = report_24h(as_of=as_of, run_id=args.run_id, workers=args.workers)
    print(f"24 h report: {len(res['trades'])} trade(s) investigated ({res['window']['start']} .. {res['window']['end']})")
    print(res["index_path"])
    for p in res["report_paths"]:
        print(p)
    return 0


def _report_weekly(args) -> int:
    from .periodic import report_weekly

    as_of = parse_ts(args.as_of, what="--as-of") if args.as_of else None
    with command_connection("ats-forensics-cli") as conn:
        res = report_weekly(conn, as_of=as_of, run_id=args.run_id, days=args.days)
    pnl = res["pnl"]["pnl_usd"]
    print(f"weekly report: P&L {'n/a' if pnl is None else f'{pnl:+.2f}'} USD over {res['window']['start']} .. "
          f"{res['window']['end']}")
    for p in res["paths"]:
        print(p)
    return 0


def _report_watchlist(args) -> int:
    from .periodic import report_watchlist

    as_of = parse_ts(args.as_of, what="--as-of") if args.as_of else None
    with command_connection("ats-forensics-cli") as conn:
        res = report_watchlist(conn, as_of=as_of, run_id=args.run_id, top=args.top, rank_top=args.rank_top)
    sc = res["scores"]
    print(f"watchlist report: captured {res['captured']} of the top {len(res['top_gainers'])} 7-day gainers"
          + (f"; ranked watchlist (top {sc['rank_top']}) captured {sc['score_captured']}" if sc["hours"] else
             "; no watchlist_scores in the window"))
    for p in res["paths"]:
        print(p)
    return 0


def _report_daily(args) -> int:
    from datetime import date, timedelta

    from ..ops.alerts import send_summary
    from ..timeutil import utcnow
    from .daily import short_message, write_daily

    try:
        day = date.fromisoformat(args.date) if args.date else (utcnow() - timedelta(days=1)).date()
    except ValueError:
        from ..errors import UsageError
        raise UsageError(f"--date {args.date!r}: expected YYYY-MM-DD (UTC day)")
    with command_connection("ats-forensics-cli") as conn:
        md, js, doc = write_daily(conn, day, account_id=args.account)
        title, body = short_message(doc)
        print(f"{title}: {body}")
        print(md)
        print(js)
        if args.no_send:
            return 0
        out = send_summary(conn, account=args.account, title=title, body=body)
    print(f"summary {'sent' if out['delivered'] else 'NOT DELIVERED'}" + (f" ({out['error']})" if out["error"] else ""))
    return 0 if out["delivered"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats investigate`, `ats health-check` and `ats report ...`."""
    p = sub.add_parser("investigate", help="forensic report on one symbol's lifecycle (markdown + JSON)",
                       description="Timeline, entries/exits with signals and gates, blocked signals and why, P&L per "
                                   "trade reconciled against snapshots, anomalies, open questions; writes "
                                   "reports/investigations/<date>_<SYMBOL>.md and .json")
    p.add_argument("symbol", help="e.g. BTCUSDT")
    p.add_argument("--since", help="UTC start (ISO-8601), engine clock")
    p.add_argument("--until", help="UTC end (ISO-8601), engine clock")
    p.add_argument("--run-id", help="engine run (default: the latest replay/live run that traded the symbol)")
    p.add_argument("--out-dir", help="directory for the report (default: reports/investigations)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_investigate)

    p = sub.add_parser("health-check", help="post-trade health and strategy-adherence audit (exit 1 on a broken rule)",
                       description="Checks every trade against the configuration in force at its time (gates, "
                                   "size, TP/SL, cooldown, max hold, breakers) and reports breaker states, feed "
                                   "freshness, coverage, errors and last runs. Exit code 1 when a rule was broken.")
    p.add_argument("--run-id", help="engine run (default: the latest replay/live run)")
    p.add_argument("--since", help="audit positions opened at or after this UTC time")
    p.add_argument("--until", help="audit positions opened at or before this UTC time")
    p.add_argument("--out-dir", help="directory for the report (default: reports/health)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_health)

    p = sub.add_parser("report", help="24h / weekly / watchlist reports (markdown + JSON)")
    rs = p.add_subparsers(dest="report_kind", required=True, metavar="KIND")
    q = rs.add_parser("24h", help="2 worst, 2 best, 1 median trade of the last 24 h, investigated in parallel",
                      description="Picks 5 trades closed in the 24 h before --as-of (default: the run's last bar for "
                                  "replays, now for live), writes one investigation each plus an index.")
    q.add_argument("--as-of", help="end of the 24 h window (UTC); use it for replayed data")
    q.add_argument("--run-id")
    q.add_argument("--workers", type=int, default=3, help="parallel investigations (one DB connection each)")
    q.set_defaults(func=_report_24h)
    q = rs.add_parser("weekly", help="P&L from snapshots, per-strategy stats, blocked signals, breaker trips, PNG equity curve")
    q.add_argument("--as-of", help="end of the week (UTC; default: the run's last snapshot)")
    q.add_argument("--days", type=int, default=7, help="window length in days (default 7)")
    q.add_argument("--run-id")
    q.set_defaults(func=_report_weekly)
    q = rs.add_parser("daily", help="yesterday's P&L, positions vs targets, trades, blocks, trips; sent as a short message",
                      description="Writes reports/daily/<day>_summary.md + .json, then sends the short message "
                                  "through the account's alert channels (setting alerts.urls). Exit 1 when the "
                                  "message was not delivered.")
    q.add_argument("--date", help="UTC day YYYY-MM-DD (default: yesterday)")
    q.add_argument("--account", default="default")
    q.add_argument("--no-send", action="store_true", help="write the report only")
    q.set_defaults(func=_report_daily)
    q = rs.add_parser("watchlist", help="watchlist capture vs the top 7-day gainers in the candle store")
    q.add_argument("--as-of", help="end of the 7-day window (UTC; default: the run's last bar / newest candle)")
    q.add_argument("--top", type=int, default=10, help="how many top gainers to compare (default 10)")
    q.add_argument("--rank-top", type=int, default=5,
                   help="a gainer is captured by the scores when ranked in this top at least once (default 5)")
    q.add_argument("--run-id")
    q.set_defaults(func=_report_watchlist)
