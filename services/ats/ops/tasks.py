"""The headless tasks: what each `.claude-cron/run.sh TASK` may do, and what runs when no model is available.

Each task names a skill (`.claude/skills/<command>/SKILL.md`, invoked as `/<command>`), the explicit tool allowlist passed to
`claude --allowedTools` in dontAsk mode (anything else is refused and lands in ``permission_denials``), its
deterministic core (the `ats ...` command lines the command calls first, run directly when Claude Code is
missing or not logged in), and its limits (max turns, wall-clock timeout in seconds).

Invariants (checked by tests/ops/test_ops_config.py and tests/ops/test_skills.py; a headless skill never forks):
  * the allowlist of a task equals the ``allowed-tools`` frontmatter of its slash command — Claude Code grants
    a command's ``allowed-tools`` on top of ``--allowedTools``, so a broader frontmatter would widen a headless
    run;
  * no allowlist holds a bare ``Bash``, ``Write`` or ``Edit``, nor ``Edit(...)`` outside ``reports/``, ``kb/``,
    ``plans/``; Bash entries are ``Bash(ats <core>:*)`` prefixes of the task's own core;
  * MCP write tools (``--allow-writes`` tools of ats-postgres) appear only where the task writes through them.

Each task that produces something declares its :class:`Artifact` (a glob under the project root): after the
Claude Code run the runner checks that a matching file is newer than the run's start, and when none is it runs
the deterministic core so the artifact lands, records ``artifact_missing`` and exits non-zero
(``ats.ops.headless``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

from ..errors import UsageError

PG = "mcp__ats-postgres__"
DOCS = "mcp__ats-docs__"

#: ats-postgres tools that exist only when the server runs with --allow-writes (see .mcp.json / issue 5).
PG_WRITE_TOOLS = ("append_lesson", "record_report", "write_investigation_report")
#: read-only ats-postgres tools.
PG_READ_TOOLS = ("query", "list_tables", "describe_table", "explain", "investigate_symbol", "portfolio_pnl",
                 "health_summary", "blocked_signals")
#: directories a headless run may write (through Edit/Write rules or the narrow MCP write tools).
WRITABLE_DIRS = ("reports", "kb", "plans")

DOCS_READ = [f"{DOCS}search", f"{DOCS}get"]


@dataclass(frozen=True)
class Artifact:
    """A file a headless run must leave behind.

    Parameters
    ----------
    pattern : str
        Glob relative to the project root, e.g. ``reports/investigations/*_BTCUSDT.md``.
    description : str
        What the file is, for messages.
    """

    pattern: str
    description: str

    def found(self, root: Path, since: float) -> list[Path]:
        """Files matching ``pattern`` under ``root`` modified at or after ``since``.

        Parameters
        ----------
        root : pathlib.Path
            Project root.
        since : float
            The run's start, Unix seconds (wall clock); compared with ``st_mtime`` at whole-second resolution
            so a file system with coarse timestamps does not hide a file written in the run's first second.

        Returns
        -------
        list of pathlib.Path
            Newest first.
        """
        floor = math.floor(since)
        hits = []
        for p in root.glob(self.pattern):
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if p.is_file() and mtime >= floor:
                hits.append((mtime, p))
        return [p for _, p in sorted(hits, reverse=True)]


def _fixed_artifact(pattern: str, description: str) -> Callable[[list[str]], Artifact]:
    return lambda args: Artifact(pattern, description)


def _investigation_artifact(args: list[str]) -> Artifact:
    symbol = args[0].upper() if args else "*"
    return Artifact(f"reports/investigations/*_{symbol}.md", f"the investigation report of {symbol}")


@dataclass(frozen=True)
class Task:
    """One headless task.

    name: the TASK argument of run.sh (also the lock and log name: ``logs/cron/<name>.log``).
    command: slash command name without the slash, or None for a core-only task (no model needed).
    allowed_tools: the explicit ``--allowedTools`` list (Claude Code permission-rule syntax).
    core: ``core(args) -> list of argv lists`` for `ats` (without the leading ``ats``); run in order.
    max_turns: ``--max-turns``; timeout_s: wall-clock limit in seconds for the whole run (model or core).
    usage: one-line argument synopsis for help output.
    artifact: ``artifact(args) -> Artifact`` the run must leave (None: the task promises no file).
    """

    name: str
    command: str | None
    description: str
    allowed_tools: tuple[str, ...]
    core: Callable[[list[str]], list[list[str]]]
    usage: str = ""
    max_turns: int = 20
    timeout_s: int = 900
    writes: tuple[str, ...] = field(default=("reports",))
    artifact: Callable[[list[str]], Artifact] | None = None

    def expected_artifact(self, args: list[str]) -> Artifact | None:
        """The :class:`Artifact` a run with ``args`` must leave, or None."""
        return self.artifact(args) if self.artifact is not None else None

    def prompt(self, args: list[str]) -> str:
        """The `claude --print` prompt: ``/<command> ARGS`` (expanded by Claude Code from the command file)."""
        if self.command is None:
            raise UsageError(f"task {self.name} is core-only: it has no slash command")
        return " ".join([f"/{self.command}", *[_quote(a) for a in args]]).strip()

    def pg_write_tools(self) -> list[str]:
        """The ats-postgres write tools in this task's allowlist (the server needs --allow-writes iff any)."""
        return [t for t in self.allowed_tools if t.startswith(PG) and t[len(PG):] in PG_WRITE_TOOLS]


def _quote(arg: str) -> str:
    # Claude Code splits command arguments shell-style for $0/$1; keep multi-word arguments together.
    if not arg or any(c.isspace() for c in arg) or any(c in arg for c in "\"'"):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def parse_date_filter(args: list[str]) -> tuple[str | None, str | None]:
    """(since, until) from a /investigate date filter, as ISO strings (UTC), or (None, None).

    Accepted: ``[]``; ``["2021-05-19"]`` (that UTC day: since 2021-05-19, until 2021-05-20);
    ``["2021-05-19..2021-05-21"]``; ``["2021-05-19", "2021-05-21"]``; timestamps such as
    ``2021-05-19T06:00:00Z`` are passed through unchanged. Raises UsageError otherwise.
    """
    if not args:
        return None, None
    if len(args) == 1 and ".." in args[0]:
        since, until = args[0].split("..", 1)
        return since or None, until or None
    if len(args) == 1:
        d = args[0]
        try:
            day = date.fromisoformat(d)
        except ValueError:
            return d, None  # a timestamp: from then on
        return day.isoformat(), (day + timedelta(days=1)).isoformat()
    if len(args) == 2:
        return args[0], args[1]
    raise UsageError(f"date filter: expected DATE, DATE..DATE or SINCE UNTIL, got {' '.join(args)!r}")


def _investigate_core(args: list[str]) -> list[list[str]]:
    if not args:
        raise UsageError("investigate needs a SYMBOL (e.g. run.sh investigate BTCUSDT 2021-05-19)")
    symbol, rest = args[0].upper(), args[1:]
    since, until = parse_date_filter(rest)
    argv = ["investigate", symbol]
    if since:
        argv += ["--since", since]
    if until:
        argv += ["--until", until]
    return [argv]


def _save_plan_core(args: list[str]) -> list[list[str]]:
    if len(args) != 2:
        raise UsageError('save-plan needs TITLE and FILE (run.sh save-plan "title" path/to/plan.md)')
    return [["plan", "save", args[0], "--from", args[1]]]


def _fixed(*argvs: list[str]) -> Callable[[list[str]], list[list[str]]]:
    def core(args: list[str]) -> list[list[str]]:
        return [list(a) + (list(args) if i == len(argvs) - 1 else []) for i, a in enumerate(argvs)]
    return core


REPORT_FILES = ("Read(/reports/**)", "Edit(/reports/**)")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task(
        name="investigate", command="investigate",
        description="forensic lifecycle of one symbol -> reports/investigations/<date>_<SYMBOL>.md",
        usage="SYMBOL [DATE | SINCE..UNTIL | SINCE UNTIL]",
        allowed_tools=(f"{PG}investigate_symbol", f"{PG}write_investigation_report", f"{PG}blocked_signals",
                       f"{PG}portfolio_pnl", f"{PG}query", f"{PG}describe_table", "Bash(ats investigate:*)",
                       *DOCS_READ, *REPORT_FILES),
        core=_investigate_core, max_turns=20, timeout_s=900, artifact=_investigation_artifact),
    Task(
        name="ats-health-check", command="ats-health-check",
        description="post-trade health check and strategy-adherence audit (ats health-check)",
        allowed_tools=("Bash(ats health-check:*)", f"{PG}health_summary", f"{PG}portfolio_pnl",
                       f"{PG}blocked_signals", f"{PG}query", f"{PG}describe_table", *DOCS_READ, *REPORT_FILES),
        core=_fixed(["health-check"]), max_turns=20, timeout_s=900,
        artifact=_fixed_artifact("reports/health/*_health-check.md", "the health-check report")),
    Task(
        name="update-knowledge-base", command="update-knowledge-base",
        description="MD5-drift scan, then rebuild stale and pending KB articles (ats kb scan / update)",
        usage="[SOURCE_PATH ...]",
        allowed_tools=("Bash(ats kb scan:*)", "Bash(ats kb update:*)", "Bash(ats kb status:*)", *DOCS_READ,
                       f"{DOCS}status", "Read(/services/**)", "Read(/mcp_servers/**)", "Read(/tests/**)",
                       "Read(/kb/**)", "Edit(/kb/**)"),
        core=_fixed(["kb", "scan"], ["kb", "update"]), max_turns=40, timeout_s=1800, writes=("kb",),
        artifact=_fixed_artifact("kb/README.md", "the KB index (rewritten by every `ats kb update`)")),
    Task(
        name="kb-scan", command=None,
        description="hourly MD5-drift scan of the source tree (deterministic, no model)",
        allowed_tools=(), core=_fixed(["kb", "scan"]), max_turns=0, timeout_s=600, writes=()),
    Task(
        name="db-backup", command=None,
        description="daily pg_dump -Fc + manifest + rotation (ats db backup; deterministic, no model)",
        allowed_tools=(), core=_fixed(["db", "backup"]), max_turns=0, timeout_s=3600, writes=()),
    Task(
        name="daily-report", command=None,
        description="daily P&L summary written to reports/daily/ and sent to the alert channels (ats report daily)",
        allowed_tools=(), core=_fixed(["report", "daily"]), max_turns=0, timeout_s=600, writes=()),
    Task(
        name="alerts-dispatch", command=None,
        description="system_events -> deduplicated, rate-limited alert messages (ats alerts dispatch; deterministic)",
        allowed_tools=(), core=_fixed(["alerts", "dispatch"]), max_turns=0, timeout_s=240, writes=()),
    Task(
        name="micro-backfill", command=None,
        description="hourly Bybit microstructure backfill: open interest, funding, long/short ratio, taker volume "
                    "of the watchlist's crypto symbols (ats data backfill --kind all; deterministic, no model)",
        allowed_tools=(), core=_fixed(["data", "backfill", "--kind", "all"]), max_turns=0, timeout_s=900,
        writes=()),
    Task(
        name="weekly-report", command="weekly-report",
        description="weekly P&L (snapshots), per-strategy stats, blocked signals, breaker trips (ats report weekly)",
        allowed_tools=("Bash(ats report weekly:*)", f"{PG}portfolio_pnl", f"{PG}blocked_signals",
                       f"{PG}health_summary", f"{PG}query", *DOCS_READ, *REPORT_FILES),
        core=_fixed(["report", "weekly"]), max_turns=25, timeout_s=1200,
        artifact=_fixed_artifact("reports/weekly/*_weekly.md", "the weekly report")),
    Task(
        name="24-h-trade-analysis", command="24-h-trade-analysis",
        description="5 representative trades of the last 24 h investigated + index (ats report 24h)",
        usage="[--as-of TIMESTAMP]",
        allowed_tools=("Bash(ats report 24h:*)", f"{PG}investigate_symbol", f"{PG}portfolio_pnl", f"{PG}query",
                       *DOCS_READ, *REPORT_FILES),
        core=_fixed(["report", "24h"]), max_turns=30, timeout_s=1500,
        artifact=_fixed_artifact("reports/daily/*_24h/index.md", "the 24 h trade analysis index")),
    Task(
        name="watchlist-healthcheck", command="watchlist-healthcheck",
        description="watchlist capture vs the top 7-day gainers (ats report watchlist)",
        allowed_tools=("Bash(ats report watchlist:*)", f"{PG}query", f"{PG}describe_table", *DOCS_READ,
                       *REPORT_FILES),
        core=_fixed(["report", "watchlist"]), max_turns=20, timeout_s=900,
        artifact=_fixed_artifact("reports/watchlist/*_watchlist.md", "the watchlist health check")),
    Task(
        name="save-plan", command="save-plan",
        description="copy an approved plan into plans/YYYY-MM-DD_HHMM_<slug>.md (ats plan save)",
        usage='"TITLE" PLAN_FILE',
        allowed_tools=("Bash(ats plan save:*)", "Bash(ats plan list:*)", "Read(~/.claude/plans/**)",
                       "Read(/plans/**)"),
        core=_save_plan_core, max_turns=8, timeout_s=300, writes=("plans",),
        artifact=_fixed_artifact("plans/*.md", "the saved plan")),
]}


def get_task(name: str) -> Task:
    """The Task called ``name``; UsageError listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}, or prompt NAME") from None
