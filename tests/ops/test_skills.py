"""`.claude/skills/<name>/SKILL.md`: the slash commands as Claude Code skills, read with the one front-matter
parser (ats.frontmatter) and kept in step with the headless allowlists of ats.ops.tasks.

Seen with Claude Code 2.1.329 in print mode (`claude -p "/name ARGS"`): a skill expands like a command
(`<command-name>/name</command-name>`, `$0` and `$ARGUMENTS` substituted, `disable-model-invocation: true`
does not stop a typed `/name`). A `context: fork` skill runs in its `agent:`'s context (that agent's system
prompt and tools), but `--max-turns` does not bound the fork and the result JSON reports `num_turns: 0`:
so a skill that runs headless (a task in ats.ops.tasks) must not fork.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ats import frontmatter
from ats.ops.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]
SKILLS = sorted(p.parent.name for p in (ROOT / ".claude" / "skills").glob("*/SKILL.md"))
#: skills that change something outside reports/ (plans, kb, git, GitHub, database, archives): user-only
SIDE_EFFECTS = {"save-plan", "commit", "close-session", "update-knowledge-base", "create-issue", "close-issue",
                "comment-issue", "link-commits", "start-ats-live-monitoring", "stop-ats-live-monitoring-save-report"}


def skill(name: str) -> tuple[dict, str]:
    path = ROOT / ".claude" / "skills" / name / "SKILL.md"
    return frontmatter.split(path.read_text(encoding="utf-8"), where=str(path))


def agent_tools(name: str) -> tuple[str, ...]:
    path = ROOT / ".claude" / "agents" / f"{name}.md"
    assert path.exists(), f"agent {name} does not exist"
    return frontmatter.tool_list(frontmatter.split(path.read_text(encoding="utf-8"))[0]["tools"])


def test_every_headless_task_has_its_skill_and_no_command_shadows_one():
    assert {t.command for t in TASKS.values() if t.command} <= set(SKILLS)
    commands = {p.stem for p in (ROOT / ".claude" / "commands").glob("*.md")}
    assert not commands & set(SKILLS), f"a command and a skill share a name: {commands & set(SKILLS)}"


@pytest.mark.parametrize("name", SKILLS)
def test_skill_front_matter(name):
    fm, body = skill(name)
    assert fm["name"] == name and fm["description"] and "argument-hint" in fm
    assert "$ARGUMENTS" in body
    tools = frontmatter.tool_list(fm.get("allowed-tools"))
    assert tools and not {"Bash", "Write", "Edit"} & set(tools)
    if name in TASKS:
        assert tools == TASKS[name].allowed_tools, "allowed-tools must equal the headless allowlist"
        assert fm.get("context") != "fork", "a forked skill escapes --max-turns in claude -p (2.1.329)"
    if name in SIDE_EFFECTS:
        assert fm.get("disable-model-invocation") is True, f"/{name} writes: only the operator may invoke it"
    if fm.get("context") == "fork":
        own = agent_tools(fm["agent"])
        assert set(tools) <= set(own), f"/{name}: the fork gets {fm['agent']}'s tools only"
    else:
        assert "agent" not in fm, f"/{name}: 'agent' takes effect only with 'context: fork'"


def test_some_read_only_skill_runs_forked_in_its_agent():
    forked = {n for n in SKILLS if skill(n)[0].get("context") == "fork"}
    assert "check-issues" in forked
