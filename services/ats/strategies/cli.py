"""`ats watchlist score|rank` (hourly watchlist scores) and `ats strategy soak start|report|list` (staged soaks).

Thin: parse, open the connection, call :mod:`ats.strategies.watchlist` / :mod:`ats.strategies.soak`, print.
"""

from __future__ import annotations

CLI_ORDER = 35

import argparse
import json

from ..errors import UsageError
from ..timeutil import parse_ts, utcnow


def _conn():
    from ..db.command import command_connection

    return command_connection("ats-strategies-cli")


def _ts(what: str):
    def parse(v: str):
        try:
            return parse_ts(v, what=what)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def _score(args) -> int:
    from .watchlist import score_range

    if args.at and (args.since or args.until):
        raise UsageError("give --at HOUR or --since/--until, not both")
    if args.until and not args.since:
        raise UsageError("--until needs --since")
    if args.at:
        since = until = args.at
    elif args.since:
        since, until = args.since, args.until or utcnow()
    else:
        since = until = utcnow()
    with _conn() as conn:
        run = score_range(conn, since, until, account_id=args.account, symbols=_csv(args.symbols),
                          strategies=_csv(args.strategies), timeframe=args.timeframe, store=True)
    print(f"watchlist scores: {len(run.hours)} hour(s) {run.hours[0]:%Y-%m-%d %H:%M} .. {run.hours[-1]:%Y-%m-%d %H:%M} "
          f"UTC, {run.written} rows, strategies {', '.join(run.strategies) or 'none (no watchlist gate on)'}"
          + (f"; stale skipped {run.stale}" if run.stale else "")
          + (f"; no candles: {', '.join(run.missing)}" if run.missing else ""))
    return 0


def _rank(args) -> int:
    from .watchlist import rank

    with _conn() as conn:
        res = rank(conn, args.at, account_id=args.account, top=args.top)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"ranked watchlist at {res['ts']} ({res['source']})")
    print(f"{'#':>3} {'symbol':<10} {'score':>7} {'total':>8}  best strategy (contributing)")
    for r in res["rows"]:
        print(f"{r['rank']:>3} {r['symbol']:<10} {r['score']:>7.2f} {r['total']:>8.2f}  {r['best_strategy']} "
              f"({r['contributing']})")
    return 0


def _soak_start(args) -> int:
    from .soak import start_soak

    with _conn() as conn:
        s = start_soak(conn, args.name, days=args.days, at=args.at, account_id=args.account,
                       schedule_prompt=not args.no_prompt)
    print(f"soak {s['soak_id']} of {s['strategy']}: watchlist on / buy off from {s['started_at']} until {s['ends_at']}")
    if s["review_prompt"]:
        print(f"review prompt {s['review_prompt']} (run_at = the end; `ats cron install` to activate, "
              "`ats cron list` shows it)")
    else:
        print(f"no review prompt scheduled (the soak ends in the past or --no-prompt): run "
              f"`ats strategy soak report {s['strategy']}`")
    return 0


def _soak_report(args) -> int:
    from .soak import soak_report

    with _conn() as conn:
        res = soak_report(conn, args.name, account_id=args.account, run_id=args.run_id, soak_id=args.soak_id,
                          until=args.until)
    s = res["summary"]
    if args.json:
        print(json.dumps({k: res[k] for k in ("soak", "run_id", "window", "summary", "paths")}, indent=2))
        return 0
    wr = "n/a" if s["win_rate"] is None else f"{s['win_rate']:.1%}"
    print(f"soak report {args.name}: {s['blocked']} blocked entries, {s['played']} played, {s['closed']} closed, "
          f"win rate {wr}, would-be P&L {s['pnl_usd']:+.2f} USD (net of fees; {s['overlapping']} overlapping)")
    for p in res["paths"]:
        print(p)
    return 0


def _soak_list(args) -> int:
    from .soak import list_soaks

    with _conn() as conn:
        rows = list_soaks(conn, account_id=args.account, strategy=args.name)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no soaks recorded")
    for r in rows if not args.json else []:
        print(f"{r['soak_id']:>4} {r['strategy']:<24} {r['started_at']} .. {r['ends_at']} ({r['days']} d) "
              f"prompt {r['review_prompt'] or '-'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats watchlist` and `ats strategy`."""
    p = sub.add_parser("watchlist", help="hourly watchlist scores per strategy and the ranked watchlist",
                       description="Each strategy whose watchlist gate is on scores each watchlist symbol (0..100) "
                                   "from its prepared indicators at the last closed bar (ats.strategies.watchlist); "
                                   "rows in watchlist_scores.")
    ws = p.add_subparsers(dest="watchlist_command", required=True, metavar="SUBCOMMAND")
    q = ws.add_parser("score", help="compute and store the scores of every hour in a window",
                      description="Scores every top of the hour in [--since, --until] (or the one hour --at; "
                                  "default the current hour) in one transaction; re-scoring replaces the rows.")
    q.add_argument("--at", type=_ts("--at"), help="one hour (UTC)")
    q.add_argument("--since", type=_ts("--since"), help="first hour (UTC, rounded up)")
    q.add_argument("--until", type=_ts("--until"), help="last hour (UTC, inclusive)")
    q.add_argument("--symbols", help="comma-separated (default: the account's universe / watchlist setting)")
    q.add_argument("--strategies", help="comma-separated (default: every strategy; only watchlisted ones score)")
    q.add_argument("--timeframe", default="1h", help="candle timeframe the strategies run on (default 1h)")
    q.add_argument("--account", default=None)
    q.set_defaults(func=_score)
    q = ws.add_parser("rank", help="the ranked watchlist at an hour (best strategy score, then total)")
    q.add_argument("--at", type=_ts("--at"), help="UTC time (default: the newest scored hour)")
    q.add_argument("--top", type=int, default=10, help="rows (default 10)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--account", default=None)
    q.set_defaults(func=_rank)

    p = sub.add_parser("strategy", help="strategy lifecycle: staged soaks (watchlist on / buy off, then review)",
                       description="Staged soaks (ats.strategies.soak).")
    ss = p.add_subparsers(dest="strategy_command", required=True, metavar="SUBCOMMAND")
    sp = ss.add_parser("soak", help="start / report / list staged soaks")
    sk = sp.add_subparsers(dest="soak_command", required=True, metavar="SUBCOMMAND")
    q = sk.add_parser("start", help="watchlist on / buy off for N days (effective-dated) + a one-shot review prompt",
                      description="Writes the gates effective from --at (default now), records the soak in "
                                  "strategy_soaks and writes .claude-cron/prompts/soak-<name>.md (run_at = the end; "
                                  "activate with `ats cron install`). One transaction.")
    q.add_argument("name")
    q.add_argument("--days", type=int, default=14, help="length in days (default 14)")
    q.add_argument("--at", type=_ts("--at"), help="start, UTC (default now; a past time back-dates the gates)")
    q.add_argument("--no-prompt", action="store_true", help="do not schedule the review prompt")
    q.add_argument("--account", default=None)
    q.set_defaults(func=_soak_start)
    q = sk.add_parser("report", help="the entries the buy gate blocked in the soak, played forward (would-be P&L)",
                      description="Read-only: blocked_signals (gate buy_gate) of the strategy in the soak window, "
                                  "each simulated with the engine's paper broker and exit logic; writes "
                                  "reports/soaks/<date>_<name>_soak.md + .json.")
    q.add_argument("name")
    q.add_argument("--run-id", help="the run whose blocks to use (default: the one with the most)")
    q.add_argument("--soak-id", type=int, help="a soak other than the latest")
    q.add_argument("--until", type=_ts("--until"), help="cut the window here (a soak still running)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--account", default=None)
    q.set_defaults(func=_soak_report)
    q = sk.add_parser("list", help="the soaks recorded")
    q.add_argument("name", nargs="?")
    q.add_argument("--json", action="store_true")
    q.add_argument("--account", default=None)
    q.set_defaults(func=_soak_list)
