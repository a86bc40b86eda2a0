"""Helpers for the ops tests (tests/test_ops_*.py): a temporary copy of the project, a fake claude binary,
the pinned Claude Code CLI install, and reading the cron events back.

The temporary project holds what a headless run reads (`.claude/`, `.claude-cron/`, `CLAUDE.md`, `.mcp.json`,
`pyproject.toml`) and empty `reports/ kb/ plans/ logs/`; tests point ATS_HOME at it so nothing is written
into the repository's own `reports/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
CLAUDE_VERSION = "2.1.329"

#: a .mcp.json for tests that do not need the real servers (the fake claude never starts them)
FAKE_MCP = {"mcpServers": {
    "ats-postgres": {"command": sys.executable, "args": ["-m", "mcp_servers.postgres"]},
    "ats-docs": {"command": sys.executable, "args": ["-m", "mcp_servers.docs"]},
}}


def make_project(dest: Path, *, real_mcp: bool = False) -> Path:
    """Copy the files a headless run needs into ``dest`` (created); returns dest.

    real_mcp: copy the repository's ``.mcp.json`` (it must exist); otherwise write FAKE_MCP.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for d in (".claude", ".claude-cron"):
        shutil.copytree(ROOT / d, dest / d, dirs_exist_ok=True)
    for f in ("CLAUDE.md", "pyproject.toml"):
        shutil.copy2(ROOT / f, dest / f)
    for d in ("reports", "kb", "plans", "logs"):
        (dest / d).mkdir(exist_ok=True)
    if real_mcp:
        # a checkout as .mcp.json expects it: mcp_servers/launch found from $PWD, <root>/.venv beside it
        shutil.copy2(ROOT / ".mcp.json", dest / ".mcp.json")
        (dest / "mcp_servers").symlink_to(ROOT / "mcp_servers", target_is_directory=True)
        venv = Path(sys.executable).parent.parent
        (dest / ".venv").symlink_to(venv, target_is_directory=True)
    else:
        (dest / ".mcp.json").write_text(json.dumps(FAKE_MCP), encoding="utf-8")
    return dest


def run_env(home: Path, db_url: str, **extra: str) -> dict:
    """Environment for `.claude-cron/run.sh` in a temporary project: ATS_HOME, logs inside it, the test DB,
    the venv's python, and a temporary HOME (Claude Code writes ~/.claude.json there)."""
    env = dict(os.environ)
    env.update({
        "ATS_HOME": str(home),
        "ATS_LOG_DIR": str(home / "logs"),
        "ATS_DATABASE_URL": db_url,
        "ATS_PYTHON": sys.executable,
        "HOME": str(home / ".home"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    })
    (home / ".home").mkdir(exist_ok=True)
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_BASE_URL", None)
    env.update(extra)
    return env


def run_sh(home: Path, env: dict, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``<home>/.claude-cron/run.sh ARGS`` (text mode, captured)."""
    return subprocess.run([str(home / ".claude-cron" / "run.sh"), *args], cwd=str(home), env=env,
                          capture_output=True, text=True, timeout=timeout)


def cron_events(db_url: str, task: str | None = None) -> list[dict]:
    """system_events rows with component 'cron' (optionally for one task), oldest first."""
    with psycopg.connect(db_url, row_factory=dict_row) as c:
        rows = c.execute("SELECT * FROM system_events WHERE component = 'cron' ORDER BY event_id").fetchall()
    return [r for r in rows if task is None or r["payload"].get("task") == task]


FAKE_CLAUDE = textwrap.dedent('''\
    #!{python}
    """A stand-in for the claude binary: records how it was called, then behaves as FAKE_CLAUDE_MODE says."""
    import json, os, sys, time
    from pathlib import Path
    rec = Path(os.environ["FAKE_CLAUDE_RECORD"])
    argv = sys.argv[1:]
    doc = {{"argv": argv, "cwd": os.getcwd(), "ats_home": os.environ.get("ATS_HOME")}}
    if "--mcp-config" in argv:
        doc["mcp_config"] = json.loads(Path(argv[argv.index("--mcp-config") + 1]).read_text())
    if "--settings" in argv:
        doc["settings"] = json.loads(Path(argv[argv.index("--settings") + 1]).read_text())
    with rec.open("a") as fh:
        fh.write(json.dumps(doc) + "\\n")
    mode = os.environ.get("FAKE_CLAUDE_MODE", "ok")
    base = {{"type": "result", "session_id": "fake-session", "total_cost_usd": 0.0123, "num_turns": 3,
             "permission_denials": [{{"tool_name": "Bash", "tool_use_id": "toolu_1",
                                      "tool_input": {{"command": "rm -rf reports"}}}}]}}
    if mode == "not-logged-in":
        print(json.dumps({{**base, "is_error": True, "subtype": "success", "num_turns": 1, "total_cost_usd": 0,
                          "permission_denials": [], "result": "Not logged in \u00b7 Please run /login"}}))
        sys.exit(1)
    if mode == "hang":
        Path(os.environ["FAKE_CLAUDE_STARTED"]).write_text(str(os.getpid()))
        release = os.environ.get("FAKE_CLAUDE_RELEASE")
        while not (release and Path(release).exists()):
            time.sleep(0.05)
    if mode == "max-turns":
        print(json.dumps({{**base, "is_error": True, "subtype": "error_max_turns", "result": ""}}))
        sys.exit(1)
    if mode in ("ok", "hang"):  # a run that did its job leaves the task's declared artifact ("no-artifact": none)
        from ats.ops.tasks import TASKS
        cmd, *cmd_args = argv[argv.index("--print") + 1].lstrip("/").split()
        task = next((t for t in TASKS.values() if t.command == cmd), None)
        art = task.expected_artifact(cmd_args) if task is not None else None
        if art is not None:
            out = Path(os.getcwd()) / art.pattern.replace("*", "fake")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("# written by the fake claude\\n")
    print(json.dumps({{**base, "is_error": False, "subtype": "success", "result": "Fake assessment done."}}))
''')


def make_fake_claude(path: Path) -> Path:
    """Write the fake claude script to ``path`` (executable); returns path."""
    path.write_text(FAKE_CLAUDE.format(python=sys.executable), encoding="utf-8")
    path.chmod(0o755)
    return path


def claude_cache() -> Path:
    """Cache directory of the pinned CLI install, reused across runs: ATS_CLAUDE_CACHE or ~/.cache/ats/claude-code
    (resolved against the real HOME, before tests change it)."""
    env = os.environ.get("ATS_CLAUDE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ats" / "claude-code"


def install_claude() -> tuple[Path | None, str]:
    """(path of the pinned claude binary, "") or (None, reason it is unavailable). Installs with npm into the
    cache on first use (about 5 s with a reachable registry)."""
    cache = claude_cache()
    binary = cache / "node_modules" / ".bin" / "claude"

    def version_ok() -> bool:
        try:
            out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.stdout.startswith(CLAUDE_VERSION)

    if binary.exists() and version_ok():
        return binary, ""
    npm = shutil.which("npm")
    if not npm:
        return None, "npm is not installed: cannot install the pinned Claude Code CLI"
    cache.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                          f"@anthropic-ai/claude-code@{CLAUDE_VERSION}"], capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0 or not binary.exists():
        return None, f"npm install @anthropic-ai/claude-code@{CLAUDE_VERSION} failed: {res.stderr.strip()[-300:]}"
    if not version_ok():
        return None, f"{binary} --version did not report {CLAUDE_VERSION}"
    return binary, ""


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    """Fixture: the pinned Claude Code CLI (installed once with npm); the test is skipped, saying why, when npm or
    the registry is unavailable. Import it into a test module to use it."""
    binary, reason = install_claude()
    if binary is None:
        pytest.skip(reason)
    return binary


def mcp_calls(home: Path) -> list[dict]:
    """The tool calls the ats-postgres MCP server logged under ``home/logs/mcp-postgres.log`` (one dict each,
    oldest first; [] when the server never ran)."""
    path = home / "logs" / "mcp-postgres.log"
    if not path.exists():
        return []
    return [d for d in (json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()) if d.get("tool")]
