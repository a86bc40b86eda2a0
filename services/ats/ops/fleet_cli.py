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
