"""`ats data ...`: load, resample, coverage, anomalies, backfill (candles and, with ``--kind``, microstructure), micro."""

from __future__ import annotations

CLI_ORDER = 20

import argparse
import json
import sys
import time

from ..errors import AtsError, UsageError
from ..timeutil import TIMEFRAME_SECONDS, parse_ts


def _conn():
    from ..db.command import command_connection

    return command_connection("ats-data-cli")


def _load(args) -> int:
    from .loaders import expand_paths, load_file

    files = expand_paths(args.paths)
    if not files:
        raise UsageError("no .json/.csv files found in the given paths")
    total_in = total_new = 0
    with _conn() as conn:
        for f in files:
            r = load_file(conn, f, symbol=args.symbol, timeframe=args.timeframe, source=args.source)
            total_in += r.rows_in
            total_new += r.rows_inserted
            if args.json:
                print(json.dumps(r.__dict__))
            else:
                print(f"{r.path}: {r.symbol} {r.timeframe} source={r.source} rows={r.rows_in} new={r.rows_inserted}"
                      + (f" revised={r.rows_updated}" if r.rows_updated else ""))
    if not args.json:
        print(f"loaded {len(files)} file(s): {total_in} rows read, {total_new} new candles")
    return 0


def _resample(args) -> int:
    from .resample import RESAMPLE_FROM, resample, resample_all

    with _conn() as conn:
        if args.symbol and args.timeframe:
            results = [resample(conn, args.symbol, args.timeframe, args.start, args.end)]
        else:
            results = resample_all(conn, symbols=[args.symbol] if args.symbol else None,
                                   timeframes=[args.timeframe] if args.timeframe else None)
    if not results:
        print("nothing to resample (no stored " + "/".join(sorted(set(RESAMPLE_FROM.values()))) + " candles)")
    for r in results:
        print(f"{r.symbol} {r.source_timeframe}->{r.timeframe}: {r.buckets} candles ({r.incomplete} incomplete), "
              f"{r.inserted} new, {r.updated} updated")
    return 0


def _coverage(args) -> int:
    from .coverage import coverage, format_table
    from .microstructure import coverage as micro_coverage
    from .microstructure import format_coverage

    with _conn() as conn:
        micro = micro_coverage(conn, symbols=[args.symbol] if args.symbol else None)
        if args.micro:
            rows = []
        else:
            rows = coverage(conn, args.as_of, symbols=[args.symbol] if args.symbol else None,
                            timeframes=[args.timeframe] if args.timeframe else None)
    if args.json:
        print(json.dumps(micro if args.micro else rows, indent=2))
        return 0
    if not args.micro:
        print(format_table(rows) if rows else
              "no candles stored (load some with `ats data load PATH` or `ats data backfill`)")
    if micro:
        print(("\n" if not args.micro else "") + "microstructure:\n" + format_coverage(micro))
    elif args.micro:
        print("no microstructure data stored (`ats data backfill --kind oi|funding|ls_ratio|taker` or "
              "`ats data micro load`)")
    return 0


def _micro_load(args) -> int:
    from .loaders import expand_paths
    from .microstructure import load_file

    files = expand_paths(args.paths)
    if not files:
        raise UsageError("no .json files found in the given paths")
    total = new = 0
    with _conn() as conn:
        for f in files:
            r = load_file(conn, args.kind, f, symbol=args.symbol, period=args.period, timeframe=args.timeframe,
                          source=args.source)
            total, new = total + r.rows, new + r.inserted
            if args.json:
                print(json.dumps({"path": str(f), **r.__dict__}))
            else:
                print(f"{f}: {r.kind} {r.symbol} rows={r.rows} new={r.inserted}")
    if not args.json:
        print(f"loaded {len(files)} file(s): {total} rows read, {new} new")
    return 0


def _micro_backfill(args) -> int:
    from .backfill import alpaca_symbol, watchlist
    from .microstructure import KINDS, backfill_many, session_from_env

    if args.all or args.timeframe and args.kind != "taker" or args.category != "spot" or args.source:
        raise UsageError("--kind takes --symbols/--since/--until/--period (and --timeframe for taker); "
                         "--all, --source and --category are for candles")
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    with _conn() as conn:
        if args.symbols:
            syms = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
        elif args.symbol:
            syms = [args.symbol.upper()]
        else:  # the watchlist's crypto symbols (linear perpetuals share the spot name on Bybit)
            syms = [e["symbol"].replace("/", "") for e in watchlist(conn) if alpaca_symbol(e["symbol"])[1]]
        if not syms:
            raise UsageError("no symbols: give --symbols BTCUSDT,ETHUSDT (the watchlist has no crypto symbol)")
        to_ms = lambda d: None if d is None else int(d.timestamp() * 1000)  # noqa: E731
        while True:
            loads, errors = backfill_many(conn, session_from_env(), kinds, syms, since_ms=to_ms(args.start),
                                          until_ms=to_ms(args.end), period=args.period,
                                          timeframe=args.timeframe or "1h", retries=args.retries)
            for r in loads:
                print(f"{r.kind} {r.symbol}: {r.rows} fetched, {r.inserted} new", flush=True)
            for e in errors:
                print(f"ats: error: {e}", file=sys.stderr, flush=True)
            if not args.loop:
                break
            time.sleep(args.interval)
    return 1 if errors else 0


def _anomalies(args) -> int:
    from .anomalies import detect_anomalies, list_anomalies, to_json

    with _conn() as conn:
        new = []
        if args.scan:
            new = detect_anomalies(conn, symbols=[args.symbol] if args.symbol else None, as_of=args.as_of)
        rows = list_anomalies(conn, symbol=args.symbol, kind=args.kind, timeframe=args.timeframe,
                              since=args.since, until=args.until, limit=args.limit)
    if args.json:
        keys = ("symbol", "timeframe", "open_time", "kind", "detail", "severity")
        print(json.dumps([{k: to_json(a)[k] for k in keys} for a in rows], indent=2))
        return 0
    if args.scan:
        print(f"scan: {len(new)} new anomal{'y' if len(new) == 1 else 'ies'}")
    if not rows:
        print("no feed anomalies" + ("" if args.scan else " stored (run with --scan to detect)"))
    for a in rows:
        j = to_json(a)
        d = a["detail"]
        brief = {"gap": lambda: f"{d.get('bars')} missing bar(s)",
                 "stale": lambda: f"{d.get('behind')} bars behind (last {d.get('last')})",
                 "spike": lambda: f"return {d.get('return', 0):+.2%} = {d.get('z')} sigma ({d.get('basis')})",
                 "split": lambda: f"{d.get('clean_ratio')} (ratio {d.get('ratio')}; {d.get('reference')} moved "
                                  f"{(d.get('reference_move') or 0):+.2%})",
                 "bad_tick": lambda: ", ".join(f"{f} {d['values'][f]} ({d['move'][f]:+.2%})"
                                               for f in d.get("fields", [])) + " then reverted",
                 "cross_source": lambda: f"{', '.join(d.get('sources', {}))} differ on {d.get('field')} by "
                                         f"{d.get('rel_diff', 0):.2%}"}[a["kind"]]()
        print(f"{j['open_time']}  {a['symbol']:<10} {a['timeframe']:<4} {a['kind']:<12} {brief}")
    return 0


def _backfill(args) -> int:
    from .backfill import backfill, backfill_watchlist

    if args.kind:
        return _micro_backfill(args)
    if args.symbols or args.period != "1h":
        raise UsageError("--symbols and --period need --kind (microstructure); candles take --symbol")
    if not args.all and not args.symbol:
        raise UsageError("give --symbol SYMBOL (with --timeframe) or --all for the watchlist")
    if args.all and args.symbol:
        raise UsageError("--all and --symbol are mutually exclusive")
    if args.loop and (args.start or args.end):
        raise UsageError("--loop is incremental: do not combine it with --start/--end")
    failures = 0
    while True:
        with _conn() as conn:
            if args.all:
                results, errors = backfill_watchlist(conn, timeframe=args.timeframe, source=args.source,
                                                     start=args.start, end=args.end, category=args.category,
                                                     retries=args.retries)
            else:
                try:
                    results = [backfill(conn, args.symbol, args.timeframe or "1h", args.start, args.end,
                                        source=args.source or "bybit", category=args.category,
                                        retries=args.retries)]
                    errors = []
                except AtsError as exc:
                    if not args.loop:
                        raise
                    results, errors = [], [str(exc)]
        for r in results:
            print(r.line(), flush=True)
        for e in errors:
            print(f"ats: error: {e}", file=sys.stderr, flush=True)
        failures = len(errors)
        if not args.loop:
            break
        time.sleep(args.interval)
    return 1 if failures else 0


def _ts_arg(what: str):
    def parse(v: str):
        try:
            return parse_ts(v, what=what)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats data` and its subcommands."""
    p = sub.add_parser("data", help="market data: load, resample, coverage, anomalies, backfill",
                       description="Candles (OHLCV, UTC, NUMERIC prices) from files, Bybit and Alpaca.")
    ds = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    tfs = list(TIMEFRAME_SECONDS)

    q = ds.add_parser("load", help="load candle files (freqtrade JSON, CSV, Bybit/Alpaca payload JSON)",
                      description="Load files or directories (recursively *.json, *.csv). Format from content; "
                                  "symbol/timeframe from names like BTC_USDT-1h.json or SPY_1d.csv. Each file is "
                                  "one transaction; a bad file is refused naming file and row.")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q.add_argument("--symbol", help="symbol for every file (default: from the file name)")
    q.add_argument("--timeframe", choices=tfs, help="timeframe for every file (default: from the file name)")
    q.add_argument("--source", help="candles.source (default: exchange directory name, bybit, alpaca, freqtrade or csv)")
    q.add_argument("--json", action="store_true", help="one JSON object per file")
    q.set_defaults(func=_load)

    q = ds.add_parser("resample", help="build 15m from 5m and 4h/1d/1w from 1h (incomplete intervals flagged)")
    q.add_argument("--symbol", help="one symbol (default: every symbol with source candles)")
    q.add_argument("--timeframe", choices=["15m", "4h", "1d", "1w"], help="one target timeframe (default: all)")
    q.add_argument("--start", type=_ts_arg("--start"), help="with --symbol and --timeframe: window start (UTC)")
    q.add_argument("--end", type=_ts_arg("--end"), help="with --symbol and --timeframe: window end (UTC)")
    q.set_defaults(func=_resample)

    q = ds.add_parser("coverage", help="coverage grid: expected vs present bars, gaps, freshness, status",
                      description="Per symbol x timeframe: first/last candle, expected vs present bars, gaps, "
                                  "freshness, status. red: completeness < 98% or >= 5 bars behind; amber: "
                                  "< 99.5% or >= 2 bars behind; else green. Equity daily bars use NYSE trading "
                                  "days (holidays are not gaps).")
    q.add_argument("--json", action="store_true", help="JSON list (keys symbol, timeframe, first, last, expected, "
                                                       "present, gaps, status, freshness, ...)")
    q.add_argument("--micro", action="store_true", help="only the microstructure rows (kind, symbol, period, first, "
                                                        "last, rows, expected, missing); the text grid always "
                                                        "appends them")
    q.add_argument("--as-of", dest="as_of", type=_ts_arg("--as-of"), help="judge as of this UTC time (default now)")
    q.add_argument("--symbol", help="only this symbol")
    q.add_argument("--timeframe", choices=tfs, help="only this timeframe")
    q.set_defaults(func=_coverage)

    q = ds.add_parser("anomalies", help="feed anomalies: gaps, stale feeds, spikes, suspected splits, cross-source",
                      description="List stored feed anomalies; --scan detects new ones first (each new one is "
                                  "also a system_events row).")
    q.add_argument("--symbol", help="only this symbol")
    q.add_argument("--kind", choices=["gap", "stale", "spike", "split", "bad_tick", "cross_source"])
    q.add_argument("--timeframe", choices=tfs)
    q.add_argument("--since", type=_ts_arg("--since"), help="open_time >= this UTC time")
    q.add_argument("--until", type=_ts_arg("--until"), help="open_time < this UTC time")
    q.add_argument("--limit", type=int, help="at most this many rows")
    q.add_argument("--scan", action="store_true", help="detect and store new anomalies before listing")
    q.add_argument("--as-of", dest="as_of", type=_ts_arg("--as-of"), help="with --scan: judge staleness as of (default now)")
    q.add_argument("--json", action="store_true", help="JSON list (keys symbol, timeframe, open_time, kind, detail)")
    q.set_defaults(func=_anomalies)

    q = ds.add_parser("backfill", help="fetch candles (Bybit / Alpaca) or, with --kind, Bybit microstructure data",
                      description="Incremental: starts after the last stored candle unless --start. Pages are "
                                  "fetched first and written in one transaction. Alpaca stock bars need "
                                  "ALPACA_API_KEY/ALPACA_SECRET_KEY in the environment. With --kind "
                                  "oi|funding|ls_ratio|taker|all: Bybit linear perpetuals through pybit (endpoint "
                                  "ATS_BYBIT_BASE_URL when set), --symbols (default: the watchlist's crypto symbols), "
                                  "--since (default: after the newest stored row, else 7 days back); one transaction "
                                  "per kind and symbol. Taker volume: the newest 1,000 public trades only.")
    q.add_argument("--symbol", help="e.g. BTCUSDT (bybit) or SPY / BTC/USD (alpaca)")
    q.add_argument("--timeframe", choices=tfs, help="default 1h (watchlist: 1h crypto, 1d equities)")
    q.add_argument("--source", choices=["bybit", "alpaca"], help="default bybit (watchlist: by symbol)")
    q.add_argument("--category", default="spot", choices=["spot", "linear", "inverse"], help="Bybit category")
    q.add_argument("--start", "--since", dest="start", type=_ts_arg("--start"),
                   help="window start, UTC (default: after the last stored candle / row)")
    q.add_argument("--end", "--until", dest="end", type=_ts_arg("--end"), help="window end, UTC (default: now)")
    q.add_argument("--kind", choices=["oi", "funding", "ls_ratio", "taker", "all"],
                   help="microstructure instead of candles (all = the four kinds)")
    q.add_argument("--symbols", help="with --kind: comma-separated linear symbols, e.g. BTCUSDT,ETHUSDT")
    q.add_argument("--period", default="1h", choices=["5min", "15min", "30min", "1h", "4h", "1d"],
                   help="with --kind oi / ls_ratio: Bybit intervalTime / period (default 1h)")
    q.add_argument("--all", action="store_true", help="every symbol of the 'watchlist' system setting")
    q.add_argument("--loop", action="store_true", help="repeat forever (incremental), sleeping --interval")
    q.add_argument("--interval", type=float, default=300.0, help="seconds between --loop rounds (default 300)")
    q.add_argument("--retries", type=int, default=4, help="retries per request on network errors (default 4)")
    q.set_defaults(func=_backfill)

    q = ds.add_parser("micro", help="microstructure payload files: load (open interest, funding, long/short, taker)",
                      description="Microstructure data (ats.market_data.microstructure) from files saved as pybit "
                                  "returns them.")
    ms_sub = q.add_subparsers(dest="micro_command", required=True, metavar="SUBCOMMAND")
    q = ms_sub.add_parser("load", help="load pybit-shaped JSON payload files of one kind",
                          description="Each FILE holds one pybit response (the whole {retCode, result} or its "
                                      "result) of get_open_interest (oi), get_funding_rate_history (funding), "
                                      "get_long_short_ratio (ls_ratio) or get_public_trade_history (taker). Each file "
                                      "is one transaction; a bad file is refused naming file and row, nothing of it "
                                      "written. Reloading is idempotent.")
    q.add_argument("paths", nargs="+", metavar="FILE")
    q.add_argument("--kind", required=True, choices=["oi", "funding", "ls_ratio", "taker"])
    q.add_argument("--symbol", help="symbol when the payload does not name it")
    q.add_argument("--period", choices=["5min", "15min", "30min", "1h", "4h", "1d"],
                   help="oi interval / ls_ratio period when the payload does not say (default 1h)")
    q.add_argument("--timeframe", default="1h", choices=["5m", "15m", "1h", "4h", "1d"],
                   help="taker: bucket size (default 1h)")
    q.add_argument("--source", default="bybit", help="source column (default bybit)")
    q.add_argument("--json", action="store_true", help="one JSON object per file")
    q.set_defaults(func=_micro_load)
