"""The `ats` command line.

Every command module exposes ``register(subparsers)`` and sets ``func(args) -> int`` on its parsers.
Exit codes: 0 success, 1 failure (one clear line on stderr; traceback only with ``--debug``), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import AtsError, BusyError, UsageError

# Command modules are discovered: every module `ats.<pkg>.cli` or `ats.<name>_cli` (plus ats.demo) that defines
# register(subparsers). Optional module attribute CLI_ORDER (int, default 50) sorts them in --help.
# Keep heavy imports (torch, matplotlib, mcp) inside the command handlers, not at module top level.


def command_modules() -> list[str]:
    """Names of the modules that add `ats` subcommands, in help order."""
    import pkgutil

    import ats

    names = ["ats.demo"]
    for info in pkgutil.walk_packages(ats.__path__, "ats."):
        if info.name.endswith(".cli") or info.name.endswith("_cli"):
            if info.name != "ats.cli":
                names.append(info.name)
    mods = [importlib.import_module(n) for n in names]
    mods = [m for m in mods if hasattr(m, "register")]
    mods.sort(key=lambda m: (getattr(m, "CLI_ORDER", 50), m.__name__))
    return [m.__name__ for m in mods]


def build_parser() -> argparse.ArgumentParser:
    """The full argparse tree (used by main() and by tests that check --help everywhere)."""
    parser = argparse.ArgumentParser(prog="ats", description="ATS: automated trading system operated with Claude Code.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ats` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
