"""`ats engine ...` (replay, runs, show, seed, strategies) and `ats backtest ...` (run, list, show, compare)."""

from __future__ import annotations

CLI_ORDER = 20

import argparse
import json
from pathlib import Path

from ..errors import AtsError, UsageError


def _symbols(conn, value: str, timeframe: str, account: str = "default") -> list[str]:
    v = value.strip().lower()
    if v == "universe":  # the account's own universe (ats account create --universe), else its watchlist setting
        from ..db.config_store import setting_as_of

        row = conn.execute("SELECT universe FROM accounts WHERE account_id=%s", (account,)).fetchone()
        uni = (row or {}).get("universe") or setting_as_of(conn, "watchlist", None, default=None, account_id=account)
        if not uni:
            raise UsageError(f"account {account} has no universe (ats account create --universe FILE) and no "
                             "watchlist setting; name the symbols or use 'all'")
        return sorted(str(x).upper() for x in uni)
    if v != "all":
        return [s.strip().upper() for s in value.split(",") if s.strip()]
    rows = conn.execute("SELECT DISTINCT symbol FROM candles WHERE timeframe=%s ORDER BY 1", (timeframe,)).fetchall()
    if not rows:
        raise AtsError(f"no {timeframe} candles in table candles (load some: `ats demo` or `ats data load`)")
    return [r["symbol"] for r in rows]


def _strategies(conn, value: str | None, account: str) -> list[str]:
    from ..strategies import get_strategy

    if value and value.strip().lower() != "all":
        names = [s.strip() for s in value.split(",") if s.strip()]
        for n in names:
            get_strategy(n)
        return names
    rows = conn.execute("SELECT strategy_name FROM strategy_configurations WHERE account_id=%s ORDER BY 1",
                        (account,)).fetchall()
    if not rows:
        raise AtsError(f"no strategy configurations for account {account!r} (run `ats engine seed`)")
    return [r["strategy_name"] for r in rows]


def _window(conn, symbols, timeframe, start, end):
    if start and end:
        return start, end
    row = conn.execute("SELECT min(open_time) AS lo, max(open_time) AS hi FROM candles WHERE timeframe=%s AND "
                       "symbol = ANY(%s)", (timeframe, symbols)).fetchone()
    if row["lo"] is None:
        raise AtsError(f"no {timeframe} candles for {', '.join(symbols)} in table candles")
    from ..timeutil import timeframe_delta

    return start or row["lo"], end or (row["hi"] + timeframe_delta(timeframe))


def _spec(args, mode: str):
    from ..db import connect
    from .runs import make_spec

    with connect() as conn:
        syms = _symbols(conn, args.symbols, args.timeframe, args.account)
        strats = _strategies(conn, args.strategies, args.account)
        start, end = _window(conn, syms, args.timeframe, args.start, args.end)
    tag = args.tag or ""
    if getattr(args, "consensus", "off") != "off":  # a gated run is another run (its own id)
        tag = f"{tag}|consensus={args.consensus}" if tag else f"consensus={args.consensus}"
    return make_spec(mode, strategies=strats, symbols=syms, timeframe=args.timeframe, start=start, end=end,
                     account_id=args.account, tag=tag,
                     starting_cash=args.starting_cash)


def _print(summary: dict, args, title: str) -> None:
    from .summary import format_summary

    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary, title=title))


def _replay(args) -> int:
    from .replay import run_replay

    spec = _spec(args, "replay")
    res = run_replay(spec, progress=not args.no_progress, commit_every=args.commit_every,
                     max_steps=args.max_steps, consensus=args.consensus)
    state = {"new": "completed", "resume": "resumed and completed", "completed": "already completed (reused)"}[res["state"]]
    if res["status"] == "running":
        state = f"stopped after --max-steps {args.max_steps} (resume with the same arguments)"
    _print(res, args, f"replay {res['run_id']}: {state}")
    return 0


def _runs(args) -> int:
    from ..db import connect

    with connect() as conn:
        rows = conn.execute(
            """SELECT run_id, mode, status, account_id, started_at, finished_at, last_bar_time, bars_processed,
                      params->>'timeframe' AS tf, params->'symbols' AS symbols, params->>'tag' AS tag
                 FROM engine_runs WHERE (%s::text IS NULL OR account_id=%s) ORDER BY started_at DESC LIMIT %s""",
            (args.only_account, args.only_account, args.limit)).fetchall()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no engine runs")
    for r in rows:
        print(f"{r['run_id']:<22} {r['mode']:<8} {r['status']:<11} {r['tf'] or '':<3} "
              f"{len(r['symbols'] or []):>2} symbols  bars {r['bars_processed']:>7}  last bar "
              f"{r['last_bar_time']:%Y-%m-%d %H:%M}" if r["last_bar_time"] else
              f"{r['run_id']:<22} {r['mode']:<8} {r['status']:<11} (no bar committed)")
    return 0


def _show(args) -> int:
    from ..db import connect
    from .metrics import run_summary

    with connect() as conn:
        row = conn.execute("SELECT run_id, status FROM engine_runs WHERE run_id=%s", (args.run_id,)).fetchone()
        if row is None:
            raise UsageError(f"unknown run id {args.run_id!r} (see `ats engine runs`)")
        s = run_summary(conn, args.run_id)
    _print(s, args, f"run {args.run_id} ({row['status']})")
    return 0


def _seed(args) -> int:
    from ..db import connect
    from ..risk.settings import seed_settings
    from ..strategies import seed_defaults

    with connect() as conn:
        a = seed_defaults(conn, account_id=args.account)
        b = seed_settings(conn, account_id=args.account)
        conn.commit()
    print(f"account {args.account}: seeded {len(a)} strategy configuration(s) {a or ''} and {len(b)} setting(s)")
    return 0


def _list_strategies(args) -> int:
    """The book of eleven (in book order); with ``--all`` the reference strategies after it, marked as such."""
    from ..strategies import BOOK, REGISTRY, SEEDED

    names = [n for n in REGISTRY if args.all or n in BOOK]
    if args.json:
        print(json.dumps({n: {"kind": s.kind, "direction": s.direction, "book": n in BOOK, "description": s.description,
                              "rules": s.rules, "defaults": s.default_params, "seeded": n in SEEDED,
                              "microstructure": list(s.micro_gates)}
                          for n in names for s in (REGISTRY[n],)}, indent=2))
        return 0
    print(f"the book: {len(BOOK)} strategies" + ("" if args.all else " (--all adds the reference strategies)"))
    for n in names:
        s = REGISTRY[n]
        tag = f"#{BOOK.index(n) + 1} {s.kind}" if n in BOOK else "reference, not in the book"
        print(f"{n} ({tag}, {s.direction}{'' if n in SEEDED else ', not seeded'}): {s.description}")
        print(f"    rules: {s.rules}")
        if s.micro_gates:
            print(f"    microstructure: {', '.join(s.micro_gates)} (blocked as microstructure:no_data without data)")
        print(f"    defaults: {json.dumps(s.default_params, sort_keys=True)}")
    return 0


def _bt_run(args) -> int:
    from .backtest import run_backtest

    spec = _spec(args, "backtest")
    res = run_backtest(spec, walk_forward=args.walk_forward, progress=not args.no_progress,
                       consensus=args.consensus)
    _print(res, args, f"backtest {res['backtest_id']} ({'reused' if res['state'] == 'reused' else 'completed'})")
    return 0


def _bt_list(args) -> int:
    from ..db import connect

    with connect() as conn:
        rows = conn.execute("""SELECT backtest_id, run_id, strategies, symbols, timeframe, start_time, end_time,
                                      walk_forward, status, summary->>'return_pct' AS ret, summary->>'trades' AS trades
                                 FROM backtest_runs ORDER BY backtest_id DESC LIMIT %s""", (args.limit,)).fetchall()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no backtests")
    for r in rows:
        print(f"{r['backtest_id']:>4} {r['run_id']:<22} {r['status']:<9} {r['timeframe']} {r['start_time']:%Y-%m-%d}.."
              f"{r['end_time']:%Y-%m-%d} {len(r['strategies'])} strategies x {len(r['symbols'])} symbols  "
              f"return {r['ret'] or 'n/a'}%  trades {r['trades'] or 0}"
              + (f"  walk-forward {r['walk_forward']}" if r["walk_forward"] else ""))
    return 0


def _bt_show(args) -> int:
    from ..db import connect

    with connect() as conn:
        r = conn.execute("SELECT * FROM backtest_runs WHERE backtest_id=%s", (args.backtest_id,)).fetchone()
    if r is None:
        raise UsageError(f"unknown backtest id {args.backtest_id}")
    _print({**(r["summary"] or {}), "backtest_id": r["backtest_id"], "run_id": r["run_id"]}, args,
           f"backtest {r['backtest_id']} ({r['status']})")
    return 0


def _bt_sweep(args) -> int:
    from .sweep import load_grid, run_sweep

    grid = load_grid(args.grid)
    res = run_sweep(grid, workers=args.workers, ray_address=args.ray, account_id=args.account,
                    progress=not args.no_progress)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0 if not res["failed"] else 1
    rate = f"{res['cells_per_s']:.3f} cells/s" if res["cells_per_s"] else "nothing to run"
    print(f"sweep {res['sweep_id']} ({grid.name}): {res['cells']} cells, ran {res['ran']}, skipped {res['skipped']} "
          f"finished earlier, failed {res['failed']}; {res['seconds']} s, {rate} on {res['executor']}")
    b = res["best"]
    if b:
        print(f"best Sharpe: {b['strategies']} {b['symbols']} params {json.dumps(b['params'])} -> "
              f"{json.dumps(b['summary'])}")
    print("cells: SELECT * FROM backtest_sweep_cells WHERE sweep_id = %d ORDER BY (summary->>'sharpe')::float8 "
          "DESC NULLS LAST;" % res["sweep_id"])
    return 0 if not res["failed"] else 1


def _bt_compare(args) -> int:
    from ..db import connect
    from .backtest import compare

    with connect() as conn:
        res = compare(conn, args.backtest_ids, args.notes)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    print(f"comparison {res['comparison_id']}:")
    for b, m in res["metric_table"].items():
        print(f"  {b:>4} {m['run_id']:<22} return {m['return_pct']}%  max DD {m['max_drawdown_pct']}%  Sharpe "
              f"{m['sharpe']}  trades {m['trades']}  win rate {m['win_rate']}"
              + (f"  OOS {m['oos_return_pct']}%" if m.get("oos_return_pct") is not None else ""))
    return 0


def _run_args(p: argparse.ArgumentParser, *, strategies_required: bool = False) -> None:
    p.add_argument("--strategies", default=None, required=strategies_required,
                   help="comma-separated strategy names or 'all' (default: every configured strategy)")
    p.add_argument("--symbols", required=True, help="comma-separated symbols (BTCUSDT,ETHUSDT), 'universe' (the account's) or 'all'")
    p.add_argument("--timeframe", default="1h", help="candle timeframe (default 1h)")
    p.add_argument("--start", default=None, help="first bar open time, ISO-8601 UTC (default: first candle)")
    p.add_argument("--end", default=None, help="end (exclusive), ISO-8601 UTC (default: after the last candle)")
    p.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    p.add_argument("--starting-cash", type=float, default=None, help="USD (default: accounts.starting_cash)")
    p.add_argument("--tag", default="", help="free text that makes a distinct run id for the same arguments")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--consensus", choices=("off", "replay", "live"), default="off",
                   help="consensus gate for strategies in consensus.strategies: off (default: skipped, no model "
                        "called), replay (decide from recorded votes), live (ask the configured models)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats engine` and `ats backtest`."""
    p = sub.add_parser("engine", help="the trading engine: replay history through the decision path, runs",
                       description="The decision path (regime -> strategies -> gates -> risk/breakers -> paper "
                                   "broker -> positions -> exits -> snapshots) over stored candles.")
    es = p.add_subparsers(dest="engine_command", required=True, metavar="COMMAND")
    q = es.add_parser("replay", help="replay stored candles through every strategy with the paper broker",
                      description="Same arguments -> same run id: an interrupted replay resumes from its checkpoint, a "
                                  "completed one is reused. Only one heavy run at a time (else 'busy').")
    _run_args(q)
    q.add_argument("--commit-every", type=int, default=200, help="decision steps per committed batch (default 200)")
    q.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    q.set_defaults(func=_replay)
    q = es.add_parser("runs", help="list engine runs")
    q.add_argument("--account", dest="only_account", default=None, help="only this account (default: every account this process may see)")
    q.add_argument("--limit", type=int, default=20, help="rows (default 20)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_runs)
    q = es.add_parser("show", help="summary of one run (from its audit rows)")
    q.add_argument("run_id", help="engine run id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_show)
    q = es.add_parser("seed", help="insert the default strategy configurations and risk settings for an account")
    q.add_argument("--account", default=None, help="account id (default: the bound account, ATS_ACCOUNT, else default)")
    q.set_defaults(func=_seed)
    q = es.add_parser("strategies", help="the book of eleven strategies: rules and default parameters",
                      description="Lists the book of eleven (long, short on linear perps at 1x, specialty) with rules, "
                                  "microstructure conditions and default parameters; --all adds the reference "
                                  "strategies (volatility_breakout, range_fade, sma_cross: backtests and sweeps only).")
    q.add_argument("--all", action="store_true", help="also list the reference strategies outside the book")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_list_strategies)

    b = sub.add_parser("backtest", help="backtests (backtest_* tables), walk-forward, comparisons")
    bs = b.add_subparsers(dest="backtest_command", required=True, metavar="COMMAND")
    q = bs.add_parser("run", help="run a backtest and print its id and summary",
                      description="Runs the engine in backtest mode over the window and records backtest_runs, "
                                  "backtest_trades, backtest_blocked_signals and backtest_equity_curve. "
                                  "--walk-forward N adds anchored walk-forward out-of-sample figures.")
    _run_args(q)
    q.add_argument("--walk-forward", type=int, default=None, metavar="N", help="anchored walk-forward folds (1-12)")
    q.set_defaults(func=_bt_run)
    q = bs.add_parser("list", help="list backtests")
    q.add_argument("--limit", type=int, default=20, help="rows (default 20)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_bt_list)
    q = bs.add_parser("show", help="summary of one backtest")
    q.add_argument("backtest_id", type=int, help="backtest id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_bt_show)
    q = bs.add_parser("sweep", help="a grid of backtests (strategies x params x symbols), local pool or Ray",
                      description="Each cell of the grid file (see ats.engine.sweep) is one backtest through the "
                                  "engine. The same grid is the same sweep: a re-run skips finished cells. "
                                  "--ray auto starts a local Ray cluster; --ray ADDRESS joins one (the workers "
                                  "must reach this database's URL).")
    q.add_argument("--grid", required=True, type=Path, help="grid TOML file")
    q.add_argument("--workers", type=int, default=None, help="parallel cells (default: CPU count)")
    q.add_argument("--ray", default=None, metavar="ADDRESS", help="run on Ray: auto | ray://host:10001 | host:6379")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_bt_sweep)
    q = bs.add_parser("compare", help="compare backtests side by side (stored in backtest_comparisons)")
    q.add_argument("backtest_ids", type=int, nargs="+", help="two or more backtest ids")
    q.add_argument("--notes", default=None, help="free-text notes stored with the comparison")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_bt_compare)
