"""The fleet's agent and command files: valid frontmatter (as Claude Code parses it), the plugin-style contract,
each command's core named in step 1 and covered by its allowed-tools."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENTS = sorted(p.stem for p in (ROOT / ".claude" / "agents").glob("*.md"))
COMMANDS = {"commit": "ats git commit", "close-session": "ats session close", "check-issues": "ats gh issues",
            "create-issue": "ats gh create", "close-issue": "ats gh close", "comment-issue": "ats gh comment",
            "link-commits": "ats gh link-commits"}


def frontmatter(path: Path) -> tuple[dict, str]:
    yaml = pytest.importorskip("yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), path
    _, fm, body = text.split("---\n", 2)
    return yaml.safe_load(fm), body


@pytest.mark.parametrize("name", AGENTS)
def test_agent_says_when_to_use_it_with_examples(name):
    fm, body = frontmatter(ROOT / ".claude" / "agents" / f"{name}.md")
    assert fm["name"] == name and fm["model"] in ("haiku", "sonnet", "opus", "inherit")
    assert re.search(r"\bUse (when|after|before)", fm["description"])
    assert "Examples" in fm["description"] and fm["description"].count('"') >= 4, "two or more quoted examples"
    tools = [t.strip() for t in re.split(r",\s*(?![^()]*\))", fm["tools"])]
    assert tools and "Bash" not in tools and not any("push" in t for t in tools)
    for section in ("## Read", "## Write", "## Never"):
        assert section in body


@pytest.mark.parametrize("name, core", COMMANDS.items())
def test_command_runs_its_core_first_with_narrow_tools(name, core):
    fm, body = frontmatter(ROOT / ".claude" / "skills" / name / "SKILL.md")
    assert fm["description"] and "argument-hint" in fm and "$ARGUMENTS" in body
    assert f"Bash({core}:*)" in fm["allowed-tools"]
    step1, step2 = body.find("1. "), body.find("\n2. ")
    assert step1 < body.find(core) < step2, f"/{name}: the core must be step 1"
    assert "Bash(git push" not in fm["allowed-tools"] and not re.search(r"(^|, )(Bash|Write|Edit)(,|$)",
                                                                        fm["allowed-tools"])


def test_commit_commands_are_not_model_invocable():
    for name in ("commit", "close-session", "create-issue", "close-issue", "comment-issue", "link-commits"):
        fm, _ = frontmatter(ROOT / ".claude" / "skills" / name / "SKILL.md")
        assert fm.get("disable-model-invocation") is True
