"""`ats security audit`: a planted key is found with file:line evidence; modes, grants, settings are checked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from ats.ops import security as sec

ROOT = Path(__file__).resolve().parents[2]
FAKE = "sk-ant-api03-FAKEFAKEFAKE0123456789abcdefABCDEF"
BYBIT = "Zq8xFakeBybitSecretValue771"


@pytest.fixture
def tree(tmp_path):
    """A project tree with the real .claude/settings.json, .mcp.json and migrations, empty logs and reports."""
    root = tmp_path / "proj"
    (root / ".claude").mkdir(parents=True)
    shutil.copy(ROOT / ".claude" / "settings.json", root / ".claude" / "settings.json")
    shutil.copy(ROOT / ".mcp.json", root / ".mcp.json")
    shutil.copytree(ROOT / "services" / "ats" / "db" / "migrations", root / "services/ats/db/migrations")
    (root / "logs").mkdir()
    (root / "reports").mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "ats"\n')
    return root


def _cfg(root: Path, **env) -> sec.AuditConfig:
    return sec.AuditConfig(root=root, logs=root / "logs", reports=root / "reports", env_files=[root / ".env"],
                           check_db=False, environ=env)


def test_clean_tree_has_no_high_finding(tree):
    assert [f for f in sec.audit(_cfg(tree)) if f.severity == "high"] == []


def test_planted_key_in_a_log_and_a_report_is_found_with_file_line(tree):
    (tree / "logs" / "engine.log").write_text('{"msg": "start"}\n{"msg": "auth", "key": "' + FAKE + '"}\n')
    (tree / "reports" / "daily").mkdir()
    (tree / "reports" / "daily" / "r.md").write_text("# report\n\nok\nbybit secret " + BYBIT + "\n")
    found = sec.audit(_cfg(tree, ANTHROPIC_API_KEY=FAKE, BYBIT_API_SECRET=BYBIT))
    high = [f for f in found if f.severity == "high" and f.check == "secrets"]
    ev = "\n".join(e for f in high for e in f.evidence)
    assert f"{tree / 'logs' / 'engine.log'}:2:" in ev
    assert f"{tree / 'reports' / 'daily' / 'r.md'}:4:" in ev
    assert "ANTHROPIC_API_KEY" in ev and "BYBIT_API_SECRET" in ev
    assert FAKE not in ev and BYBIT not in ev, "evidence must be redacted"
    # without the env value the generic pattern still catches the Anthropic-shaped key
    generic = sec.audit(_cfg(tree))
    assert any(f.title.startswith("anthropic key") and "engine.log:2" in f.evidence[0] for f in generic)


def test_secret_from_an_env_file_is_searched_and_its_mode_checked(tree):
    env = tree / ".env"
    env.write_text(f"export ALPACA_SECRET_KEY='{BYBIT}'\n")
    env.chmod(0o644)
    (tree / "logs" / "x.log").write_text(f"alpaca {BYBIT}\n")
    found = sec.audit(_cfg(tree))
    assert any(f.check == "env_files" and f.severity == "high" and "0644" in f.title for f in found)
    assert any(f.check == "secrets" and "ALPACA_SECRET_KEY" in f.evidence[0] and "x.log:1" in f.evidence[0]
               for f in found)
    env.chmod(0o600)
    assert not any(f.check == "env_files" for f in sec.audit(_cfg(tree)))


def test_mcp_writes_dashboard_and_deny_list(tree):
    mcp = json.loads((tree / ".mcp.json").read_text())
    mcp["mcpServers"]["ats-postgres"]["args"].append("--allow-writes")
    (tree / ".mcp.json").write_text(json.dumps(mcp))
    settings = json.loads((tree / ".claude/settings.json").read_text())
    settings["permissions"]["deny"].remove("Bash(git push --force:*)")
    settings.pop("hooks")
    (tree / ".claude/settings.json").write_text(json.dumps(settings))
    found = sec.audit(_cfg(tree, ATS_DASHBOARD_HOST="0.0.0.0"))
    titles = {(f.check, f.severity): f for f in found}
    assert ("mcp_writes", "high") in titles
    claude = [f for f in found if f.check == "claude_settings" and f.severity == "high"]
    assert any("git push --force" in "".join(f.evidence) for f in claude)
    assert any("PreToolUse path hook" in f.title for f in claude)
    assert titles[("dashboard", "high")].title.startswith("dashboard binds non-loopback 0.0.0.0")
    ok = sec.audit(_cfg(tree, ATS_DASHBOARD_HOST="0.0.0.0", ATS_DASHBOARD_TOKEN="x" * 32))
    assert not any(f.check == "dashboard" and f.severity == "high" for f in ok)


def test_readonly_role_grants_against_the_migrations(fresh_db_url):
    with psycopg.connect(fresh_db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        assert [f for f in sec.check_readonly_role(c, ROOT) if f.severity == "high"] == []
        c.execute("GRANT INSERT ON system_events TO ats_readonly")
        c.execute("GRANT EXECUTE ON FUNCTION pg_read_file(text) TO ats_readonly")
        c.execute("GRANT pg_read_server_files TO ats_readonly")
        try:
            found = sec.check_readonly_role(c, ROOT)
        finally:
            c.execute("REVOKE INSERT ON system_events FROM ats_readonly")
            c.execute("REVOKE EXECUTE ON FUNCTION pg_read_file(text) FROM ats_readonly")
            c.execute("REVOKE pg_read_server_files FROM ats_readonly")
    titles = " / ".join(f.title for f in found if f.severity == "high")
    assert "beyond SELECT" in titles and "pg_read_file(text)" in titles and "pg_read_server_files" in titles
    assert any("GRANT INSERT ON system_events" in e for f in found for e in f.evidence)


def test_cli_finds_a_key_in_system_events_and_exits_1(fresh_db_url, tree):
    with psycopg.connect(fresh_db_url) as c:
        c.execute("INSERT INTO system_events (component, event_type, payload) VALUES ('t', 'leak', %s)",
                  (json.dumps({"header": f"Bearer {BYBIT}"}),))
    env = {"ATS_HOME": str(tree), "ATS_LOG_DIR": str(tree / "logs"), "BYBIT_API_KEY": BYBIT}
    r = run_cli("security", "audit", "--json", env=env, cwd=tree)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert any("system_events.event_id=" in e and "BYBIT_API_KEY" in e for f in doc["findings"] for e in f["evidence"])
    assert BYBIT not in r.stdout and BYBIT not in Path(doc["report"]).read_text()
    assert Path(doc["report"]).parent == tree / "reports" / "security"
    # a second audit does not flag its own report
    r2 = run_cli("security", "audit", "--json", "--no-report", env={**env, "BYBIT_API_KEY": ""}, cwd=tree)
    assert not [f for f in json.loads(r2.stdout)["findings"] if f["check"] == "secrets" and "security-audit" in
                " ".join(f["evidence"])]
