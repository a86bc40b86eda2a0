"""`ats security audit`, `ats git commit`, `ats session close`, `ats gh ...`, `ats archive`, `ats hook pretooluse`:
the deterministic cores of the operator fleet (security-monitor, git-workflow-agent, github-issues-agent,
project-backup-archiver, the PreToolUse hook). Each handler imports its core lazily."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

CLI_ORDER = 85


def register(subparsers) -> None:
    """Add the fleet's commands to the `ats` parser."""
    _register_security(subparsers)
    _register_git(subparsers)
    _register_hook(subparsers)
    _register_gh(subparsers)
    _register_archive(subparsers)


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
    import sys

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
