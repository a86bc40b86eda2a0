"""The `ats` command line.

Every top-level command lives in its package's ``cli.py`` (discovered: ``ats.<package>.cli``, plus ``ats.demo``).
A package whose commands are a separate job keeps them in a module its ``cli.py`` registers (``ats config`` in
``ats.db.config_commands``, ``ats mcp`` in ``ats.ops.mcp_commands``).

=================  ==========================  ====================================================
command            module                      what it does
=================  ==========================  ====================================================
``demo``           ``ats.demo``                load the shared data, replay, print the figures
``db``             ``ats.db.cli``              database: up, status, url, migrate, down, backup, restore
``config``         ``ats.db.config_commands``  strategy configurations and system settings (as of T)
``account``        ``ats.accounts.cli``        accounts and their scope
``data``           ``ats.market_data.cli``     load, micro, resample, coverage, anomalies, backfill
``engine``         ``ats.engine.cli``          replay, runs, show, seed, strategies
``backtest``       ``ats.engine.cli``          backtest run, list, show, compare
``pnl``            ``ats.portfolio.cli``       P&L windows from portfolio_hourly_snapshots
``watchlist``      ``ats.strategies.cli``      hourly watchlist scores (score) and the ranked watchlist (rank)
``strategy``       ``ats.strategies.cli``      staged soaks: soak start / report / list
``risk``           ``ats.risk.cli``            breakers, stop, resume, settings
``live``           ``ats.live.cli``            the live loop (run, status): the engine on the venue's clock
``broker``         ``ats.execution.cli``       the read-only go-live preflight
``venue-sim``      ``ats.execution.cli``       local Bybit / Alpaca simulators for offline rehearsal
``dashboard``      ``ats.api.cli``             the FastAPI dashboard (English / 中文)
``investigate``    ``ats.forensics.cli``       one symbol's lifecycle report (markdown + JSON)
``health-check``   ``ats.forensics.cli``       post-trade adherence audit (exit 1 on a broken rule)
``report``         ``ats.forensics.cli``       24h, weekly, watchlist, daily reports
``kb``             ``ats.knowledge.cli``       knowledge base: scan, update [--agent], status
``plan``           ``ats.knowledge.cli``       save / list approved plans in plans/
``docs``           ``ats.knowledge.cli``       hybrid docs search: index, search, get, status
``lesson``         ``ats.knowledge.cli``       lessons learned LL-NNN: add, list, show, mirror
``mcp``            ``ats.ops.mcp_commands``    serve the MCP servers of mcp_servers/, list their tools
``run``            ``ats.ops.cli``             one headless task through Claude Code (or its core)
``cron``           ``ats.ops.cli``             render / install / list the timers
``alerts``         ``ats.ops.cli``             alert dispatch, test message, delivery status
``security``       ``ats.ops.cli``             security audit (secrets, grants, settings)
``git``            ``ats.ops.cli``             commit explicit paths with the day's plan
``session``        ``ats.ops.cli``             close an interactive session
``hook``           ``ats.ops.cli``             Claude Code hooks (PreToolUse path rules)
``gh``             ``ats.ops.cli``             GitHub issues over the gh CLI
``archive``        ``ats.ops.cli``             git bundle + artifacts tarball, rotated
``monitor``        ``ats.ops.cli``             live monitor daemon: start, status, stop --save-report, poll
=================  ==========================  ====================================================

A new package adds its commands with a ``cli.py`` exposing ``register(subparsers)`` (and a row here); each parser
sets ``func(args) -> int``. Optional module attribute ``CLI_ORDER`` (int, default 50) sorts them in ``--help``.
Keep heavy imports (torch, matplotlib, mcp) inside the command handlers, not at module top level.
Exit codes: 0 success, 1 failure (one clear line on stderr; traceback only with ``--debug``), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from .errors import AtsError, BusyError, UsageError

def command_modules() -> list[str]:
    """Names of the modules that add `ats` subcommands, in help order.

    Returns
    -------
    list of str
        ``ats.demo`` and every ``ats.<package>.cli`` (one level deep) that defines ``register``, sorted by
        ``CLI_ORDER`` then name.
    """
    import pkgutil

    import ats

    names = ["ats.demo"]
    for info in pkgutil.iter_modules(ats.__path__, "ats."):
        if info.ispkg and importlib.util.find_spec(f"{info.name}.cli") is not None:
            names.append(f"{info.name}.cli")
    mods = [importlib.import_module(n) for n in names]
    mods = [m for m in mods if hasattr(m, "register")]
    mods.sort(key=lambda m: (getattr(m, "CLI_ORDER", 50), m.__name__))
    return [m.__name__ for m in mods]


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree (used by main() and by tests that check --help everywhere)."""
    parser = argparse.ArgumentParser(prog="ats", description="ATS: automated trading system operated with Claude Code.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    parser.add_argument("--account", dest="bound_account", default=None, metavar="ID",
                        help="bind this process to account ID (same as ATS_ACCOUNT): its rows, files and locks only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def bind_from_args(args: argparse.Namespace) -> str:
    """Bind the process to one account at start (``ats --account ID``, a subcommand's ``--account ID`` or
    ``ATS_ACCOUNT``) and fill a subcommand's unset ``--account`` with it; returns the bound account.

    Raises
    ------
    UsageError
        Two different accounts asked for (``ATS_ACCOUNT`` vs ``--account``, or the global vs the subcommand flag):
        a process is bound to one account, never two.
    """
    from .accounts.scope import bind

    env = (os.environ.get("ATS_ACCOUNT") or "").strip() or None
    asked = [a for a in (getattr(args, "bound_account", None), getattr(args, "account", None)) if a]
    for a in [*asked, env]:
        if a and any(b != a for b in [*asked, env] if b):
            names = sorted({x for x in [*asked, env] if x})
            raise UsageError(f"one process, one account: asked for {', '.join(names)} (ATS_ACCOUNT / --account)")
    acct = bind(asked[0] if asked else env)
    if hasattr(args, "account") and args.account is None:
        args.account = acct
    return acct


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ats` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        bind_from_args(args)
        rc = args.func(args)
        return int(rc or 0)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"ats: usage error: {exc}", file=sys.stderr)
        return 2
    except BusyError as exc:
        if args.debug:
            raise
        print(f"ats: busy: {exc}", file=sys.stderr)
        return 1
    except AtsError as exc:
        if args.debug:
            raise
        print(f"ats: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ats: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, not a traceback
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"ats: error: {type(exc).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
