"""Deterministic core of the git-workflow-agent and `/commit`: explicit paths, the day's plan, no push.

``commit(paths, hint)`` (``ats git commit --paths P... [--hint TEXT]``):

1. stages exactly ``paths`` (``git add -- P...``; a deleted path stages its deletion) and refuses when the index
   already holds staged changes outside them, or a path is outside the repository or is state/secrets
   (``.ats/``, ``logs/``, ``.venv/``, ``db_backups/``, ``.env*``);
2. when a staged change is under :data:`GUARDED` (``services/``, ``mcp_servers/``, ``tests/``), requires a plan
   saved today (UTC) in ``plans/`` (``YYYY-MM-DD_HHMM_<slug>.md``, :func:`todays_plans`); the plan must be
   committed already or be one of ``paths`` — it is committed with its implementation;
3. writes the message: subject = the plan's title (its first ``# `` heading) or the hint, body = the hint, the
   plan file and the list of paths; runs ``git commit`` (so the repository's hooks and author config apply).

There is no push: this module never pushes (not even without force); the operator pushes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from ..errors import AtsError, UsageError

GUARDED = ("services/", "mcp_servers/", "tests/")
NEVER_STAGE = (".ats/", "logs/", ".venv/", "db_backups/", ".git/")
PLAN_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{4})_[A-Za-z0-9._-]+\.md$")
SUBJECT_MAX = 72


@dataclass(frozen=True)
class Plan:
    """A saved plan: its path relative to the repository root, UTC date and time from the name, title."""

    path: str
    day: date
    hhmm: str
    title: str


@dataclass
class CommitResult:
    """What ``commit`` did: the new commit's hexsha, its message, the committed paths and the plan it cites."""

    sha: str
    message: str
    paths: list[str] = field(default_factory=list)
    plan: Plan | None = None


def plan_title(path: Path) -> str:
    """The first ``# `` heading of a plan, else its slug with dashes as spaces."""
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    except OSError:
        pass
    m = PLAN_RE.match(path.name)
    return path.stem.split("_", 2)[-1].replace("-", " ") if m else path.stem


def todays_plans(root: Path, today: date | None = None) -> list[Plan]:
    """Plans in ``<root>/plans`` whose name starts with today's UTC date, newest first.

    Parameters
    ----------
    root : Path
        Project (repository) root.
    today : date, optional
        The UTC date to match; default today in UTC.
    """
    today = today or datetime.now(timezone.utc).date()
    out = []
    for p in sorted((root / "plans").glob("*.md")) if (root / "plans").is_dir() else []:
        m = PLAN_RE.match(p.name)
        if m and m.group(1) == today.isoformat():
            out.append(Plan(f"plans/{p.name}", today, m.group(2), plan_title(p)))
    return sorted(out, key=lambda pl: (pl.hhmm, pl.path), reverse=True)


def _relative(root: Path, path: str) -> str:
    p = Path(path)
    full = (p if p.is_absolute() else root / p).resolve()
    try:
        rel = full.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"path {path} is outside the repository {root}") from None
    if rel in ("", "."):
        raise UsageError("stage explicit paths, not the repository root")
    if any((rel + "/").startswith(n) for n in NEVER_STAGE) or Path(rel).name.startswith(".env"):
        raise UsageError(f"path {rel} is state or secrets: never committed")
    return rel


def _staged(repo) -> list[str]:
    """Paths staged in the index (vs HEAD, or every index entry before the first commit)."""
    if not repo.head.is_valid():
        return sorted({Path(k[0]).as_posix() for k in repo.index.entries})
    names = set()
    for d in repo.index.diff("HEAD"):
        names.update(x for x in (d.a_path, d.b_path) if x)
    return sorted(names)


def _under(paths: list[str], staged: list[str]) -> list[str]:
    return [s for s in staged if any(s == p or s.startswith(p.rstrip("/") + "/") for p in paths)]


def build_message(plan: Plan | None, hint: str | None, paths: list[str]) -> str:
    """Subject from the plan title (else the hint), then a body with the hint, the plan and the paths."""
    subject = (plan.title if plan else (hint or "")).strip()
    if not subject:
        raise UsageError("a commit without today's plan needs --hint (the message)")
    if len(subject) > SUBJECT_MAX:
        subject = subject[:SUBJECT_MAX - 1].rstrip() + "…"
    body = []
    if plan and hint:
        body.append(hint.strip())
    if plan:
        body.append(f"Plan: {plan.path}")
    body.append("Paths: " + ", ".join(paths[:20]) + (f" (+{len(paths) - 20} more)" if len(paths) > 20 else ""))
    return subject + "\n\n" + "\n\n".join(body) + "\n"


def commit(paths: list[str], hint: str | None = None, *, root: Path | None = None,
           today: date | None = None) -> CommitResult:
    """Stage exactly ``paths`` and commit them (see the module docstring for the rules).

    Parameters
    ----------
    paths : list of str
        Files or directories, relative to ``root`` (or absolute inside it). Required.
    hint : str, optional
        Extra message text (the subject when no plan applies).
    root : Path, optional
        Repository root; default the project root.
    today : date, optional
        UTC date the plan must carry (tests); default today.

    Returns
    -------
    CommitResult

    Raises
    ------
    UsageError
        No paths, a path outside the repository / state / secrets, nothing to commit.
    AtsError
        Staged changes outside ``paths``; guarded changes without today's plan; the plan not in the commit;
        ``git commit`` failed (a hook refused: its output is in the message).
    """
    import git

    from ..paths import project_root

    root = Path(root or project_root())
    if not paths:
        raise UsageError("ats git commit needs --paths P... (explicit paths only, never -A)")
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise AtsError(f"{root} is not a git repository") from exc
    rel = [_relative(root, p) for p in paths]
    before = _staged(repo)
    outside = [s for s in before if s not in _under(rel, before)]
    if outside:
        raise AtsError(f"the index already holds staged changes outside --paths: {', '.join(outside[:10])} "
                       f"(unstage them with `git restore --staged PATH` or name them)")
    try:
        repo.git.add("--all", "--", *rel)
    except git.GitCommandError as exc:
        raise AtsError(f"git add failed: {exc.stderr.strip() or exc}") from exc
    staged = _staged(repo)
    if not staged:
        raise UsageError(f"nothing to commit in {', '.join(rel)}")
    plan = None
    if any(s.startswith(GUARDED) for s in staged):
        plans = todays_plans(root, today)
        if not plans:
            _unstage(repo, staged)
            day = (today or datetime.now(timezone.utc).date()).isoformat()
            raise AtsError(f"changes under {', '.join(g for g in GUARDED if any(s.startswith(g) for s in staged))} "
                           f"need a plan saved today: no plans/{day}_*.md (run /save-plan \"title\" first)")
        plan = plans[0]
        if plan.path not in staged and plan.path in repo.untracked_files + [d.a_path for d in repo.index.diff(None)]:
            _unstage(repo, staged)
            raise AtsError(f"{plan.path} is not committed: add it to --paths (the plan goes in with its code)")
    elif hint is None:
        plans = todays_plans(root, today)
        plan = next((p for p in plans if p.path in staged), None)
    message = build_message(plan, hint, staged)
    try:
        repo.git.commit("-m", message)
    except git.GitCommandError as exc:
        raise AtsError(f"git commit failed: {(exc.stderr or exc.stdout or str(exc)).strip()[:500]}") from exc
    return CommitResult(sha=repo.head.commit.hexsha, message=message, paths=staged, plan=plan)


def _unstage(repo, paths: list[str]) -> None:
    """Put the index back for ``paths`` (a refused commit leaves nothing staged that was not staged before)."""
    if repo.head.is_valid():
        repo.git.reset("-q", "HEAD", "--", *paths)
    else:
        repo.git.rm("-q", "--cached", "-r", "--", *paths)


def commits_since(root: Path, since: datetime) -> list[dict]:
    """Commits on HEAD since ``since`` (UTC): ``[{sha, subject, at}]`` newest first (for session summaries)."""
    import git

    try:
        repo = git.Repo(root)
        if not repo.head.is_valid():
            return []
        out = []
        for c in repo.iter_commits("HEAD", since=since.isoformat()):
            out.append({"sha": c.hexsha[:12], "subject": c.summary,
                        "at": c.committed_datetime.astimezone(timezone.utc).isoformat(timespec="seconds")})
        return out
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return []


# ---- /close-session -----------------------------------------------------------------------------------

@dataclass
class Step:
    """One step of ``close_session``: name, exit code (0 = ok), the last lines of its output."""

    name: str
    exit_code: int
    output: str


def _run_ats(argv: list[str], root: Path, timeout_s: float = 1800) -> Step:
    import os
    import subprocess
    import sys

    env = dict(os.environ, ATS_HOME=str(root))
    try:
        res = subprocess.run([sys.executable, "-m", "ats.cli", *argv], cwd=root, env=env, capture_output=True,
                             text=True, timeout=timeout_s)
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        return Step("ats " + " ".join(argv), res.returncode, tail)
    except subprocess.TimeoutExpired:
        return Step("ats " + " ".join(argv), 124, f"timed out after {timeout_s:.0f}s")


def close_session(*, paths: list[str] | None = None, hint: str | None = None, root: Path | None = None,
                  backup: bool = True, health: bool = True, now: datetime | None = None) -> tuple[Path, list[Step]]:
    """Close an interactive session: commit (if ``paths``), DB backup, health check, summary report.

    The summary ``reports/sessions/<YYYY-MM-DD_HHMM>_session.md`` lists each step with its exit code and output
    tail, today's plans and commits (UTC day), and what is left uncommitted (``git status --short``).

    Returns
    -------
    (Path, list of Step)
        The summary path and the steps. ``ats health-check`` exiting 1 is a finding, not a failed step.
    """
    import git

    from ..paths import project_root

    root = Path(root or project_root())
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    steps: list[Step] = []
    if paths:
        try:
            res = commit(paths, hint, root=root, today=now.date())
            steps.append(Step("commit", 0, f"{res.sha[:12]} {res.message.splitlines()[0]}"))
        except AtsError as exc:
            steps.append(Step("commit", 1, str(exc)))
    if backup:
        steps.append(_run_ats(["db", "backup"], root))
    if health:
        steps.append(_run_ats(["health-check"], root))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        status = git.Repo(root).git.status("--short")
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        status = "(not a git repository)"
    lines = [f"# Session summary {now:%Y-%m-%d %H:%M} UTC", "", "## Steps", "",
             "| step | exit | output (tail) |", "| --- | --- | --- |"]
    for s in steps:
        lines.append(f"| {s.name} | {s.exit_code} | {s.output.replace(chr(10), '<br>').replace('|', '/')} |")
    if not steps:
        lines.append("| (none) | - | - |")
    lines += ["", "## Plans saved today", ""] + [f"- `{p.path}` — {p.title}" for p in todays_plans(root, now.date())]
    lines += ["", "## Commits today", ""] + [f"- `{c['sha']}` {c['subject']} ({c['at']})"
                                             for c in commits_since(root, midnight)]
    lines += ["", "## Left uncommitted", "", "```", status or "(clean)", "```", ""]
    out = root / "reports" / "sessions" / f"{now:%Y-%m-%d_%H%M}_session.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out, steps
