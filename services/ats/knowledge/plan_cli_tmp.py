"""`ats plan save "title" --from FILE` and `ats plan list` (see ats.procedures.plans)."""

from __future__ import annotations

CLI_ORDER = 46

import argparse
import json


def _save(args) -> int:
    from .procedures.plans import save_plan

    res = save_plan(args.title, args.from_file)
    print(res["path"])
    return 0


def _list(args) -> int:
    from .procedures.plans import list_plans

    rows = list_plans()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plans saved yet (ats plan save \"title\" --from FILE)")
    for r in rows[: args.limit]:
        print(f"{r['date']} {r['time']}  {r['name']:<60}  {r['title']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats plan` (save / list)."""
    p = sub.add_parser("plan", help="save approved plans to plans/ (never overwriting) and list them")
    ps = p.add_subparsers(dest="plan_command", required=True, metavar="COMMAND")
    q = ps.add_parser("save", help="copy a plan verbatim to plans/YYYY-MM-DD_HHMM_<slug>.md",
                      description="The name uses the UTC time of saving and a slug of the title; an existing name "
                                  "gets -2, -3, ... appended (files are never overwritten).")
    q.add_argument("title")
    q.add_argument("--from", dest="from_file", required=True, metavar="FILE", help="the plan file ('-' = stdin)")
    q.set_defaults(func=_save)
    q = ps.add_parser("list", help="saved plans, newest first")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)
