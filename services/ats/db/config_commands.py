"""`ats config ...`: strategy configurations (three gates + params) and system settings, current or as of T.

Registered by :mod:`ats.db.cli` (the config store is part of the database package).
"""

from __future__ import annotations

import argparse
import json

from . import config_store as cs
from .command import command_connection
from ..errors import UsageError
from ..timeutil import parse_ts


def _onoff(v: str) -> bool:
    if v.lower() in ("on", "true", "1", "yes"):
        return True
    if v.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {v!r}")


def _parse_params(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UsageError(f"--param {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _strategy_list(args) -> int:
    with command_connection("ats-config-cli") as conn:
        rows = cs.current_strategies(conn, account_id=args.account)
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    for r in rows:
        print(f"{r['strategy_name']:<24} watchlist={'on' if r['watchlist_enabled'] else 'off':<3} "
              f"buy={'on' if r['buy_enabled'] else 'off':<3} sell={'on' if r['sell_enabled'] else 'off':<3} "
              f"since {r['effective_from']:%Y-%m-%d %H:%M}")
    if not rows:
        print("no strategy configurations (run `ats demo` or `ats config strategy set NAME ...`)")
    return 0


def _strategy_show(args) -> int:
    with command_connection("ats-config-cli") as conn:
        if args.as_of:
            row = cs.strategy_as_of(conn, args.name, parse_ts(args.as_of, what="--as-of"), account_id=args.account)
        else:
            row = conn.execute("SELECT * FROM strategy_configurations WHERE account_id=%s AND strategy_name=%s",
                               (args.account, args.name)).fetchone()
    if row is None:
        print(f"no configuration for strategy {args.name!r}" + (f" as of {args.as_of}" if args.as_of else ""))
        return 1
    print(json.dumps(row, default=str, indent=2))
    return 0


def _strategy_set(args) -> int:
    gates = {k: v for k, v in (("watchlist_enabled", args.watchlist), ("buy_enabled", args.buy),
                               ("sell_enabled", args.sell)) if v is not None}
    eff = parse_ts(args.effective_from, what="--effective-from") if args.effective_from else None
    with command_connection("ats-config-cli") as conn:
        row = cs.upsert_strategy(conn, args.name, account_id=args.account, params=_parse_params(args.param),
                                 effective_from=eff, **gates)
        conn.commit()
    print(json.dumps(row, default=str, indent=2))
    return 0


def _setting_get(args) -> int:
    with command_connection("ats-config-cli") as conn:
        val = cs.setting_as_of(conn, args.key, parse_ts(args.as_of, what="--as-of") if args.as_of else None,
                               account_id=args.account)
    print(json.dumps(val))
    return 0


def _setting_set(args) -> int:
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError:
        value = args.value
    eff = parse_ts(args.effective_from, what="--effective-from") if args.effective_from else None
    with command_connection("ats-config-cli") as conn:
        cs.set_setting(conn, args.key, value, account_id=args.account, effective_from=eff)
        conn.commit()
    print(f"{args.key} = {json.dumps(value)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats config` (strategy / setting) to the top-level parser."""
    p = sub.add_parser("config", help="strategy configurations and system settings (effective-dated)")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="KIND")
    st = csub.add_parser("strategy", help="strategy configurations: list, show [--as-of], set")
    ssub = st.add_subparsers(dest="strategy_command", required=True, metavar="COMMAND")
    q = ssub.add_parser("list", help="current configuration of every strategy")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_strategy_list)
    q = ssub.add_parser("show", help="one strategy's configuration, current or as of a time")
    q.add_argument("name")
    q.add_argument("--as-of", help="UTC time (ISO-8601): the configuration in force then")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_strategy_show)
    q = ssub.add_parser("set", help="change gates/params; history is written by trigger")
    q.add_argument("name")
    q.add_argument("--watchlist", type=_onoff, metavar="on|off")
    q.add_argument("--buy", type=_onoff, metavar="on|off")
    q.add_argument("--sell", type=_onoff, metavar="on|off")
    q.add_argument("--param", action="append", metavar="KEY=VALUE", help="JSON value; repeatable")
    q.add_argument("--effective-from", help="UTC time the change takes effect (default: now)")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_strategy_set)
    se = csub.add_parser("setting", help="system settings: get [--as-of], set")
    esub = se.add_subparsers(dest="setting_command", required=True, metavar="COMMAND")
    q = esub.add_parser("get", help="a setting's value, current or as of a time")
    q.add_argument("key")
    q.add_argument("--as-of")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_setting_get)
    q = esub.add_parser("set", help="set a setting (JSON value)")
    q.add_argument("key")
    q.add_argument("value")
    q.add_argument("--effective-from")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_setting_set)
