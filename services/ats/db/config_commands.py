"""`ats config ...`: strategy configurations (three gates + params) and system settings, current or as of T.

Point-in-time reads are bitemporal (:mod:`ats.db.config_store`): ``--as-of T`` is valid time (what was in force
at T, by ``valid_from``, with every change recorded so far, back-dated ones included); ``--as-known-at R`` is
transaction time (only the changes recorded by R: "what did the system believe at R"). Both together: what was in
force at T as known at R; ``--as-known-at`` alone: what was in force at R as known at R.

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


def _when(args) -> tuple:
    """(as_of, as_known_at) of a command's ``--as-of`` / ``--as-known-at`` (None when absent)."""
    as_of = parse_ts(args.as_of, what="--as-of") if getattr(args, "as_of", None) else None
    known = parse_ts(args.as_known_at, what="--as-known-at") if getattr(args, "as_known_at", None) else None
    return as_of, known


def _point_in_time(args) -> str:
    as_of, known = _when(args)
    return (f" as of {as_of.isoformat()}" if as_of else "") + (f" as known at {known.isoformat()}" if known else "")


def _strategies_at(conn, account: str, as_of, known) -> list[dict]:
    """Every strategy of ``account`` that ever had a history row, as in force at ``as_of`` known at ``known``."""
    names = [r["strategy_name"] for r in conn.execute(
        "SELECT DISTINCT strategy_name FROM strategy_configurations_history WHERE account_id=%s ORDER BY 1",
        (account,))]
    at = as_of or known
    rows = [cs.strategy_as_of(conn, n, at, account_id=account, as_known_at=known) for n in names]
    return [dict(r, effective_from=r["valid_from"]) for r in rows if r is not None]


def _strategy_list(args) -> int:
    as_of, known = _when(args)
    with command_connection("ats-config-cli") as conn:
        rows = (_strategies_at(conn, args.account, as_of, known) if (as_of or known)
                else cs.current_strategies(conn, account_id=args.account))
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
    as_of, known = _when(args)
    with command_connection("ats-config-cli") as conn:
        if as_of or known:
            row = cs.strategy_as_of(conn, args.name, as_of or known, account_id=args.account, as_known_at=known)
        else:
            row = conn.execute("SELECT * FROM strategy_configurations WHERE account_id=%s AND strategy_name=%s",
                               (args.account, args.name)).fetchone()
    if row is None:
        print(f"no configuration for strategy {args.name!r}" + _point_in_time(args))
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
    as_of, known = _when(args)
    with command_connection("ats-config-cli") as conn:
        val = cs.setting_as_of(conn, args.key, as_of, account_id=args.account, as_known_at=known)
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


def _pit_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--as-of", metavar="T", help="UTC time (ISO-8601): what was in force at T (valid time, every "
                                                "change recorded so far, back-dated ones included)")
    q.add_argument("--as-known-at", metavar="R", help="UTC time (ISO-8601): only changes recorded by R, i.e. what "
                                                      "the system believed at R (with --as-of: in force at T as "
                                                      "known at R)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats config` (strategy / setting) to the top-level parser."""
    p = sub.add_parser("config", help="strategy configurations and system settings (effective-dated)")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="KIND")
    st = csub.add_parser("strategy", help="strategy configurations: list, show [--as-of] [--as-known-at], set")
    ssub = st.add_subparsers(dest="strategy_command", required=True, metavar="COMMAND")
    q = ssub.add_parser("list", help="configuration of every strategy, current or point-in-time")
    _pit_args(q)
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_strategy_list)
    q = ssub.add_parser("show", help="one strategy's configuration, current or as of a time")
    q.add_argument("name")
    _pit_args(q)
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
    se = csub.add_parser("setting", help="system settings: get [--as-of] [--as-known-at], set")
    esub = se.add_subparsers(dest="setting_command", required=True, metavar="COMMAND")
    q = esub.add_parser("get", help="a setting's value, current or as of a time")
    q.add_argument("key")
    _pit_args(q)
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_setting_get)
    q = esub.add_parser("set", help="set a setting (JSON value)")
    q.add_argument("key")
    q.add_argument("value")
    q.add_argument("--effective-from")
    q.add_argument("--account", default=None, help="account id (default: the bound account)")
    q.set_defaults(func=_setting_set)
