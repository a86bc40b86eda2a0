"""The MCP servers launched exactly as .mcp.json declares them: over stdio with the SDK's stdio client, and by the
pinned Claude Code CLI (`claude mcp list` must report both servers Connected)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import anyio
import pytest

from _ops_helpers import claude_bin  # noqa: F401  (fixture)
from conftest import ROOT


def mcp_json() -> dict:
    return json.loads((ROOT / ".mcp.json").read_text())


def server_env(db_url: str, **extra: str) -> dict:
    env = {"ATS_DATABASE_URL": db_url, "ATS_LOG_DIR": os.environ.get("ATS_LOG_DIR", ""),
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def stdio_session(name: str, cwd: Path, env: dict, calls: list[tuple[str, dict]]):
    """Start server ``name`` with the command/args of .mcp.json; return (tool names, [CallToolResult])."""
    from mcp import Client, StdioServerParameters

    decl = mcp_json()["mcpServers"][name]
    params = StdioServerParameters(command=decl["command"], args=decl["args"], env=env, cwd=str(cwd))

    async def go():
        with anyio.fail_after(120):
            async with Client(params) as c:
                names = [t.name for t in (await c.list_tools()).tools]
                results = [await c.call_tool(tool, args) for tool, args in calls]
                return names, results

    return anyio.run(go)


def test_mcp_json_declares_both_stdio_servers():
    servers = mcp_json()["mcpServers"]
    assert set(servers) == {"ats-postgres", "ats-docs"}
    for name, decl in servers.items():
        assert decl["type"] == "stdio" and decl["command"] == "sh"
        assert decl["args"][-1] == name.removeprefix("ats-")
    assert os.access(ROOT / "mcp_servers" / "launch", os.X_OK)


@pytest.mark.parametrize("where", [".", "services/ats"], ids=["repo_root", "subdirectory"])
def test_postgres_server_over_stdio(fresh_db_url, where):
    names, (who, tables) = stdio_session(
        "ats-postgres", ROOT / where, server_env(fresh_db_url),
        [("query", {"sql": "SELECT current_user AS who"}), ("list_tables", {})])
    assert set(names) == {"query", "list_tables", "describe_table", "explain", "investigate_symbol",
                          "portfolio_pnl", "health_summary", "blocked_signals"}
    assert not who.is_error and who.structured_content["rows"] == [["ats_readonly"]]
    assert "lessons" in {t["name"] for t in tables.structured_content["tables"]}


def test_postgres_server_writes_only_when_enabled(fresh_db_url):
    names, (les,) = stdio_session("ats-postgres", ROOT, server_env(fresh_db_url, ATS_MCP_ALLOW_WRITES="1"),
                                  [("append_lesson", {"title": "stdio", "body": "written over stdio"})])
    assert {"append_lesson", "record_report", "write_investigation_report"} <= set(names)
    assert not les.is_error and les.structured_content["lesson_id"] >= 1


def test_docs_server_over_stdio(fresh_db_url):
    names, (st, res) = stdio_session(
        "ats-docs", ROOT, server_env(fresh_db_url, ATS_DOCS_REFRESH_SECONDS="3600"),
        [("status", {}), ("search", {"query": "migrations append-only", "mode": "bm25", "k": 3})])
    assert set(names) == {"search", "get", "status"}
    assert not st.is_error, st.content
    model = st.structured_content["model"]
    if model["available"]:  # loaded offline (HF_HUB_OFFLINE=1 by the launcher)
        assert model["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    else:
        assert model["note"], "an unavailable model always says why"
    assert not res.is_error, res.content
    assert res.structured_content["results"], "the repository's own CLAUDE.md / README.md are indexed on search"


# ---- the real Claude Code CLI -----------------------------------------------------------------------------

def claude(binp: Path, args: list[str], *, home: Path, cwd: Path, db_url: str) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), "ATS_DATABASE_URL": db_url,
           "ATS_LOG_DIR": os.environ.get("ATS_LOG_DIR", str(home)), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_AUTOUPDATER": "1", "NO_COLOR": "1"}
    return subprocess.run([str(binp), *args], capture_output=True, text=True, env=env, cwd=str(cwd), timeout=180)


def connected(out: str) -> dict[str, bool]:
    status = {}
    for line in out.splitlines():
        for name in ("ats-postgres", "ats-docs"):
            if line.startswith(f"{name}:"):
                status[name] = "Connected" in line and "Failed" not in line
    return status


@pytest.mark.network_cli
def test_claude_code_connects_the_project_mcp_json(claude_bin, db_url, tmp_path):
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    # approve the project's .mcp.json servers for this temporary user (interactive approval otherwise)
    (home / ".claude" / "settings.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    r = claude(claude_bin, ["mcp", "list"], home=home, cwd=ROOT, db_url=db_url)
    assert connected(r.stdout) == {"ats-postgres": True, "ats-docs": True}, r.stdout + r.stderr


@pytest.mark.network_cli
def test_claude_code_connects_servers_added_with_local_scope(claude_bin, db_url, tmp_path):
    home, proj = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    proj.mkdir()
    launch = str(ROOT / "mcp_servers" / "launch")
    for name in ("postgres", "docs"):
        r = claude(claude_bin, ["mcp", "add", "--scope", "local", f"ats-{name}", "--", launch, name],
                   home=home, cwd=proj, db_url=db_url)
        assert r.returncode == 0, r.stdout + r.stderr
    cfg = json.loads((home / ".claude.json").read_text())
    servers = next(v["mcpServers"] for k, v in cfg["projects"].items() if Path(k).resolve() == proj.resolve())
    assert servers["ats-postgres"]["args"] == ["postgres"] and servers["ats-docs"]["command"] == launch
    r = claude(claude_bin, ["mcp", "list"], home=home, cwd=proj, db_url=db_url)
    assert connected(r.stdout) == {"ats-postgres": True, "ats-docs": True}, r.stdout + r.stderr
