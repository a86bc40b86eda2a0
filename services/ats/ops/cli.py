"""`ats run TASK [ARGS]` (headless Claude Code run, what `.claude-cron/run.sh` calls) and
`ats cron render | install | list` (systemd timers and crontab lines from `.claude-cron/schedule.toml`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import AtsError

CLI_ORDER = 80


# --- alerts (trust2): `ats alerts dispatch|test|status`; handlers in ops/alerts_cli.py -----------------------
def _register_alerts(subparsers) -> None:
    from .alerts_cli import register_alerts

    register_alerts(subparsers)
# --- end alerts ---------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add `ats run` and `ats cron` to the `ats` parser."""
    from .fleet_cli import register as register_fleet  # `ats security|git|session|hook|gh|archive`
    from .mcp_commands import register as register_mcp  # `ats mcp serve|tools`
    from .tasks import TASKS

    register_mcp(subparsers)
    register_fleet(subparsers)
    _register_alerts(subparsers)
    task_lines = "\n".join(f"  {t.name:<24} {t.usage + '  ' if t.usage else ''}{t.description}"
                           for t in TASKS.values())
    p = subparsers.add_parser(
        "run", help="run a task headless through Claude Code (falls back to its deterministic core)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one task headless: claude --print \"/<command> ARGS\" with the task's explicit tool "
                    "allowlist in dontAsk mode, a wall-clock timeout and a per-task lock; appends to "
                    "logs/cron/<task>.log and records a system_events row (component 'cron'). Without Claude "
                    "Code (missing or not logged in) the task's deterministic `ats` core runs instead.",
        epilog=f"tasks:\n{task_lines}\n  {'prompt NAME':<24} the one-shot prompt .claude-cron/prompts/NAME.md")
    p.add_argument("--core-only", action="store_true", help="run the deterministic core, not Claude Code")
    p.add_argument("--timeout", type=float, help="wall-clock limit in seconds (default: the task's)")
    p.add_argument("--max-turns", type=int, help="claude --max-turns (default: the task's)")
    p.add_argument("--force", action="store_true", help="run a one-shot prompt again although it already ran")
    p.add_argument("--no-record", action="store_true", help="do not write the system_events row (debugging)")
    p.add_argument("task", help="task name (see below) or 'prompt'")
    p.add_argument("args", nargs=argparse.REMAINDER, help="task arguments")
    p.set_defaults(func=_cmd_run)

    c = subparsers.add_parser("cron", help="render / install / list the schedule of headless runs",
                              description="The schedule of headless runs (.claude-cron/schedule.toml and "
                                          ".claude-cron/prompts/*.md) as systemd units and crontab lines.")
    csub = c.add_subparsers(dest="cron_command", required=True, metavar="SUBCOMMAND")

    r = csub.add_parser("render", help="print (or write to --out) the systemd units and the crontab",
                        description="Render systemd oneshot services + timers (Persistent=true) and "
                                    "/etc/cron.d-style lines for every job and one-shot prompt.")
    _common(r)
    r.add_argument("--format", choices=["all", "systemd", "crontab"], default="all")
    r.add_argument("--out", type=Path, help="write the files into this directory instead of printing them")
    r.set_defaults(func=_cmd_render)

    i = csub.add_parser("install", help="install the timers into /etc/systemd/system (or the crontab)",
                        description="Write the rendered units into the unit directory, then systemctl "
                                    "daemon-reload and enable --now every timer. --dry-run only prints what "
                                    "it would write and run.")
    _common(i)
    i.add_argument("--dry-run", action="store_true", help="print the files and commands, change nothing")
    i.add_argument("--unit-dir", type=Path, default=None, help="default /etc/systemd/system")
    i.add_argument("--crontab", action="store_true", help="install /etc/cron.d/ats instead of systemd timers")
    i.add_argument("--cron-file", type=Path, default=None, help="default /etc/cron.d/ats")
    i.add_argument("--no-enable", action="store_true", help="write the files but run no systemctl command")
    i.set_defaults(func=_cmd_install)

    ls = csub.add_parser("list", help="the jobs, one-shot prompts and tasks with their allowlists",
                         description="List scheduled jobs (calendar, cron), one-shot prompts (run_at, done) "
                                     "and every task's explicit tool allowlist.")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_cmd_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, help="checkout path on the target machine (default: this project root)")
    p.add_argument("--user", help="user the runs execute as (default: schedule setting, else the current user)")


def _cmd_run(args) -> int:
    from .headless import run_task

    res = run_task(args.task, list(args.args), core_only=args.core_only, timeout_s=args.timeout,
                   max_turns=args.max_turns, record=not args.no_record, force=args.force)
    if res.event_id is not None:
        print(f"{res.task}: recorded as system_events event_id={res.event_id}; log {res.log_path}")
    return res.exit_code


def _rendered(args):
    from .schedule import load_schedule, render

    sched = load_schedule()
    return sched, render(sched, root=args.root, user=args.user)


def _cmd_render(args) -> int:
    from .schedule import CRON_FILE

    _, rendered = _rendered(args)
    files: dict[str, str] = {}
    if args.format in ("all", "systemd"):
        files.update(rendered.units)
    if args.format in ("all", "crontab"):
        files[CRON_FILE.name] = rendered.crontab
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {len(files)} files to {args.out}: {', '.join(sorted(files))}")
        return 0
    for name, text in files.items():
        print(f"# ==== {name} ====")
        print(text.rstrip("\n"))
        print()
    return 0


def _cmd_install(args) -> int:
    from .schedule import CRON_FILE, UNIT_DIR

    _, rendered = _rendered(args)
    if args.crontab:
        targets = {args.cron_file or CRON_FILE: rendered.crontab}
        commands: list[list[str]] = []
    else:
        unit_dir = args.unit_dir or UNIT_DIR
        targets = {unit_dir / name: text for name, text in rendered.units.items()}
        commands = [] if args.no_enable else [["systemctl", "daemon-reload"],
                                              ["systemctl", "enable", "--now", *rendered.timers]]
    if args.dry_run:
        for path, text in targets.items():
            state = "replace" if path.exists() else "create"
            print(f"# would {state} {path} ({len(text.encode())} bytes)")
            print(text.rstrip("\n"))
            print()
        for cmd in commands:
            print(f"# would run: {' '.join(cmd)}")
        print(f"# dry run: nothing written ({len(targets)} files, {len(commands)} commands)")
        return 0
    for path, text in targets.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise AtsError(f"cannot write {path}: {exc.strerror} (run as root, or use --dry-run)") from exc
        print(f"wrote {path}")
    for cmd in commands:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise AtsError(f"{' '.join(cmd)} failed: {(res.stderr or res.stdout).strip()[:300]}")
        print(f"ran: {' '.join(cmd)}")
    return 0


def _cmd_list(args) -> int:
    from .schedule import load_schedule
    from .tasks import TASKS

    sched = load_schedule()
    doc = {
        "timezone": sched.timezone,
        "jobs": [{"name": j.name, "task": j.task, "args": j.args, "when": j.when.describe(),
                  "on_calendar": j.when.on_calendar(sched.timezone), "cron": j.when.cron()} for j in sched.jobs],
        "prompts": [{"name": p.name, "run_at": p.when.describe() if p.when else None,
                     "on_calendar": p.when.on_calendar(sched.timezone) if p.when else None,
                     "done": p.done(), "allowed_tools": list(p.allowed_tools), "core": p.core}
                    for p in sched.prompts],
        "tasks": [{"name": t.name, "command": f"/{t.command}" if t.command else None, "max_turns": t.max_turns,
                   "timeout_s": t.timeout_s, "allowed_tools": list(t.allowed_tools),
                   "core": ["ats " + " ".join(a) for a in _core_preview(t)]} for t in TASKS.values()],
    }
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"jobs ({sched.source}, timezone {sched.timezone}):")
    for j in doc["jobs"]:
        print(f"  {j['name']:<24} {j['when']:<22} OnCalendar={j['on_calendar']:<28} cron '{j['cron']}'  "
              f"run.sh {' '.join([j['task'], *j['args']])}")
    print("one-shot prompts (.claude-cron/prompts/):")
    if not doc["prompts"]:
        print("  (none)")
    for p in doc["prompts"]:
        state = f"done {p['done']['at']}" if p["done"] else "pending"
        print(f"  {p['name']:<24} {p['run_at'] or 'no run_at (manual)':<22} {state}")
    print("tasks (explicit --allowedTools, permission mode dontAsk):")
    for t in doc["tasks"]:
        print(f"  {t['name']:<24} {t['command'] or '(core only)':<24} max-turns {t['max_turns']}, "
              f"timeout {t['timeout_s']}s, core: {' && '.join(t['core'])}")
        for tool in t["allowed_tools"]:
            print(f"      {tool}")
    return 0


def _core_preview(task) -> list[list[str]]:
    from ..errors import UsageError

    samples = {"investigate": ["SYMBOL"], "save-plan": ["TITLE", "FILE"]}
    try:
        return task.core(samples.get(task.name, []))
    except UsageError:
        return []
