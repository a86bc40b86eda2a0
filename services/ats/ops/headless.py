"""Headless Claude Code runs: `.claude-cron/run.sh TASK [ARGS]` -> `ats run TASK [ARGS]` -> run_task().

One run, in order:
  1. take the per-task lock ``.ats/locks/cron-<task>.lock`` (flock, non-blocking): a second run of the same task
     raises BusyError ("busy", exit 1) and is recorded as a ``cron_busy`` event;
  2. render the run's MCP config (``.ats/cron/<task>.mcp.json``: the servers of ``.mcp.json``, with
     ``--allow-writes`` for ats-postgres only when the task's allowlist holds one of its write tools) and
     settings (``.ats/cron/<task>.settings.json``: a deny list = the project's deny list with absolute paths,
     the headless denies, and the project's interactive allows that the task does not have);
  3. run ``claude --print "/<command> ARGS" --output-format json --mcp-config F --strict-mcp-config
     --setting-sources project --settings S --permission-mode dontAsk --max-turns N --allowedTools <task
     allowlist>`` under a wall-clock timeout (the whole process group is killed on expiry). Only the
     'project' setting source is loaded (it carries the slash commands; user and local settings could widen
     the run), and the deny list cancels the project's allows beyond the task's own;
  4. when the claude binary is missing, or it answers "Not logged in" / an authentication error / an API
     error before any turn, run the task's deterministic core (`ats ...`) instead and say so;
  5. check the task's declared artifact (``Task.artifact``: e.g. investigate leaves
     ``reports/investigations/*_<SYMBOL>.md``) exists and is newer than the run's start; when Claude Code
     returned without it, run the deterministic core so it lands (with at least ARTIFACT_CORE_MIN_S seconds,
     even past the run's timeout), record ``artifact_missing`` in the payload and exit ARTIFACT_MISSING_EXIT
     (unless the run had already failed with its own code): a timer that silently produced nothing is a
     failed run;
  6. append everything to ``logs/cron/<task>.log`` and record one ``system_events`` row (component 'cron',
     event_type 'cron_run') whose payload holds mode, exit code, and the parsed JSON result: is_error,
     subtype, num_turns, total_cost_usd, permission_denials, session_id; ``artifact`` {expected, paths,
     produced_by} when the artifact was found, ``artifact_missing`` {expected, description, newer_than, after,
     core_exit_code, landed, paths} when it was not.
The exit code is 0 only when the run succeeded (claude: ``is_error`` false and subtype 'success'; core: every
command exited 0), its artifact exists, and its event was recorded.

The claude binary: ``ATS_CLAUDE_BIN``; else ``claude`` on PATH; else the pinned test install
``$ATS_CLAUDE_CACHE`` or ``~/.cache/ats/claude-code``/node_modules/.bin/claude.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..errors import AtsError, BusyError, UsageError
from ..paths import account_path, logs_dir, project_root
from .tasks import PG, PG_WRITE_TOOLS, Artifact, Task, get_task

CLAUDE_VERSION = "2.1.329"  # the version the end-to-end test pins
CRON_LOG_MAX_BYTES = 10 * 1024 * 1024
CRON_LOG_BACKUPS = 5
ARTIFACT_MISSING_EXIT = 3  # the run ended without its declared artifact (the core may have recovered it)
ARTIFACT_CORE_MIN_S = 120  # seconds the recovery core gets even when the run's timeout is (nearly) used up
RESULT_CLIP = 4000  # characters of the model's final text kept in the system_events payload (all of it is in the log)

#: Always denied in headless runs, on top of the project's deny list (deny beats allow in Claude Code).
HEADLESS_DENY = (
    "Bash(rm:*)", "Bash(git push:*)", "Bash(git commit:*)", "Bash(git reset:*)", "Bash(git checkout:*)",
    "Bash(psql:*)", "Bash(ats db:*)", "Bash(ats config:*)", "Bash(ats demo:*)", "Bash(sudo:*)",
    "Bash(systemctl:*)", "Bash(crontab:*)", "WebFetch", "WebSearch",
    "Bash(ats * --out-dir*)",  # the report cores write under reports/ only: no redirecting them elsewhere
)

# Signs that Claude Code cannot reach a model at all (so the deterministic core must run instead).
_NO_MODEL_MARKERS = ("not logged in", "invalid api key", "please run /login", "authentication_error",
                     "oauth token has expired", "credit balance is too low")


@dataclass
class RunResult:
    """Outcome of one headless run. ``mode`` is 'claude', 'core' (fallback or core-only) or 'busy'."""

    task: str
    args: list[str]
    mode: str
    exit_code: int
    summary: str
    claude: dict | None = None          # parsed JSON result of claude --print (fields below)
    fallback_reason: str | None = None
    core_runs: list[dict] = field(default_factory=list)   # [{argv, exit_code, duration_s}]
    event_id: int | None = None
    duration_s: float = 0.0
    log_path: str | None = None
    artifact: dict | None = None            # {expected, paths, produced_by} when the declared artifact exists
    artifact_missing: dict | None = None    # {expected, description, newer_than, after, ...} when it did not

    def payload(self) -> dict:
        """The system_events payload (JSON-serialisable)."""
        doc = {"task": self.task, "args": self.args, "mode": self.mode, "exit_code": self.exit_code,
               "summary": self.summary, "duration_s": round(self.duration_s, 3), "log": self.log_path}
        if self.claude is not None:
            doc.update({k: self.claude.get(k) for k in CLAUDE_FIELDS})
            if isinstance(doc.get("result"), str) and len(doc["result"]) > RESULT_CLIP:
                doc["result"] = doc["result"][:RESULT_CLIP] + f"...[{len(doc['result']) - RESULT_CLIP} more chars]"
        if self.fallback_reason:
            doc["fallback_reason"] = self.fallback_reason
        if self.core_runs:
            doc["core_runs"] = self.core_runs
        if self.artifact is not None:
            doc["artifact"] = self.artifact
        if self.artifact_missing is not None:
            doc["artifact_missing"] = self.artifact_missing
        return doc


CLAUDE_FIELDS = ("is_error", "subtype", "num_turns", "total_cost_usd", "permission_denials", "session_id",
                 "terminal_reason", "result")


# ---- locating things ------------------------------------------------------------------------------------

def claude_cache_dir() -> Path:
    """Where the pinned Claude Code CLI is installed by the tests: ``ATS_CLAUDE_CACHE`` or ~/.cache/ats/claude-code."""
    env = os.environ.get("ATS_CLAUDE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ats" / "claude-code"


def find_claude() -> str | None:
    """Path of the claude binary (``ATS_CLAUDE_BIN``, PATH, then the cache install) or None when there is none.

    An ``ATS_CLAUDE_BIN`` that does not exist counts as missing (the run falls back to the core and says so).
    """
    env = os.environ.get("ATS_CLAUDE_BIN")
    if env is not None:
        p = Path(env)
        return str(p) if env and p.is_file() and os.access(p, os.X_OK) else None
    on_path = shutil.which("claude")
    if on_path:
        return on_path
    cached = claude_cache_dir() / "node_modules" / ".bin" / "claude"
    return str(cached) if cached.exists() and os.access(cached, os.X_OK) else None


def cron_log_path(task: str) -> Path:
    """``logs/cron/<task>.log`` (created on first use)."""
    return logs_dir() / "cron" / f"{task}.log"


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


# ---- per-task lock ------------------------------------------------------------------------------------

class TaskLock:
    """An exclusive, non-blocking flock on ``.ats/locks/cron-<task>.lock``; released when the process exits."""

    def __init__(self, task: str):
        self.path = account_path("locks") / f"cron-{task}.lock"  # per account (ats.paths seam)
        self._fh: TextIO | None = None

    def acquire(self) -> None:
        """Take the lock or raise BusyError naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise BusyError(f"task {self.path.stem.removeprefix('cron-')} is already running "
                            f"(lock {self.path} held by pid {holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "TaskLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- rendered config ----------------------------------------------------------------------------------

def project_mcp_servers(root: Path | None = None) -> dict:
    """The ``mcpServers`` of the project's ``.mcp.json`` (AtsError when it is missing or malformed)."""
    root = root or project_root()
    path = root / ".mcp.json"
    if not path.is_file():
        raise AtsError(f"{path} not found: the MCP servers are declared there")
    try:
        servers = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AtsError(f"{path}: not a valid MCP config ({exc})") from exc
    return servers


def headless_mcp_config(task: Task, root: Path | None = None) -> dict:
    """The MCP config of one headless run: ``.mcp.json``'s servers launched the same way, with absolute paths
    for relative commands/args that exist under the root, ``--allow-writes`` on ats-postgres iff the task's
    allowlist holds a write tool, and ``ATS_HOME`` set so the servers write where the run reads."""
    root = (root or project_root()).resolve()
    servers = json.loads(json.dumps(project_mcp_servers(root)))  # deep copy
    for name, spec in servers.items():
        cmd = spec.get("command", "")
        if cmd and not os.path.isabs(cmd) and (root / cmd).exists():
            spec["command"] = str(root / cmd)
        args = [str(root / a) if a and not os.path.isabs(a) and not a.startswith("-") and "/" in a
                and (root / a).exists() else a for a in spec.get("args", [])]
        if name == "ats-postgres":
            if task.pg_write_tools():
                if "--allow-writes" not in args:
                    args.append("--allow-writes")
            else:
                args = [a for a in args if a != "--allow-writes"]
        spec["args"] = args
        env = dict(spec.get("env") or {})
        env.setdefault("ATS_HOME", str(root))
        spec["env"] = env
    return {"mcpServers": servers}


def _absolute_rule(rule: str, root: Path) -> str:
    """Make a project-relative path rule (``Edit(/reports/**)``) absolute (``Edit(//abs/root/reports/**)``).

    In a ``--settings`` file a leading ``/`` is relative to that file's directory, not to the project, so the
    rendered headless settings use ``//`` (absolute) paths.
    """
    for tool in ("Edit", "Write", "Read"):
        prefix = f"{tool}(/"
        if rule.startswith(prefix) and not rule.startswith(f"{tool}(//"):
            return f"{tool}(/{root}/{rule[len(prefix):]}"
    return rule


def rule_covers(broad: str, narrow: str) -> bool:
    """True when permission rule ``broad`` matches everything ``narrow`` matches (so denying ``broad`` would
    also deny ``narrow``): equal rules, a bare tool name over its patterns, ``Bash(P:*)`` over
    ``Bash(P ...:*)``, a path glob ``Tool(/d/**)`` over ``Tool(/d/...)``."""
    if broad == narrow:
        return True
    btool, _, bspec = broad.partition("(")
    ntool, _, nspec = narrow.partition("(")
    if btool != ntool:
        return False
    if not bspec:
        return True
    if not nspec:
        return False
    bspec, nspec = bspec.rstrip(")"), nspec.rstrip(")")
    if btool == "Bash" and bspec.endswith(":*"):
        prefix = bspec[:-2]
        inner = nspec[:-2] if nspec.endswith(":*") else nspec
        return inner == prefix or inner.startswith(prefix + " ")
    if bspec.endswith("/**"):
        return nspec.startswith(bspec[:-2])
    return False


def headless_settings(task: Task, root: Path | None = None) -> dict:
    """``--settings`` of a headless run: deny = the project's deny list (absolute paths), HEADLESS_DENY, and
    every rule of the project's interactive allow list that is not in the task's allowlist — deny beats
    allow, so the run gets exactly its task's allowlist although project settings are loaded (they must be:
    Claude Code loads project slash commands only with the 'project' setting source).

    Raises AtsError when a project allow rule is broader than a rule of the task (e.g. ``Bash(ats report:*)``
    over ``Bash(ats report weekly:*)``): denying it would deny the task's own tool; use narrow rules.
    """
    root = (root or project_root()).resolve()
    perms: dict = {}
    path = root / ".claude" / "settings.json"
    if path.is_file():
        try:
            perms = json.loads(path.read_text(encoding="utf-8")).get("permissions", {})
        except json.JSONDecodeError as exc:
            raise AtsError(f"{path}: invalid JSON ({exc})") from exc
    extra = []
    for rule in perms.get("allow", []):
        if rule in task.allowed_tools:
            continue
        for own in task.allowed_tools:
            if rule_covers(rule, own):
                raise AtsError(f"{path}: allow rule {rule!r} covers {own!r} of task {task.name}: a headless run "
                               f"cannot deny it without denying its own tool; split it into narrow rules")
        extra.append(rule)
    rules = [_absolute_rule(r, root) for r in [*perms.get("deny", []), *extra]] + list(HEADLESS_DENY)
    seen: set[str] = set()
    rules = [r for r in rules if not (r in seen or seen.add(r))]
    return {"permissions": {"allow": [], "deny": rules}}


def claude_argv(binary: str, task: Task, args: list[str], mcp_path: Path, settings_path: Path,
                prompt: str | None = None, allowed_tools: tuple[str, ...] | None = None,
                max_turns: int | None = None) -> list[str]:
    """The exact `claude --print` command line of a headless run."""
    tools = list(allowed_tools if allowed_tools is not None else task.allowed_tools)
    argv = [binary, "--print", prompt if prompt is not None else task.prompt(args),
            "--output-format", "json",
            "--mcp-config", str(mcp_path), "--strict-mcp-config",
            "--setting-sources", "project", "--settings", str(settings_path),
            "--permission-mode", "dontAsk",
            "--max-turns", str(max_turns or task.max_turns)]
    if tools:
        argv += ["--allowedTools", ",".join(tools)]
    return argv


# ---- process running ----------------------------------------------------------------------------------

@dataclass
class ProcOutcome:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float


def run_process(argv: list[str], *, cwd: Path, env: dict, timeout_s: float) -> ProcOutcome:
    """Run ``argv`` in its own process group; on timeout SIGTERM then SIGKILL the whole group."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, err = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = "", ""
    return ProcOutcome(proc.returncode if proc.returncode is not None else -9, out or "", err or "", timed_out,
                       time.monotonic() - t0)


def parse_claude_json(stdout: str) -> dict | None:
    """The result object of ``claude --print --output-format json`` (the last JSON object line), or None."""
    text = stdout.strip()
    if not text:
        return None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "is_error" in doc:
                return doc
    return None


def no_model_reason(doc: dict | None, proc: ProcOutcome) -> str | None:
    """Why Claude Code could not reach a model (so the core should run), or None when it did run."""
    if proc.timed_out:
        return None
    if doc is None:
        blob = (proc.stdout + proc.stderr).lower()
        for m in _NO_MODEL_MARKERS:
            if m in blob:
                return f"claude: {m}"
        return None
    if not doc.get("is_error"):
        return None
    result = str(doc.get("result") or "")
    low = result.lower()
    if any(m in low for m in _NO_MODEL_MARKERS) or doc.get("api_error_status") in (401, 403):
        return f"claude: {result.strip() or 'authentication error'}"
    if doc.get("terminal_reason") == "api_error" and int(doc.get("num_turns") or 0) <= 1:
        return f"claude: model API unreachable ({result.strip()[:200]})"
    return None


# ---- logging ------------------------------------------------------------------------------------------

class CronLog:
    """Appends one run's transcript to ``logs/cron/<task>.log`` (size-rotated: ATS_CRON_LOG_MAX_BYTES,
    default 10 MB, x CRON_LOG_BACKUPS files) and echoes summary lines to stdout."""

    def __init__(self, task: str, echo: TextIO | None = None):
        self.path = cron_log_path(task)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate()
        self.echo = echo

    def _rotate(self) -> None:
        limit = int(os.environ.get("ATS_CRON_LOG_MAX_BYTES", CRON_LOG_MAX_BYTES))
        if not self.path.exists() or self.path.stat().st_size < limit:
            return
        for i in range(CRON_LOG_BACKUPS - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def write(self, text: str, *, echo: bool = False) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        if echo and self.echo is not None:
            print(text.rstrip("\n"), file=self.echo, flush=True)

    def block(self, title: str, body: str) -> None:
        if body.strip():
            self.write(f"--- {title} ---\n{body.rstrip()}\n--- end {title} ---")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_run_event(result: RunResult, event_type: str = "cron_run") -> int:
    """Append the run's system_events row (component 'cron'); returns event_id. AtsError when the database
    cannot be reached (the caller turns that into a non-zero exit: an unrecorded run is a failed run)."""
    from ..db import connect
    from ..db.events import record_event

    severity = "info" if result.exit_code == 0 else ("warning" if result.mode == "busy" else "error")
    if result.fallback_reason and result.exit_code == 0:
        severity = "warning"
    with connect(application_name="ats-cron") as conn:
        with conn.transaction():
            return record_event(conn, "cron", event_type, severity=severity, payload=result.payload(),
                                symbol=(result.args[0].upper() if result.task == "investigate" and result.args
                                        else None))


# ---- the runner ---------------------------------------------------------------------------------------

def _child_env(root: Path) -> dict:
    env = dict(os.environ)
    env["ATS_HOME"] = str(root)
    env["PATH"] = _venv_bin() + os.pathsep + env.get("PATH", "")
    env.setdefault("ATS_LOG_DIR", str(logs_dir()))
    env["ATS_HEADLESS"] = "1"  # the PreToolUse hook (ats.ops.hooks) allows headless writes only under reports/ kb/ plans/
    return env


def _run_core(task_name: str, argvs: list[list[str]], *, root: Path, env: dict, deadline: float,
              log: CronLog) -> list[dict]:
    runs = []
    for argv in argvs:
        full = [sys.executable, "-m", "ats.cli", *argv]
        log.write(f"{_now()} core: ats {' '.join(argv)}", echo=True)
        remaining = max(1.0, deadline - time.monotonic())
        out = run_process(full, cwd=root, env=env, timeout_s=remaining)
        log.block("core stdout", out.stdout)
        log.block("core stderr", out.stderr)
        if out.stdout.strip() and log.echo is not None:
            print(out.stdout.rstrip("\n"), file=log.echo, flush=True)
        if out.stderr.strip() and log.echo is not None:
            print(out.stderr.rstrip("\n"), file=sys.stderr, flush=True)
        rc = 124 if out.timed_out else out.returncode
        runs.append({"argv": ["ats", *argv], "exit_code": rc, "duration_s": round(out.duration_s, 3),
                     "timed_out": out.timed_out})
        if rc != 0:
            break
    return runs


def run_task(task_name: str, args: list[str], *, core_only: bool = False, timeout_s: float | None = None,
             max_turns: int | None = None, echo: TextIO | None = sys.stdout, record: bool = True,
             force: bool = False) -> RunResult:
    """Run one headless task (see module docstring). Raises BusyError when the task is already running and
    UsageError for a bad task or arguments; every other outcome is a RunResult (exit_code non-zero on failure).

    ``task_name`` 'prompt' with ``args == [NAME]`` runs the one-shot prompt ``.claude-cron/prompts/NAME.md``
    once: a later run only reports that it already ran (mode 'skipped', exit 0) unless ``force``.
    """
    root = project_root().resolve()
    if task_name == "prompt":
        from .schedule import load_prompt
        if len(args) != 1:
            raise UsageError("prompt needs exactly one NAME (a file .claude-cron/prompts/NAME.md)")
        prompt_spec = load_prompt(args[0], root)
        task = prompt_spec.as_task()
        log_name = f"prompt-{prompt_spec.name}"
        run_args: list[str] = []
    else:
        task = get_task(task_name)
        prompt_spec = None
        log_name = task.name
        run_args = list(args)
        task.core(run_args)  # validate arguments before taking the lock (UsageError)

    lock = TaskLock(log_name)
    log = CronLog(log_name, echo=echo)
    try:
        lock.acquire()
    except BusyError as exc:
        log.write(f"{_now()} busy: {exc}", echo=False)
        busy = RunResult(task=log_name, args=run_args, mode="busy", exit_code=75, summary=str(exc),
                         log_path=str(log.path))
        if record:
            try:
                busy.event_id = record_run_event(busy, "cron_busy")
            except AtsError:
                pass
        raise
    t0 = time.monotonic()
    try:
        done = prompt_spec.done() if prompt_spec is not None and not force else None
        if done is not None:
            summary = (f"{log_name}: one-shot prompt already ran at {done.get('at')} ({done.get('mode')}); "
                       f"nothing to do (ats run --force prompt {prompt_spec.name} to run it again)")
            log.write(f"{_now()} {summary}", echo=True)
            result = RunResult(task=log_name, args=run_args, mode="skipped", exit_code=0, summary=summary,
                               log_path=str(log.path))
            if record:
                try:
                    result.event_id = record_run_event(result)
                except AtsError as exc:
                    log.write(f"{_now()} ERROR could not record the run in system_events: {exc}", echo=True)
                    result.exit_code = 1
            return result
        result = _run_locked(task, prompt_spec, run_args, root=root, log=log, core_only=core_only,
                             timeout_s=timeout_s or task.timeout_s, max_turns=max_turns)
        result.task = log_name
        result.duration_s = time.monotonic() - t0
        result.log_path = str(log.path)
        if prompt_spec is not None and result.exit_code == 0:
            prompt_spec.mark_done(result)
        if record:
            try:
                result.event_id = record_run_event(result)
                log.write(f"{_now()} recorded system_events event_id={result.event_id}", echo=False)
            except AtsError as exc:
                msg = f"could not record the run in system_events: {exc}"
                log.write(f"{_now()} ERROR {msg}", echo=True)
                result.summary += f"; {msg}"
                if result.exit_code == 0:
                    result.exit_code = 1
        log.write(f"{_now()} end: exit {result.exit_code}: {result.summary}")
        log.write("=" * 100)
        return result
    finally:
        lock.release()


def _run_locked(task: Task, prompt_spec, args: list[str], *, root: Path, log: CronLog, core_only: bool,
                timeout_s: float, max_turns: int | None) -> RunResult:
    deadline = time.monotonic() + timeout_s
    started = time.time()
    env = _child_env(root)
    label = task.name
    log.write(f"{_now()} start: task {label} args {json.dumps(args)} root {root} timeout {int(timeout_s)}s")

    fallback_reason = None
    claude_doc = None
    if core_only or task.command is None and prompt_spec is None:
        fallback_reason = None if task.command is None and prompt_spec is None else "--core-only requested"
    else:
        binary = find_claude()
        if binary is None:
            where = os.environ.get("ATS_CLAUDE_BIN") or "PATH or " + str(claude_cache_dir())
            fallback_reason = f"Claude Code not found (ATS_CLAUDE_BIN / {where})"
        else:
            try:
                mcp_doc = headless_mcp_config(task, root)
            except AtsError as exc:
                mcp_doc = None
                fallback_reason = f"no MCP config for Claude Code: {exc}"
            if mcp_doc is not None:
                cfg_dir = account_path("cron")
                cfg_dir.mkdir(parents=True, exist_ok=True)
                mcp_path = cfg_dir / f"{label}.mcp.json"
                settings_path = cfg_dir / f"{label}.settings.json"
                mcp_path.write_text(json.dumps(mcp_doc, indent=2), encoding="utf-8")
                settings_path.write_text(json.dumps(headless_settings(task, root), indent=2), encoding="utf-8")
                argv = claude_argv(binary, task, args, mcp_path, settings_path,
                                   prompt=prompt_spec.text if prompt_spec else None, max_turns=max_turns)
                log.write(f"{_now()} claude: {json.dumps(argv)}", echo=False)
                print(f"{label}: running Claude Code headless ({prompt_spec.name if prompt_spec else task.prompt(args)})",
                      file=log.echo or sys.stderr, flush=True)
                proc = run_process(argv, cwd=root, env=env, timeout_s=max(1.0, deadline - time.monotonic()))
                log.block("claude stdout", proc.stdout)
                log.block("claude stderr", proc.stderr)
                claude_doc = parse_claude_json(proc.stdout)
                fallback_reason = no_model_reason(claude_doc, proc)
                if fallback_reason is None:
                    res = _claude_result(label, args, proc, claude_doc, log, timeout_s)
                    art = task.expected_artifact(args) if prompt_spec is None else None
                    return _check_artifact(res, art, started, task=task, root=root, env=env, deadline=deadline,
                                           log=log)

    # deterministic core: core-only task, --core-only, or no model available
    if fallback_reason:
        log.write(f"{label}: {fallback_reason}; running the deterministic core instead "
                  f"(ats {' | ats '.join(' '.join(a) for a in _core_argvs(task, prompt_spec, args))})", echo=True)
    argvs = _core_argvs(task, prompt_spec, args)
    if not argvs:
        summary = (f"{label}: {fallback_reason}; this prompt has no deterministic core (add 'core:' to its "
                   f"frontmatter), nothing was run")
        log.write(summary, echo=True)
        return RunResult(task=label, args=args, mode="core", exit_code=1, summary=summary, claude=claude_doc,
                         fallback_reason=fallback_reason)
    runs = _run_core(label, argvs, root=root, env=env, deadline=deadline, log=log)
    rc = next((r["exit_code"] for r in runs if r["exit_code"] != 0), 0)
    what = "deterministic core" + (" (fallback)" if fallback_reason else "")
    summary = (f"{label}: {what} {'ok' if rc == 0 else f'failed (exit {rc})'}: "
               + "; ".join(" ".join(r["argv"]) for r in runs))
    if fallback_reason:
        summary += f" — Claude Code was not used: {fallback_reason}"
    log.write(summary, echo=True)
    res = RunResult(task=label, args=args, mode="core", exit_code=rc, summary=summary, claude=claude_doc,
                    fallback_reason=fallback_reason, core_runs=runs)
    art = task.expected_artifact(args) if prompt_spec is None else None
    return _check_artifact(res, art, started, task=task, root=root, env=env, deadline=deadline, log=log)


def _rel(paths: list[Path], root: Path) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(p.relative_to(root).as_posix())
        except ValueError:
            out.append(str(p))
    return out


def _check_artifact(res: RunResult, art: Artifact | None, started: float, *, task: Task, root: Path, env: dict,
                    deadline: float, log: CronLog) -> RunResult:
    """Verify the run left ``art`` (newer than ``started``, Unix s); see step 5 of the module docstring.

    Parameters
    ----------
    res : RunResult
        The outcome so far (mode 'claude' or 'core'); updated in place and returned.
    art : Artifact or None
        The declared artifact (None: nothing to check).
    started : float
        The run's start, Unix seconds.
    task, root, env, deadline, log
        To run the deterministic core when Claude Code left nothing.

    Returns
    -------
    RunResult
        ``res`` with ``artifact`` or ``artifact_missing`` set, and a non-zero exit code when it was missing.
    """
    if art is None:
        return res
    found = art.found(root, started)
    if found:
        res.artifact = {"expected": art.pattern, "paths": _rel(found, root), "produced_by": res.mode}
        return res
    missing: dict = {"expected": art.pattern, "description": art.description,
                     "newer_than": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
                     "after": res.mode}
    label = res.task
    if res.mode == "claude":
        log.write(f"{label}: Claude Code returned without {art.description} ({art.pattern}, newer than the run's "
                  f"start); running the deterministic core so it lands", echo=True)
        core_deadline = max(deadline, time.monotonic() + ARTIFACT_CORE_MIN_S)
        runs = _run_core(label, task.core(res.args), root=root, env=env, deadline=core_deadline, log=log)
        res.core_runs = runs
        found = art.found(root, started)
        missing.update(core_exit_code=next((r["exit_code"] for r in runs if r["exit_code"] != 0), 0),
                       landed=bool(found), paths=_rel(found, root))
    else:
        missing.update(landed=False, paths=[])
    res.artifact_missing = missing
    if res.exit_code == 0:
        res.exit_code = ARTIFACT_MISSING_EXIT
    how = ("the deterministic core then wrote " + ", ".join(missing["paths"]) if missing.get("landed")
           else "and the deterministic core did not produce it either")
    note = f"ARTIFACT MISSING: {art.description} ({art.pattern}) was not written by the run, {how}"
    res.summary += f"; {note}"
    log.write(f"{label}: {note} (exit {res.exit_code}); artifact_missing {json.dumps(missing)}", echo=True)
    return res


def _core_argvs(task: Task, prompt_spec, args: list[str]) -> list[list[str]]:
    if prompt_spec is not None:
        return prompt_spec.core_argvs()
    return task.core(args)


def _claude_result(label: str, args: list[str], proc: ProcOutcome, doc: dict | None, log: CronLog,
                   timeout_s: float) -> RunResult:
    if proc.timed_out:
        summary = f"{label}: Claude Code timed out after {int(timeout_s)}s (process group killed)"
        doc = doc or {}
        doc.setdefault("is_error", True)
        doc["subtype"] = "timeout"
        rc = 124
    elif doc is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        summary = f"{label}: Claude Code exited {proc.returncode} without a JSON result: {tail[0][:300]}"
        doc = {"is_error": True, "subtype": "no_result", "exit_status": proc.returncode}
        rc = proc.returncode or 1
    else:
        ok = not doc.get("is_error") and doc.get("subtype") == "success"
        denials = doc.get("permission_denials") or []
        cost = doc.get("total_cost_usd")
        summary = (f"{label}: Claude Code {'ok' if ok else 'FAILED'} (subtype {doc.get('subtype')}, "
                   f"{doc.get('num_turns')} turns, ${cost if cost is not None else '?'}, "
                   f"{len(denials)} permission denial(s)"
                   + (": " + ", ".join(d.get("tool_name", "?") for d in denials) if denials else "") + ")")
        rc = 0 if ok else (proc.returncode or 1)
        result_text = str(doc.get("result") or "").strip()
        if result_text and log.echo is not None:
            print(result_text, file=log.echo, flush=True)
    log.write(summary, echo=True)
    return RunResult(task=label, args=args, mode="claude", exit_code=rc, summary=summary, claude=doc)
