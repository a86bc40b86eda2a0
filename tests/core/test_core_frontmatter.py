"""ats.frontmatter: the one YAML front-matter parser (KB articles, cron prompts, .claude commands and agents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ats import frontmatter
from ats.errors import AtsError
from ats.ops.schedule import split_frontmatter, split_tools

ROOT = Path(__file__).resolve().parents[2]

COMMAND_WITH_LIST = """---
description: "Weekly report: P&L from snapshots"
argument-hint: "[--as-of TIMESTAMP]"
allowed-tools:
  - Bash(ats report weekly:*)
  - mcp__ats-postgres__portfolio_pnl, mcp__ats-docs__search
  - Read(/reports/**)
---
# /weekly-report

Body stays exactly as written.
"""


def test_yaml_list_in_allowed_tools_is_read_as_tools():
    meta, body = frontmatter.split(COMMAND_WITH_LIST)
    assert meta["allowed-tools"] == ["Bash(ats report weekly:*)", "mcp__ats-postgres__portfolio_pnl, mcp__ats-docs__search",
                                     "Read(/reports/**)"]
    assert frontmatter.tool_list(meta["allowed-tools"]) == (
        "Bash(ats report weekly:*)", "mcp__ats-postgres__portfolio_pnl", "mcp__ats-docs__search", "Read(/reports/**)")
    assert meta["description"] == "Weekly report: P&L from snapshots"
    assert body == "# /weekly-report\n\nBody stays exactly as written.\n"
    # the cron prompt reader takes the same list
    fields, _ = split_frontmatter(COMMAND_WITH_LIST)
    assert split_tools(fields["allowed-tools"])[0] == "Bash(ats report weekly:*)"


def test_comma_string_splits_outside_parentheses_only():
    assert frontmatter.tool_list("Bash(ats kb scan:*), Read(/a,b/**), Edit") == (
        "Bash(ats kb scan:*)", "Read(/a,b/**)", "Edit")
    assert frontmatter.tool_list(None) == ()


def test_no_block_unclosed_and_invalid_blocks():
    assert frontmatter.split("# just markdown\n") == ({}, "# just markdown\n")
    with pytest.raises(AtsError, match="not closed"):
        frontmatter.split("---\nname: x\n# body\n", where="x.md")
    with pytest.raises(AtsError, match="x.md: front matter is not valid YAML"):
        frontmatter.split("---\nname: [unclosed\n---\nbody\n", where="x.md")
    with pytest.raises(AtsError, match="must be a mapping"):
        frontmatter.split("---\n- a\n- b\n---\nbody\n")


def test_kb_front_matter_round_trips_exactly():
    from ats.knowledge.kb import parse_front_matter, render_front_matter

    meta = {"source_path": "services/ats/cli.py", "source_md5": "0" * 32, "category": "CORE", "module": "ats.cli",
            "version": 3, "builder": "deterministic", "builder_note": 'quote " and: colon', "built_at": "2026-12-01T20:00:00Z"}
    text = render_front_matter(meta) + "# body\n\n---\nnot front matter\n"
    back, body = parse_front_matter(text)
    assert back == meta and body == "# body\n\n---\nnot front matter\n"


@pytest.mark.parametrize("path", sorted((ROOT / ".claude").glob("*/*.md")), ids=lambda p: p.name)
def test_every_claude_file_parses(path):
    meta, body = frontmatter.split(path.read_text(encoding="utf-8"), where=str(path))
    assert meta and body.strip()
    tools = meta.get("tools", meta.get("allowed-tools"))
    if tools is not None:
        assert frontmatter.tool_list(tools)
