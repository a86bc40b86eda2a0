"""The `ats` command line (ats.cli): exit codes, one-line errors, --help everywhere, the command -> module table."""

from __future__ import annotations

import argparse

from conftest import run_cli


def test_cli_usage_error_exit_2():
    r = run_cli("db", "nosuchcommand")
    assert r.returncode == 2


def test_cli_failure_is_one_line_exit_1(db_url):
    r = run_cli("config", "strategy", "show", "x", "--as-of", "not-a-date")
    assert r.returncode == 2 and "not-a-date" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("db", "status", env={"ATS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot connect" in r.stderr


def test_every_command_has_help():
    from ats.cli import build_parser
    import argparse

    parser = build_parser()
    seen = 0

    def walk(p, path):
        nonlocal seen
        for act in p._actions:
            if isinstance(act, argparse._SubParsersAction):
                for name, child in act.choices.items():
                    assert child.format_help().startswith("usage:"), path + [name]
                    seen += 1
                    walk(child, path + [name])

    walk(parser, [])
    assert seen >= 8


def test_every_top_level_command_is_in_the_docstring_table():
    import importlib

    import ats.cli as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table = {}
    for line in cli.__doc__.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[0].startswith("``") and cells[1].startswith("``ats"):
            table[cells[0].strip("`")] = cells[1].strip("`")
    assert set(sub.choices) <= set(table), f"commands missing from the table: {set(sub.choices) - set(table)}"
    for command, module in table.items():
        if command not in sub.choices:
            continue  # a row may name a command of a package this checkout does not have yet
        mod = importlib.import_module(module)
        assert hasattr(mod, "register"), f"{module} (command {command!r}) has no register()"


def test_only_package_cli_modules_are_discovered():
    from ats.cli import command_modules

    mods = command_modules()
    assert mods[0] == "ats.demo"
    assert all(m == "ats.demo" or (m.startswith("ats.") and m.endswith(".cli") and m.count(".") == 2) for m in mods)
    assert {"ats.db.cli", "ats.forensics.cli", "ats.knowledge.cli", "ats.ops.cli"} <= set(mods)
