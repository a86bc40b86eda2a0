"""Deterministic core of the github-issues-agent: GitHub issues over the ``gh`` CLI.

Every call goes through :func:`gh` (binary ``ATS_GH_BIN`` or ``gh`` on PATH; ``--repo OWNER/NAME`` passed as
``-R``). Without ``gh``, without network or without a login each command fails with ONE line saying so
(:class:`GhUnavailable`, exit 1) — nothing is retried or queued.

==================  ===================================================================================
``list_issues``     ``gh issue list --state S --limit N [--label L] --json number,title,state,labels,...``
``create_issue``    ``gh issue create --title T --body B [--label L]...`` -> the new issue's URL
``close_issue``     ``gh issue close N [--comment C] [--reason completed|not planned]``
``comment_issue``   ``gh issue comment N --body B``
``link_commits``    commits whose message names ``#N`` (or a ``--range A..B``), posted as one comment
==================  ===================================================================================
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import AtsError, UsageError

NETWORK_HINTS = ("error connecting to", "could not resolve host", "dial tcp", "connection refused", "timeout",
                 "network is unreachable", "no such host")
AUTH_HINTS = ("gh auth login", "not logged in", "authentication", "http 401", "bad credentials")
LIST_FIELDS = "number,title,state,labels,updatedAt,url"
TIMEOUT_S = 60


class GhUnavailable(AtsError):
    """``gh`` is missing, offline or not logged in: the message is the one line the operator sees."""


@dataclass
class GhCall:
    """One finished ``gh`` call: argv (without the binary), exit code, stdout, stderr."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def gh_binary() -> str:
    """``ATS_GH_BIN`` if it is executable, else ``gh`` on PATH; GhUnavailable otherwise."""
    env = os.environ.get("ATS_GH_BIN")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise GhUnavailable(f"gh CLI not found: ATS_GH_BIN={env} is not an executable")
    found = shutil.which("gh")
    if not found:
        raise GhUnavailable("gh CLI not found: install GitHub CLI (https://cli.github.com) or set ATS_GH_BIN")
    return found


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0][:200] if lines else "no output"


def gh(argv: list[str], *, repo: str | None = None, cwd: Path | None = None) -> GhCall:
    """Run ``gh ARGV`` and return the call; raise GhUnavailable / AtsError on failure.

    Parameters
    ----------
    argv : list of str
        Arguments after ``gh`` (e.g. ``["issue", "list", ...]``).
    repo : str, optional
        ``OWNER/NAME``, passed as ``-R``.
    cwd : Path, optional
        Working directory (gh infers the repository from its git remote).

    Raises
    ------
    GhUnavailable
        gh missing, network unreachable, not authenticated (one line).
    AtsError
        Any other non-zero exit: gh's first stderr line.
    """
    full = list(argv) + (["-R", repo] if repo else [])
    try:
        res = subprocess.run([gh_binary(), *full], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S,
                             env={**os.environ, "GH_PROMPT_DISABLED": "1", "GH_NO_UPDATE_NOTIFIER": "1"})
    except subprocess.TimeoutExpired:
        raise GhUnavailable(f"gh {' '.join(argv[:2])}: no answer within {TIMEOUT_S}s (network?)") from None
    call = GhCall(full, res.returncode, res.stdout, res.stderr)
    if res.returncode != 0:
        err = (res.stderr or res.stdout).lower()
        if any(h in err for h in NETWORK_HINTS):
            raise GhUnavailable(f"gh cannot reach GitHub (no network?): {_first_line(res.stderr)}")
        if any(h in err for h in AUTH_HINTS):
            raise GhUnavailable(f"gh is not logged in (run `gh auth login`): {_first_line(res.stderr)}")
        raise AtsError(f"gh {' '.join(argv[:2])} failed (exit {res.returncode}): {_first_line(res.stderr or res.stdout)}")
    return call


def list_issues(*, state: str = "open", limit: int = 30, label: str | None = None, repo: str | None = None,
                cwd: Path | None = None) -> list[dict]:
    """Issues as dicts with ``number, title, state, labels, updatedAt, url`` (gh's JSON field names)."""
    argv = ["issue", "list", "--state", state, "--limit", str(limit), "--json", LIST_FIELDS]
    if label:
        argv += ["--label", label]
    out = gh(argv, repo=repo, cwd=cwd).stdout
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError as exc:
        raise AtsError(f"gh issue list: output is not JSON ({exc})") from exc


def create_issue(title: str, body: str, *, labels: list[str] | None = None, repo: str | None = None,
                 cwd: Path | None = None) -> str:
    """Create an issue; returns its URL (the last line gh prints). UsageError for an empty title."""
    if not title.strip():
        raise UsageError("create-issue needs a title")
    argv = ["issue", "create", "--title", title, "--body", body or ""]
    for lab in labels or []:
        argv += ["--label", lab]
    lines = gh(argv, repo=repo, cwd=cwd).stdout.strip().splitlines()
    return lines[-1] if lines else ""


def close_issue(number: int, *, comment: str | None = None, reason: str | None = None, repo: str | None = None,
                cwd: Path | None = None) -> GhCall:
    """Close issue ``number`` (optionally with a closing comment and reason ``completed`` | ``not planned``)."""
    argv = ["issue", "close", str(number)]
    if comment:
        argv += ["--comment", comment]
    if reason:
        if reason not in ("completed", "not planned"):
            raise UsageError(f"--reason {reason!r}: use 'completed' or 'not planned'")
        argv += ["--reason", reason]
    return gh(argv, repo=repo, cwd=cwd)


def comment_issue(number: int, body: str, *, repo: str | None = None, cwd: Path | None = None) -> GhCall:
    """Add a comment to issue ``number``. UsageError for an empty body."""
    if not body.strip():
        raise UsageError("comment-issue needs a non-empty --body")
    return gh(["issue", "comment", str(number), "--body", body], repo=repo, cwd=cwd)


def commits_for_issue(root: Path, number: int, *, rev_range: str | None = None, max_count: int = 200) -> list[dict]:
    """Commits of ``rev_range`` (default HEAD) whose message names ``#<number>`` (or every commit of an explicit
    range): ``[{sha, subject}]`` oldest first."""
    import git

    repo = git.Repo(root)
    pat = re.compile(rf"(?<![\w&])#{number}\b")
    out = []
    for c in repo.iter_commits(rev_range or "HEAD", max_count=max_count):
        if rev_range or pat.search(c.message):
            out.append({"sha": c.hexsha[:12], "subject": c.summary})
    return list(reversed(out))


def link_commits(number: int, root: Path, *, rev_range: str | None = None, dry_run: bool = False,
                 repo: str | None = None) -> tuple[str, list[dict]]:
    """Post one comment on issue ``number`` listing its commits; returns (comment body, commits).

    Raises AtsError when no commit is found (nothing is posted).
    """
    if not dry_run:
        gh_binary()  # say "no gh" before reading the history
    commits = commits_for_issue(root, number, rev_range=rev_range)
    if not commits:
        where = rev_range or f"HEAD (messages naming #{number})"
        raise AtsError(f"no commits for #{number} in {where}: nothing posted")
    body = "Commits linked by `ats gh link-commits`:\n\n" + "\n".join(f"- {c['sha']} {c['subject']}" for c in commits)
    if not dry_run:
        comment_issue(number, body, repo=repo, cwd=root)
    return body, commits
