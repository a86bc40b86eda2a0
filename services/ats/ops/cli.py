"""The ops package's commands, one parser each; every handler imports its core lazily.

* `ats run TASK [ARGS]` (headless Claude Code run, what `.claude-cron/run.sh` calls) and
  `ats cron render | install | list` (systemd timers and crontab lines from `.claude-cron/schedule.toml`);
* the operator fleet's deterministic cores: `ats security audit` (security-monitor), `ats git commit` and
  `ats session close` (git-workflow-agent), `ats gh ...` (github-issues-agent), `ats archive`
  (project-backup-archiver), `ats hook pretooluse` (the PreToolUse path hook), `ats monitor start | run |
  status | stop | poll` (ats-live-monitor-agent: the live monitor daemon, cores in ops/monitor*.py);
* `ats mcp` is registered from :mod:`ats.ops.mcp_commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import AtsError

CLI_ORDER = 80


# --- alerts: `ats alerts dispatch|test|status`, thin handlers over ops/alerts.py -----------------------------
def _alerts_dispatch(args) -> int:
    from ..db.command import command_connection
    from .alerts import dispatch

    while True:
        with command_connection("ats-alerts") as conn:
            r = dispatch(conn, account=args.account)
        sent = sum(1 for m in r.messages if m["delivered"])
        print(f"alerts [{args.account}]: {r.events_seen} event(s) read, {len(r.messages)} message(s) "
              f"({sent} delivered), held back {sum(r.held_back.values())} by the rate limit, cursor {r.cursor}")
        for m in r.messages:
            print(f"  {'sent' if m['delivered'] else 'NOT DELIVERED'} {m['title']}"
                  + (f" ({m['error']})" if m["error"] else ""))
        if not args.loop:
            return 0 if all(m["delivered"] for m in r.messages) else 1
        time.sleep(max(1.0, args.interval))


def _alerts_test(args) -> int:
    from ..db.command import command_connection
    from .alerts import send_summary

    with command_connection("ats-alerts") as conn:
        out = send_summary(conn, account=args.account, title=f"ATS [{args.account}] test message",
                           body="a test message from `ats alerts test`: this channel receives ATS alerts",
                           cause="test")
    print(f"test message: {'delivered' if out['delivered'] else 'NOT DELIVERED'}"
          + (f" ({out['error']})" if out["error"] else ""))
    return 0 if out["delivered"] else 1


def _alerts_status(args) -> int:
    from ..db.command import command_connection

    with command_connection("ats-alerts") as conn:
        rows = conn.execute(
            "SELECT delivery_id, sent_at, cause, event_count, delivered, channels, error, pending_count "
            "FROM alert_deliveries WHERE account_id=%s ORDER BY delivered, sent_at DESC, delivery_id DESC LIMIT %s",
            (args.account, args.limit)).fetchall()
    if not rows:
        print(f"no alert deliveries for account {args.account!r} yet")
    for r in rows:
        print(f"{r['sent_at']:%Y-%m-%d %H:%M:%S} {'ok  ' if r['delivered'] else 'FAIL'} {r['cause']} "
              f"x{r['event_count']} channels={r['channels']} held={r['pending_count']}"
              + (f" error={r['error']}" if r["error"] else ""))
    return 0


def _register_alerts(subparsers) -> None:
    """Add `ats alerts dispatch | test | status`."""
    p = subparsers.add_parser("alerts", help="send alerts (system_events -> apprise channels), test, status",
                              description="Channels are apprise URLs in setting alerts.urls (secrets via ${NAME} "
                                          "from the env or the account's 0600 env file).")
    s = p.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    d = s.add_parser("dispatch", help="turn new system_events into deduplicated, rate-limited messages")
    d.add_argument("--account", default="default")
    d.add_argument("--loop", action="store_true", help="keep dispatching every --interval seconds")
    d.add_argument("--interval", type=float, default=60.0, help="seconds between dispatches with --loop")
    d.set_defaults(func=_alerts_dispatch)
    t = s.add_parser("test", help="send one test message to every channel of the account")
    t.add_argument("--account", default="default")
    t.set_defaults(func=_alerts_test)
    st = s.add_parser("status", help="recent deliveries, undelivered first")
    st.add_argument("--account", default="default")
    st.add_argument("--limit", type=int, default=20)
    st.set_defaults(func=_alerts_status)
# --- end alerts ---------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add `ats run`, `ats cron`, `ats mcp` and the fleet's commands to the `ats` parser."""
    from .mcp_commands import register as register_mcp  # `ats mcp serve|tools`
    from .tasks import TASKS

    register_mcp(subparsers)
    _register_fleet(subparsers)
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


# ---- the operator fleet -------------------------------------------------------------------------------

def _register_fleet(subparsers) -> None:
    """`ats security|git|session|hook|gh|archive`: the operator fleet's cores."""
    _register_security(subparsers)
    _register_git(subparsers)
    _register_hook(subparsers)
    _register_gh(subparsers)
    _register_archive(subparsers)
    _register_monitor(subparsers)


# ---- ats security audit -------------------------------------------------------------------------------

def _register_security(subparsers) -> None:
    p = subparsers.add_parser("security", help="security audit: secrets in logs/reports/events, grants, settings",
                              description="Security checks of the security-monitor agent.")
    s = p.add_subparsers(dest="security_command", required=True, metavar="SUBCOMMAND")
    a = s.add_parser("audit", help="run every check; exit 1 when any finding is high",
                     description="Secrets (env values + key patterns) in logs/, reports/ and system_events, env "
                                 "file modes, ats_readonly grants vs the migrations, MCP write tools, dashboard "
                                 "binding, the .claude/settings.json deny list. Secrets are never printed.")
    a.add_argument("--json", action="store_true", help="print the findings as JSON")
    a.add_argument("--no-report", action="store_true", help="do not write reports/security/<date>_security-audit.md")
    a.add_argument("--no-db", action="store_true", help="skip the database checks (role grants, events)")
    a.set_defaults(func=_cmd_security_audit)


def _cmd_security_audit(args) -> int:
    from .security import AuditConfig, audit, write_report

    findings = audit(AuditConfig(check_db=not args.no_db))
    path = None if args.no_report else write_report(findings)
    high = sum(f.severity == "high" for f in findings)
    if args.json:
        print(json.dumps({"report": str(path) if path else None, "high": high,
                          "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f"{f.severity.upper():<6} {f.check:<16} {f.title}")
            for e in f.evidence:
                print(f"       {e}")
        print(f"{len(findings)} findings ({high} high)" + (f"; report {path}" if path else ""))
    return 1 if high else 0


# ---- ats git commit / ats session close ---------------------------------------------------------------

def _register_git(subparsers) -> None:
    p = subparsers.add_parser("git", help="commit explicit paths with the day's plan (no push, ever)",
                              description="The git-workflow-agent's core (GitPython). There is no push command.")
    s = p.add_subparsers(dest="git_command", required=True, metavar="SUBCOMMAND")
    c = s.add_parser("commit", help="stage exactly --paths and commit; services/, mcp_servers/, tests/ need "
                                    "today's plan in plans/",
                     description="Stage the named paths only (refuses other staged changes), require a plan "
                                 "saved today (UTC) for changes under services/, mcp_servers/, tests/ and commit "
                                 "it with them; the message subject is the plan's title.")
    c.add_argument("--paths", nargs="+", required=True, metavar="P", help="files or directories to commit")
    c.add_argument("--hint", help="extra message text (the subject when no plan applies)")
    c.set_defaults(func=_cmd_git_commit)
    se = subparsers.add_parser("session", help="close an interactive session (commit, backup, health, summary)")
    ss = se.add_subparsers(dest="session_command", required=True, metavar="SUBCOMMAND")
    cl = ss.add_parser("close", help="commit --paths (optional), ats db backup, ats health-check, "
                                     "reports/sessions/<date>_session.md",
                       description="Close the session: commit (if --paths), DB backup, health check, and a "
                                   "summary in reports/sessions/. Exit 1 when the commit or the backup failed.")
    cl.add_argument("--paths", nargs="+", metavar="P", help="commit these paths first")
    cl.add_argument("--hint", help="commit message hint")
    cl.add_argument("--no-backup", action="store_true", help="skip the database backup")
    cl.add_argument("--no-health", action="store_true", help="skip the health check")
    cl.set_defaults(func=_cmd_session_close)


def _cmd_git_commit(args) -> int:
    from .gitflow import commit

    res = commit(args.paths, args.hint)
    print(f"committed {res.sha[:12]}: {res.message.splitlines()[0]} ({len(res.paths)} paths"
          + (f", plan {res.plan.path}" if res.plan else "") + "); not pushed (ats never pushes)")
    return 0


def _cmd_session_close(args) -> int:
    from .gitflow import close_session

    path, steps = close_session(paths=args.paths, hint=args.hint, backup=not args.no_backup,
                                health=not args.no_health)
    for s in steps:
        print(f"{s.name}: exit {s.exit_code}")
    print(f"session summary {path}")
    failed = [s for s in steps if s.exit_code != 0 and not (s.name == "ats health-check" and s.exit_code == 1)]
    return 1 if failed else 0


# ---- ats hook pretooluse ------------------------------------------------------------------------------

def _register_hook(subparsers) -> None:
    p = subparsers.add_parser("hook", help="Claude Code hooks (PreToolUse path rules)",
                              description="Hooks called by Claude Code (.claude/settings.json).")
    s = p.add_subparsers(dest="hook_command", required=True, metavar="EVENT")
    h = s.add_parser("pretooluse", help="judge a Write/Edit from the hook JSON on stdin: exit 2 + stderr = refused",
                     description="Headless runs may write only reports/, kb/, plans/; interactive edits under "
                                 "services/, mcp_servers/, tests/ need a plan saved today in plans/.")
    h.set_defaults(func=_cmd_hook_pretooluse)


def _cmd_hook_pretooluse(args) -> int:
    from .hooks import run

    decision = run(sys.stdin.read())
    if not decision.allow:
        print(decision.reason, file=sys.stderr)
    return decision.exit_code


# ---- ats gh ... ---------------------------------------------------------------------------------------

def _register_gh(subparsers) -> None:
    p = subparsers.add_parser("gh", help="GitHub issues over the gh CLI (one line and exit 1 without gh/network)",
                              description="The github-issues-agent's core: list, create, close, comment on issues "
                                          "and link commits, through the gh CLI (ATS_GH_BIN or gh on PATH).")
    s = p.add_subparsers(dest="gh_command", required=True, metavar="SUBCOMMAND")

    def common(q):
        q.add_argument("--repo", help="OWNER/NAME (default: gh infers it from the git remote)")
        return q

    q = common(s.add_parser("issues", help="list issues"))
    q.add_argument("--state", choices=["open", "closed", "all"], default="open")
    q.add_argument("--limit", type=int, default=30)
    q.add_argument("--label")
    q.add_argument("--json", action="store_true", help="print gh's JSON")
    q.set_defaults(func=_cmd_gh_issues)
    q = common(s.add_parser("create", help="create an issue, print its URL"))
    q.add_argument("title")
    body = q.add_mutually_exclusive_group()
    body.add_argument("--body", default="")
    body.add_argument("--body-file", type=Path, help="read the body from this file")
    q.add_argument("--label", action="append", default=[])
    q.set_defaults(func=_cmd_gh_create)
    q = common(s.add_parser("close", help="close an issue"))
    q.add_argument("number", type=int)
    q.add_argument("--comment")
    q.add_argument("--reason", choices=["completed", "not planned"])
    q.set_defaults(func=_cmd_gh_close)
    q = common(s.add_parser("comment", help="comment on an issue"))
    q.add_argument("number", type=int)
    q.add_argument("--body", required=True)
    q.set_defaults(func=_cmd_gh_comment)
    q = common(s.add_parser("link-commits", help="comment the commits naming #N (or of --range) on issue N"))
    q.add_argument("number", type=int)
    q.add_argument("--range", dest="rev_range", help="A..B: every commit of this range instead")
    q.add_argument("--dry-run", action="store_true", help="print the comment, post nothing")
    q.set_defaults(func=_cmd_gh_link)


def _cmd_gh_issues(args) -> int:
    from .gh import list_issues

    issues = list_issues(state=args.state, limit=args.limit, label=args.label, repo=args.repo)
    if args.json:
        print(json.dumps(issues, indent=2))
        return 0
    for i in issues:
        labels = ",".join(lab.get("name", "") for lab in i.get("labels") or [])
        print(f"#{i['number']:<5} {i.get('state', ''):<7} {i.get('updatedAt', '')[:10]}  {i['title']}"
              + (f"  [{labels}]" if labels else ""))
    print(f"{len(issues)} {args.state} issues")
    return 0


def _cmd_gh_create(args) -> int:
    from .gh import create_issue

    body = args.body_file.read_text(encoding="utf-8") if args.body_file else args.body
    print(create_issue(args.title, body, labels=args.label, repo=args.repo))
    return 0


def _cmd_gh_close(args) -> int:
    from .gh import close_issue

    close_issue(args.number, comment=args.comment, reason=args.reason, repo=args.repo)
    print(f"closed #{args.number}")
    return 0


def _cmd_gh_comment(args) -> int:
    from .gh import comment_issue

    comment_issue(args.number, args.body, repo=args.repo)
    print(f"commented on #{args.number}")
    return 0


def _cmd_gh_link(args) -> int:
    from ..paths import project_root
    from .gh import link_commits

    body, commits = link_commits(args.number, project_root(), rev_range=args.rev_range, dry_run=args.dry_run,
                                 repo=args.repo)
    if args.dry_run:
        print(body)
    print(f"{'would link' if args.dry_run else 'linked'} {len(commits)} commits to #{args.number}")
    return 0


# ---- ats archive --------------------------------------------------------------------------------------

def _register_archive(subparsers) -> None:
    p = subparsers.add_parser("archive", help="git bundle of all refs + reports/ kb/ plans/ tarball, rotated",
                              description="Write ats-archive_<UTC>.bundle (git bundle --all, verified), .tar.gz "
                                          "(reports/ kb/ plans/) and a .json manifest, then keep the newest N "
                                          "(setting archive.keep). Directory: --dir, setting archive.dir, "
                                          "ATS_ARCHIVE_DIR, <root>/.ats/archives.")
    p.add_argument("--dir", type=Path, help="archive directory")
    p.add_argument("--keep", type=int, help="keep the newest N archives (default: setting archive.keep)")
    p.set_defaults(func=_cmd_archive)


def _cmd_archive(args) -> int:
    from ..paths import project_root
    from .archive import create_archive, resolve_dir, rotate, settings

    root = project_root()
    configured, keep = settings()
    directory = resolve_dir(root, args.dir, configured)
    man = create_archive(root, directory)
    deleted = rotate(directory, args.keep or keep)
    sizes = ", ".join(f"{n} {f['size_bytes']} bytes" for n, f in man.files.items())
    print(f"archive {directory / man.stem}: {len(man.refs)} refs (HEAD {man.head[:12]}), {man.members} files of "
          f"{' '.join(man.dirs) or 'no content dirs'}; {sizes}; kept {args.keep or keep}, deleted {len(deleted)}")
    return 0


# ---- ats monitor: the live monitor (ops/monitor.py checks, ops/monitor_daemon.py process, ops/monitor_report.py) --

def _register_monitor(subparsers) -> None:
    p = subparsers.add_parser("monitor", help="live monitor: a daemon that records one JSON line per poll of the "
                                              "live loop, and its audit report",
                              description="Watch an account's live loop: every --interval seconds one JSON line "
                                          "in logs/live-monitor/<account>/<YYYY-MM-DD>.jsonl (loop pid and last "
                                          "bar, breakers, open positions vs configuration, feed freshness, order "
                                          "latency, reconciliation, errors, strategies vs their gates). Read-only "
                                          "on the database.")
    s = p.add_subparsers(dest="monitor_command", required=True, metavar="SUBCOMMAND")

    def acct(q):
        q.add_argument("--account", default=None, metavar="ID", help="account to watch (default: the bound account)")
        return q

    q = acct(s.add_parser("start", help="start the detached daemon (exit 1 when already running)"))
    q.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default 30)")
    q.set_defaults(func=_cmd_monitor_start)
    q = acct(s.add_parser("run", help="the daemon's body in the foreground (what start spawns)"))
    q.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default 30)")
    q.add_argument("--max-polls", type=int, default=None, help="stop after N polls")
    q.set_defaults(func=_cmd_monitor_run)
    q = acct(s.add_parser("status", help="running?, pid, last poll, lines and deviations so far"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_monitor_status)
    q = acct(s.add_parser("stop", help="stop the daemon (SIGTERM, wait); --save-report writes the audit report"))
    q.add_argument("--save-report", action="store_true",
                   help="write reports/live-monitor/<account>/<UTC timestamp>.md + .json from the session's trail")
    q.set_defaults(func=_cmd_monitor_stop)
    q = acct(s.add_parser("poll", help="one poll now, printed as JSON (used by tests and the agent)"))
    q.add_argument("--once", action="store_true", help="one poll (the only mode; accepted for clarity)")
    q.add_argument("--append", action="store_true", help="also append the line to the JSONL trail")
    q.set_defaults(func=_cmd_monitor_poll)


def _cmd_monitor_start(args) -> int:
    from .monitor_daemon import start_daemon

    r = start_daemon(args.account, args.interval)
    if r["replaced_stale"] is not None:
        print(f"stale pidfile: monitor pid {r['replaced_stale']} was not running (killed?); replaced")
    print(f"monitor started for account {r['account']} (pid {r['pid']}), every {r['interval_s']:g} s -> "
          f"{r['log_dir']}/<YYYY-MM-DD>.jsonl")
    return 0


def _cmd_monitor_run(args) -> int:
    from .monitor_daemon import run_daemon

    return run_daemon(args.account, args.interval, max_polls=args.max_polls)


def _cmd_monitor_status(args) -> int:
    from .monitor_daemon import status

    st = status(args.account)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    if st["running"]:
        head = f"running (pid {st['pid']})"
    elif st["stale"]:
        head = f"not running: stale pidfile (pid {st['pid']} is gone; killed?)"
    else:
        head = "not running"
    print(f"monitor of account {st['account']}: {head}")
    if st["session"]:
        sev = ", ".join(f"{n} {k}" for k, n in st["deviations"]["by_severity"].items()) or "none"
        print(f"  session {st['session']} every {st['interval_s']} s, started {st['started_at']}"
              + (f", stopped {st['stopped_at']}" if st["stopped_at"] else ""))
        print(f"  {st['lines']} line(s), last poll {st['last_poll'] or '-'}; distinct deviations so far: {sev}")
        for i in st["deviations"]["ids"][:20]:
            print(f"    {i}")
    print(f"  trail {st['log_dir']}")
    return 0


def _cmd_monitor_stop(args) -> int:
    from .monitor_daemon import monitor_paths, read_lines, stop_daemon
    from .monitor_report import write_report

    r = stop_daemon(args.account)
    if r["stopped"]:
        print(f"monitor of account {args.account} stopped (pid {r['pid']}"
              + (", SIGKILL after SIGTERM was ignored)" if r["killed"] else ")"))
    elif r["stale"]:
        print(f"monitor of account {args.account} was not running: stale pidfile (pid {r['pid']} is gone; "
              "killed?) removed")
    else:
        print(f"monitor of account {args.account} is not running")
    if not args.save_report:
        return 0 if r["stopped"] else 1
    st = r["state"]
    if not st.get("started_at"):
        raise AtsError(f"no monitor session recorded for account {args.account}: nothing to report")
    lines = read_lines(monitor_paths(args.account), since=st["started_at"], until=st.get("stopped_at"))
    md, js = write_report(lines, account=args.account, session=st)
    print(f"report {md} (+ {js.name}): {len(lines)} poll(s)")
    return 0


def _cmd_monitor_poll(args) -> int:
    from .monitor_daemon import append_line, monitor_paths, poll_once, resume_cursor

    mp = monitor_paths(args.account)
    line = poll_once(args.account, resume_cursor(mp))
    if args.append:
        line["monitor"] = {"pid": os.getpid(), "session": "poll", "poll": 1}
        append_line(mp, line)
    print(json.dumps(line, indent=2, default=str))
    return 0
