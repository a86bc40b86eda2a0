"""The agent fleet, slash commands, settings and CLAUDE.md: shapes and the invariants the headless runs rely on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ats.errors import AtsError
from ats.ops.headless import headless_settings, rule_covers
from ats.ops.schedule import check_headless_tools, split_frontmatter, split_tools
from ats.ops.tasks import PG, PG_READ_TOOLS, PG_WRITE_TOOLS, TASKS, parse_date_filter

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ["investigate-agent", "ats-health-check-agent", "knowledge-base-agent", "trading-report-agent",
          "ops-health-agent", "git-workflow-agent"]
COMMANDS = ["investigate", "ats-health-check", "update-knowledge-base", "weekly-report", "24-h-trade-analysis",
            "watchlist-healthcheck", "save-plan"]
KNOWN_MCP = {f"{PG}{t}" for t in PG_READ_TOOLS + PG_WRITE_TOOLS} | {
    "mcp__ats-docs__search", "mcp__ats-docs__get", "mcp__ats-docs__status"}


def yaml_frontmatter(path: Path) -> dict:
    """Parse the frontmatter the way Claude Code does (YAML)."""
    yaml = pytest.importorskip("yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path} has no frontmatter"
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.parametrize("name", AGENTS)
def test_agent_files_have_a_narrow_contract(name):
    path = ROOT / ".claude" / "agents" / f"{name}.md"
    fm = yaml_frontmatter(path)
    assert fm["name"] == name
    assert fm["model"] in ("opus", "sonnet", "haiku", "inherit")
    assert len(fm["description"]) > 40
    tools = split_tools(fm["tools"])
    assert tools, "an agent must name its tools"
    for t in tools:
        assert t != "Bash", f"{name}: bare Bash is too broad; use Bash(<command>:*)"
        if t.startswith("mcp__"):
            assert t in KNOWN_MCP, f"{name}: unknown MCP tool {t}"
    body = split_frontmatter(path.read_text(encoding="utf-8"))[1]
    for section in ("## Read", "## Write", "## Never"):
        assert section in body, f"{name}: missing {section!r} in the role contract"


def test_agents_that_write_reports_name_their_core_tools():
    inv = split_tools(yaml_frontmatter(ROOT / ".claude/agents/investigate-agent.md")["tools"])
    assert f"{PG}investigate_symbol" in inv and f"{PG}write_investigation_report" in inv
    assert "Bash(ats investigate:*)" in inv
    kb = split_tools(yaml_frontmatter(ROOT / ".claude/agents/knowledge-base-agent.md")["tools"])
    assert {"Bash(ats kb scan:*)", "Bash(ats kb update:*)"} <= set(kb)
    git = split_tools(yaml_frontmatter(ROOT / ".claude/agents/git-workflow-agent.md")["tools"])
    assert not any("reset" in t or "--force" in t or "clean" in t for t in git)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_allowed_tools_equal_the_headless_allowlist(name):
    """Claude Code grants a command's allowed-tools on top of --allowedTools, so they must be the same list."""
    path = ROOT / ".claude" / "skills" / name / "SKILL.md"
    fm = yaml_frontmatter(path)
    assert fm["description"] and "argument-hint" in fm
    tools = split_tools(fm["allowed-tools"])
    assert tuple(tools) == TASKS[name].allowed_tools
    for t in tools:
        if t.startswith("mcp__"):
            assert t in KNOWN_MCP, f"/{name}: unknown MCP tool {t}"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_calls_its_core_first(name):
    body = split_frontmatter((ROOT / ".claude" / "skills" / name / "SKILL.md").read_text(encoding="utf-8"))[1]
    task = TASKS[name]
    sample = {"investigate": ["BTCUSDT"], "save-plan": ["t", "f.md"]}.get(name, [])
    core = task.core(sample)
    first = body.find("ats " + " ".join(core[0][:2]) if name != "investigate" else "write_investigation_report")
    assert first != -1, f"/{name} does not mention its core"
    # the core appears in the first numbered step
    step1 = body.find("1. ")
    step2 = body.find("\n2. ")
    assert step1 < first < step2, f"/{name}: the core must be step 1"
    assert "$ARGUMENTS" in body


def test_investigate_uses_positional_and_all_arguments():
    body = (ROOT / ".claude/skills/investigate/SKILL.md").read_text(encoding="utf-8")
    assert "$0" in body and "$ARGUMENTS" in body
    assert "$1" not in body, "a missing positional stays literal text: the date filter is read from $ARGUMENTS"


def test_every_task_allowlist_is_read_only_by_default():
    for task in TASKS.values():
        check_headless_tools(task.allowed_tools, task.name)
        for t in task.allowed_tools:
            if t.startswith("Bash("):
                prefix = t[len("Bash(ats "):-len(":*)")]
                cores = [" ".join(a) for a in task.core({"investigate": ["X"], "save-plan": ["t", "f"]}
                                                        .get(task.name, []))]
                assert any(c.startswith(prefix.split(" ")[0]) for c in cores), (task.name, t)
    # write tools only where the task writes through them
    assert TASKS["investigate"].pg_write_tools() == [f"{PG}write_investigation_report"]
    assert all(not t.pg_write_tools() for n, t in TASKS.items() if n != "investigate")


@pytest.mark.parametrize("rule", ["Bash", "Write", "Edit", "Edit(/services/**)", "Edit(/**)",
                                  "Bash(rm -rf reports:*)", "Bash(ats db migrate:*)", "Bash(ats config:*)",
                                  "Bash(git push:*)", "WebFetch"])
def test_headless_tool_check_refuses_broad_or_mutating_rules(rule):
    with pytest.raises(AtsError, match="not allowed in a headless run"):
        check_headless_tools((rule,), "test")


def test_settings_allow_deny_lists():
    doc = json.loads((ROOT / ".claude" / "settings.json").read_text(encoding="utf-8"))
    perms = doc["permissions"]
    deny = perms["deny"]
    for needle in ("Bash(rm -rf:*)", "Bash(git push --force:*)", "Bash(git reset --hard:*)",
                   "Bash(psql * DROP *)", "Bash(psql * TRUNCATE *)", "Bash(dropdb:*)"):
        assert needle in deny
    assert any(r.startswith("Edit(/services/ats/db/migrations/0001") for r in deny)
    allow = perms["allow"]
    assert not any(r in ("Bash", "Write", "Edit") for r in allow)
    assert not any(r.endswith("__" + w) for r in allow for w in PG_WRITE_TOOLS), \
        "write tools are never pre-approved interactively"
    for r in allow:
        m = re.fullmatch(r"Edit\(/([a-z]+)/\*\*\)", r)
        if r.startswith("Edit"):
            assert m and m[1] in ("reports", "kb", "plans"), r
    assert set(doc["enabledMcpjsonServers"]) == {"ats-postgres", "ats-docs"}


def test_claude_md_keeps_the_rules_and_has_the_tables():
    text = (ROOT / "CLAUDE.md").read_text(encoding="utf-8")
    for rule in ("The database is the single source of truth", "Migrations are append-only",
                 "Tests run against real PostgreSQL"):
        assert rule in text
    for needle in ("/save-plan", "mcp__ats-docs__search", "portfolio_hourly_snapshots", "## Subsystem notes",
                   "DISTINCT ON", "net_pnl_daily_usd", "equity_usd", "logs/cron/<task>.log", "system_events",
                   "blocked_signals", "order_executions", "Retention"):
        assert needle in text, needle
    anti = text.split("## Anti-patterns", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in anti.splitlines() if ln.startswith("| 20")]
    assert len(rows) >= 2 and all(ln.count("|") >= 5 for ln in rows)
    assert "SELECT sum(net_pnl_daily_usd)" in anti, "the wrong query of the running-cumulative trap"
    # every column the anti-pattern queries name exists in the engine schema
    schema = (ROOT / "services/ats/db/migrations/0003_engine.sql").read_text(encoding="utf-8")
    for col in ("equity_usd", "net_pnl_daily_usd", "cash_usd", "positions_value_usd", "realized_pnl_usd",
                "closed_at", "run_id"):
        assert re.search(rf"\b{col}\b", schema), col


@pytest.mark.parametrize("args, expected", [
    ([], (None, None)),
    (["2021-05-19"], ("2021-05-19", "2021-05-20")),
    (["2021-05-19..2021-05-21"], ("2021-05-19", "2021-05-21")),
    (["2021-05-19T06:00:00Z"], ("2021-05-19T06:00:00Z", None)),
    (["2021-05-19", "2021-05-21"], ("2021-05-19", "2021-05-21")),
])
def test_investigate_date_filter(args, expected):
    assert parse_date_filter(args) == expected
    argv = TASKS["investigate"].core(["btcusdt", *args])[0]
    assert argv[:2] == ["investigate", "BTCUSDT"]
    if expected[0]:
        assert argv[argv.index("--since") + 1] == expected[0]


def test_prompt_quotes_multiword_arguments():
    assert TASKS["save-plan"].prompt(["Add feed breaker", "p.md"]) == '/save-plan "Add feed breaker" p.md'
    assert TASKS["investigate"].prompt(["BTCUSDT", "2021-05-19"]) == "/investigate BTCUSDT 2021-05-19"


@pytest.mark.parametrize("broad, narrow, covers", [
    ("Bash(ats report:*)", "Bash(ats report weekly:*)", True),
    ("Bash(ats report weekly:*)", "Bash(ats report weekly:*)", True),
    ("Bash(ats report weekly:*)", "Bash(ats report 24h:*)", False),
    ("Bash(ats kb:*)", "Bash(ats kbx:*)", False),
    ("Bash", "Bash(ats kb scan:*)", True),
    ("Edit(/reports/**)", "Edit(/reports/investigations/**)", True),
    ("Edit(/kb/**)", "Edit(/reports/**)", False),
    ("mcp__ats-postgres__query", "mcp__ats-postgres__query", True),
    ("mcp__ats-postgres__query", "mcp__ats-postgres__explain", False),
])
def test_rule_covers(broad, narrow, covers):
    assert rule_covers(broad, narrow) is covers


@pytest.mark.parametrize("name", sorted(TASKS))
def test_headless_settings_leave_exactly_the_task_allowlist(name):
    """Project settings are loaded in headless runs (they carry the slash commands): every interactive allow
    that is not the task's own must be denied, and none may be broader than a task rule."""
    task = TASKS[name]
    deny = headless_settings(task, ROOT)["permissions"]["deny"]
    allow = json.loads((ROOT / ".claude/settings.json").read_text())["permissions"]["allow"]
    for rule in allow:
        absolute = rule.replace("(/", f"(/{ROOT}/", 1) if rule.startswith(("Edit(/", "Read(/")) else rule
        assert (rule in task.allowed_tools) != (absolute in deny), rule
    for own in task.allowed_tools:
        assert not any(rule_covers(d, own) for d in deny), own


def test_headless_settings_refuse_a_broad_project_allow(tmp_path):
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude/settings.json").write_text(json.dumps({"permissions": {"allow": ["Bash(ats report:*)"]}}))
    with pytest.raises(AtsError, match="covers 'Bash\\(ats report weekly:\\*\\)'"):
        headless_settings(TASKS["weekly-report"], tmp_path)
