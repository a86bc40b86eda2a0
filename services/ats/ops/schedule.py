"""The one schedule of headless runs: `.claude-cron/schedule.toml` + `.claude-cron/prompts/*.md` -> systemd and cron.

Schedule file (TOML)::

    [settings]
    user = ""            # User= of the services and the user column of the crontab ("" = whoever renders)
    timezone = "UTC"     # appended to OnCalendar=, CRON_TZ= in the crontab
    mailto = ""          # MAILTO= in the crontab ("" = none)

    [[jobs]]
    name = "ats-health-check"     # unit ats-<name>.service / .timer
    task = "ats-health-check"     # a task of ats.ops.tasks (run.sh TASK)
    when = "daily 07:00"          # hourly :MM | daily HH:MM | weekly DOW[,DOW] HH:MM
    args = []                     # optional TASK arguments
    enabled = true                # optional

One-shot deferred prompts: `.claude-cron/prompts/<name>.md`, a frontmatter block then the prompt text::

    ---
    description: post-soak review of the feed-anomaly breaker
    run_at: 2026-12-01 09:00          # once, in the schedule's timezone
    allowed-tools: mcp__ats-postgres__health_summary, mcp__ats-docs__search, Read(/reports/**), Edit(/reports/**)
    max-turns: 20
    timeout: 900
    core: ats health-check            # optional deterministic fallback (an `ats` command line)
    ---
    Read ... and write reports/reviews/<date>_feed-anomaly.md ...

Rendering: each job and prompt becomes a oneshot ``ats-<name>.service`` running ``.claude-cron/run.sh`` and a
``.timer`` with ``OnCalendar=`` and ``Persistent=true`` (a firing missed while the machine was off runs at the
next boot), plus one line of ``/etc/cron.d/ats`` for machines without systemd. A prompt runs once: after a
successful run ``.ats/cron/done/<name>.json`` is written and later firings (the crontab line recurs yearly)
only say so.
"""

from __future__ import annotations

import getpass
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .. import frontmatter
from ..errors import AtsError, UsageError
from ..paths import account_path, project_root
from .tasks import DOCS_READ, PG, TASKS, Task, WRITABLE_DIRS

SCHEDULE_FILE = Path(".claude-cron") / "schedule.toml"
PROMPTS_DIR = Path(".claude-cron") / "prompts"
RUN_SH = Path(".claude-cron") / "run.sh"
UNIT_DIR = Path("/etc/systemd/system")
CRON_FILE = Path("/etc/cron.d/ats")
#: optional environment of the timer services (ATS_DATABASE_URL, ANTHROPIC_API_KEY, ATS_CLAUDE_BIN, ...);
#: the leading '-' in EnvironmentFile= lets the units run without it
ENV_FILE = Path("/etc/ats/ats.env")
HEADER = "# Rendered by `ats cron render` from {src} -- edit that file and re-render, not this one."

DAYS = {"mon": (1, "Mon"), "tue": (2, "Tue"), "wed": (3, "Wed"), "thu": (4, "Thu"), "fri": (5, "Fri"),
        "sat": (6, "Sat"), "sun": (0, "Sun")}
DEFAULT_PROMPT_TOOLS = (f"{PG}health_summary", f"{PG}portfolio_pnl", f"{PG}blocked_signals", f"{PG}query",
                        f"{PG}investigate_symbol", *DOCS_READ, "Read(/reports/**)", "Edit(/reports/**)")


# ---- calendar expressions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class When:
    """A parsed ``when``: kind ('hourly'|'daily'|'weekly'|'once'), minute, hour, weekdays, date."""

    kind: str
    minute: int
    hour: int | None = None
    weekdays: tuple[str, ...] = ()
    day: str | None = None  # YYYY-MM-DD for 'once'

    def on_calendar(self, tz: str = "") -> str:
        """The systemd ``OnCalendar=`` expression (see systemd.time(7))."""
        suffix = f" {tz}" if tz else ""
        if self.kind == "hourly":
            return f"*-*-* *:{self.minute:02d}:00{suffix}"
        if self.kind == "daily":
            return f"*-*-* {self.hour:02d}:{self.minute:02d}:00{suffix}"
        if self.kind == "weekly":
            days = ",".join(DAYS[d][1] for d in self.weekdays)
            return f"{days} *-*-* {self.hour:02d}:{self.minute:02d}:00{suffix}"
        return f"{self.day} {self.hour:02d}:{self.minute:02d}:00{suffix}"

    def cron(self) -> str:
        """The five cron fields (minute hour day-of-month month day-of-week); 'once' recurs yearly in cron."""
        if self.kind == "hourly":
            return f"{self.minute} * * * *"
        if self.kind == "daily":
            return f"{self.minute} {self.hour} * * *"
        if self.kind == "weekly":
            return f"{self.minute} {self.hour} * * {','.join(str(DAYS[d][0]) for d in self.weekdays)}"
        y, m, d = (int(x) for x in self.day.split("-"))
        return f"{self.minute} {self.hour} {d} {m} *"

    def describe(self) -> str:
        if self.kind == "hourly":
            return f"hourly at :{self.minute:02d}"
        if self.kind == "daily":
            return f"daily {self.hour:02d}:{self.minute:02d}"
        if self.kind == "weekly":
            return f"weekly {','.join(DAYS[d][1] for d in self.weekdays)} {self.hour:02d}:{self.minute:02d}"
        return f"once {self.day} {self.hour:02d}:{self.minute:02d}"


_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_when(text: str) -> When:
    """Parse ``hourly :MM`` | ``daily HH:MM`` | ``weekly DOW[,DOW] HH:MM`` | ``once YYYY-MM-DD HH:MM``.

    Raises UsageError naming the expression when it is not one of these.
    """
    parts = text.strip().split()
    bad = UsageError(f"schedule: cannot parse when = {text!r} (hourly :MM | daily HH:MM | "
                     f"weekly Mon[,Thu] HH:MM | once YYYY-MM-DD HH:MM)")
    if not parts:
        raise bad
    kind = parts[0].lower()
    if kind == "hourly" and len(parts) == 2 and re.fullmatch(r":[0-5]\d", parts[1]):
        return When("hourly", int(parts[1][1:]))
    if kind == "daily" and len(parts) == 2 and (m := _HHMM.match(parts[1])):
        return When("daily", int(m[2]), int(m[1]))
    if kind == "weekly" and len(parts) == 3 and (m := _HHMM.match(parts[2])):
        days = tuple(d.strip().lower()[:3] for d in parts[1].split(","))
        if not days or any(d not in DAYS for d in days):
            raise bad
        return When("weekly", int(m[2]), int(m[1]), weekdays=days)
    if kind == "once" and len(parts) == 3 and (m := _HHMM.match(parts[2])):
        try:
            datetime.strptime(parts[1], "%Y-%m-%d")
        except ValueError:
            raise bad from None
        return When("once", int(m[2]), int(m[1]), day=parts[1])
    raise bad


# ---- frontmatter --------------------------------------------------------------------------------------

def split_frontmatter(text: str, where: str = "front matter") -> tuple[dict[str, Any], str]:
    """(fields, body) of a markdown file with a YAML front-matter block (:func:`ats.frontmatter.split`).

    Scalars are given as strings (``max-turns: 20`` -> ``"20"``), lists stay lists (``allowed-tools`` may be a
    YAML list). Files without a block give ({}, text). Raises AtsError for an unclosed or invalid block.
    """
    meta, body = frontmatter.split(text, where=where)
    return {k: (v if isinstance(v, list) else _scalar_text(v)) for k, v in meta.items()}, body


def _scalar_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (date, datetime)):
        return v.isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
    return str(v)


def split_tools(value: Any) -> tuple[str, ...]:
    """Split an ``allowed-tools`` value (string or YAML list) into rules (:func:`ats.frontmatter.tool_list`)."""
    return frontmatter.tool_list(value)


def check_headless_tools(tools: tuple[str, ...], where: str) -> None:
    """Refuse a headless allowlist that could change code or config (AtsError naming the rule and where).

    Allowed: MCP tools (``mcp__...``), ``Read(...)``, ``Edit(/<reports|kb|plans>/...)``, ``Bash(ats <cmd>:*)``
    for commands other than ``ats db`` / ``ats config`` / ``ats demo`` / ``ats run`` / ``ats cron``.
    """
    for t in tools:
        if t.startswith("mcp__") or t.startswith("Read(") or t in ("Glob", "Grep"):
            continue
        m = re.fullmatch(r"Edit\(/([a-z]+)/.*\)", t)
        if m and m[1] in WRITABLE_DIRS:
            continue
        m = re.fullmatch(r"Bash\(ats ([a-z0-9-]+)( [a-z0-9-]+)*:\*\)", t)
        if m and m[1] not in ("db", "config", "demo", "run", "cron"):
            continue
        raise AtsError(f"{where}: tool rule {t!r} is not allowed in a headless run (read-only by default: MCP "
                       f"tools, Read(...), Edit(/reports|kb|plans/...), Bash(ats <report command>:*))")


# ---- prompts ------------------------------------------------------------------------------------------

@dataclass
class PromptSpec:
    """A one-shot deferred prompt from ``.claude-cron/prompts/<name>.md``."""

    name: str
    path: Path
    text: str
    description: str
    when: When | None
    allowed_tools: tuple[str, ...]
    max_turns: int = 20
    timeout_s: int = 900
    core: str | None = None

    def as_task(self) -> Task:
        """A Task for the runner (no slash command: the prompt text is passed as is)."""
        return Task(name=f"prompt-{self.name}", command=None, description=self.description,
                    allowed_tools=self.allowed_tools, core=lambda args: self.core_argvs(),
                    max_turns=self.max_turns, timeout_s=self.timeout_s)

    def core_argvs(self) -> list[list[str]]:
        """The deterministic fallback as `ats` argv lists ([] when the prompt has none)."""
        if not self.core:
            return []
        argv = shlex.split(self.core)
        if argv and argv[0] == "ats":
            argv = argv[1:]
        return [argv] if argv else []

    def done_path(self) -> Path:
        return account_path("cron") / "done" / f"{self.name}.json"

    def done(self) -> dict | None:
        """The record of its successful run, or None when it has not run yet."""
        p = self.done_path()
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def mark_done(self, result) -> None:
        p = self.done_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"at": datetime.now().astimezone().isoformat(timespec="seconds"),
                                 "mode": result.mode, "summary": result.summary}), encoding="utf-8")


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def load_prompt(name: str, root: Path | None = None) -> PromptSpec:
    """Load and validate ``.claude-cron/prompts/<name>.md`` (UsageError when absent, AtsError when invalid)."""
    root = root or project_root()
    if not _NAME.match(name):
        raise UsageError(f"prompt name {name!r}: lowercase letters, digits and '-' only")
    path = root / PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise UsageError(f"no prompt {path}")
    fields, body = split_frontmatter(path.read_text(encoding="utf-8"), where=str(path))
    if not body.strip():
        raise AtsError(f"{path}: the prompt text is empty")
    tools = split_tools(fields["allowed-tools"]) if fields.get("allowed-tools") else DEFAULT_PROMPT_TOOLS
    check_headless_tools(tools, str(path))
    run_at = fields.get("run_at")
    try:
        spec = PromptSpec(name=name, path=path, text=body.strip(), description=fields.get("description", name),
                          when=parse_when(f"once {run_at}") if run_at else None, allowed_tools=tools,
                          max_turns=int(fields.get("max-turns", 20)), timeout_s=int(fields.get("timeout", 900)),
                          core=fields.get("core") or None)
    except ValueError as exc:
        raise AtsError(f"{path}: {exc}") from exc
    if spec.core and not spec.core_argvs():
        raise AtsError(f"{path}: core is empty")
    core = spec.core_argvs()[0] if spec.core_argvs() else []
    if core and (core[0] in ("config", "demo", "run", "cron") or (core[0] == "db" and core[1:2] != ["status"])):
        raise AtsError(f"{path}: core 'ats {' '.join(core)}' is not a read/report command")
    return spec


def list_prompts(root: Path | None = None) -> list[PromptSpec]:
    """Every prompt in ``.claude-cron/prompts/`` (sorted by name)."""
    root = root or project_root()
    d = root / PROMPTS_DIR
    return [load_prompt(p.stem, root) for p in sorted(d.glob("*.md"))] if d.is_dir() else []


# ---- schedule -----------------------------------------------------------------------------------------

@dataclass
class Job:
    """One recurring headless run."""

    name: str
    task: str
    when: When
    args: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def timeout_s(self) -> int:
        return TASKS[self.task].timeout_s


@dataclass
class Schedule:
    """The parsed schedule file plus the one-shot prompts."""

    user: str
    timezone: str
    mailto: str
    jobs: list[Job]
    prompts: list[PromptSpec]
    source: Path


def load_schedule(root: Path | None = None, path: Path | None = None) -> Schedule:
    """Parse and validate ``.claude-cron/schedule.toml`` (AtsError naming the file and job when invalid)."""
    root = root or project_root()
    path = path or root / SCHEDULE_FILE
    if not path.is_file():
        raise AtsError(f"schedule file {path} not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AtsError(f"{path}: {exc}") from exc
    settings = doc.get("settings", {})
    jobs, seen = [], set()
    for i, j in enumerate(doc.get("jobs", [])):
        where = f"{path} jobs[{i}]"
        name, task = j.get("name"), j.get("task")
        if not name or not _NAME.match(name):
            raise AtsError(f"{where}: name must be lowercase letters, digits and '-'")
        if name in seen:
            raise AtsError(f"{where}: duplicate job name {name!r}")
        seen.add(name)
        if task not in TASKS:
            raise AtsError(f"{where}: unknown task {task!r} (known: {', '.join(sorted(TASKS))})")
        if not j.get("enabled", True):
            continue
        try:
            when = parse_when(j.get("when", ""))
        except UsageError as exc:
            raise AtsError(f"{where}: {exc}") from None
        if when.kind == "once":
            raise AtsError(f"{where}: one-shot runs belong in {PROMPTS_DIR}/, not in the schedule")
        args = [str(a) for a in j.get("args", [])]
        TASKS[task].core(args)  # validates the arguments
        jobs.append(Job(name, task, when, args, j.get("description") or TASKS[task].description))
    return Schedule(user=settings.get("user", ""), timezone=settings.get("timezone", "UTC"),
                    mailto=settings.get("mailto", ""), jobs=jobs, prompts=list_prompts(root), source=path)


# ---- rendering ----------------------------------------------------------------------------------------

def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_./:@=+,-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Rendered:
    """Rendered files: ``units`` {filename: text} for the unit directory, ``crontab`` text for /etc/cron.d/ats."""

    units: dict[str, str]
    crontab: str
    timers: list[str]


def render(schedule: Schedule, *, root: Path | None = None, user: str | None = None) -> Rendered:
    """Render the schedule for a checkout at ``root`` (default: this project root) run as ``user``."""
    root = (root or project_root()).resolve()
    user = user or schedule.user or getpass.getuser()
    tz = schedule.timezone
    run_sh = root / RUN_SH
    src = SCHEDULE_FILE
    units: dict[str, str] = {}
    timers: list[str] = []
    cron_lines = [HEADER.format(src=f"{src} and {PROMPTS_DIR}/*.md"),
                  "# For machines without systemd; where systemd runs, install the timers instead (ats cron install).",
                  "SHELL=/bin/sh", "PATH=/usr/local/bin:/usr/bin:/bin"]
    if tz:
        cron_lines.append(f"CRON_TZ={tz}")
    cron_lines.append(f"MAILTO={schedule.mailto}" if schedule.mailto else "MAILTO=\"\"")

    entries: list[tuple[str, str, list[str], When, int]] = []
    for job in schedule.jobs:
        entries.append((job.name, f"{job.task}: {job.description}", [job.task, *job.args], job.when,
                        job.timeout_s))
    for p in schedule.prompts:
        if p.when is None:
            continue
        entries.append((f"prompt-{p.name}", f"one-shot prompt {p.name}: {p.description}", ["prompt", p.name],
                        p.when, p.timeout_s))

    for name, desc, argv, when, timeout_s in entries:
        unit = name if name.startswith("ats-") else f"ats-{name}"
        exec_start = " ".join(_systemd_quote(a) for a in [str(run_sh), *argv])
        units[f"{unit}.service"] = "\n".join([
            HEADER.format(src=src if not name.startswith("prompt-") else f"{PROMPTS_DIR}/{name[7:]}.md"),
            "[Unit]",
            f"Description=ATS headless run: {desc}".replace("%", "%%"),
            f"Documentation=file://{root / 'CLAUDE.md'}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"User={user}",
            f"WorkingDirectory={root}",
            f"Environment=ATS_HOME={root}",
            f"EnvironmentFile=-{ENV_FILE}",
            f"ExecStart={exec_start}",
            f"TimeoutStartSec={timeout_s + 120}",
            "Nice=10",
            "",
        ])
        units[f"{unit}.timer"] = "\n".join([
            HEADER.format(src=src if not name.startswith("prompt-") else f"{PROMPTS_DIR}/{name[7:]}.md"),
            "[Unit]",
            f"Description=ATS timer: {name} ({when.describe()}{' ' + tz if tz else ''})",
            "",
            "[Timer]",
            f"OnCalendar={when.on_calendar(tz)}",
            "Persistent=true",
            f"Unit={unit}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ])
        timers.append(f"{unit}.timer")
        cmd = " ".join(shlex.quote(a) for a in [str(run_sh), *argv])
        note = f"# {name}: {when.describe()}" + ("; run.sh runs a prompt only once" if when.kind == "once" else "")
        cron_lines += [note, f"{when.cron()} {user} cd {shlex.quote(str(root))} && {cmd}"]
    units.update(service_units(root, user))
    return Rendered(units=units, crontab="\n".join(cron_lines) + "\n", timers=timers)


def service_units(root: Path, user: str) -> dict[str, str]:
    """The long-running units (no timer): ``ats-live@.service`` and ``ats-dashboard.service``.

    ``ats-live@<account>.service`` runs one account's live loop (``systemctl enable --now ats-live@aggr-1``),
    bound to that account (``--account %i``: its rows, files, locks), with its credentials from
    ``<root>/.env.<account>`` (mode 0600) and its loop arguments from ``<root>/.ats/accounts/<account>/live.env``
    (``ATS_LIVE_ARGS="--broker paper --symbols BTCUSDT,ETHUSDT --timeframe 1h"``); systemd restarts it after a
    crash and the loop resumes from its checkpoint (no duplicate order, no lost fill). The dashboard unit binds
    to loopback; ``<root>/.ats/dashboard.env`` (0600) holds ``ATS_DASHBOARD_TOKEN`` when it binds elsewhere.
    """
    ats = Path(sys.executable).parent / "ats"
    common = [f"User={user}", f"WorkingDirectory={root}", f"Environment=ATS_HOME={root}"]
    return {
        "ats-live@.service": "\n".join([
            HEADER.format(src="services/ats/ops/schedule.py (service_units)"),
            "[Unit]",
            "Description=ATS live loop of account %i",
            f"Documentation=file://{root / 'CLAUDE.md'}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            *common,
            f"EnvironmentFile=-{root}/.env.%i",
            f"EnvironmentFile=-{root}/.ats/accounts/%i/live.env",
            f"ExecStart={ats} --account %i live run --no-progress $ATS_LIVE_ARGS",
            "Restart=always",
            "RestartSec=10",
            "KillSignal=SIGTERM",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]),
        "ats-dashboard.service": "\n".join([
            HEADER.format(src="services/ats/ops/schedule.py (service_units)"),
            "[Unit]",
            "Description=ATS dashboard (FastAPI on loopback)",
            "After=network.target",
            "",
            "[Service]",
            "Type=simple",
            *common,
            f"EnvironmentFile=-{root}/.ats/dashboard.env",
            f"ExecStart={ats} dashboard --host 127.0.0.1 --port 8000",
            "Restart=on-failure",
            "RestartSec=5",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]),
    }
