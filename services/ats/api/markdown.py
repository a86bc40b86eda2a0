"""Markdown to HTML for KB articles, reports and plans (markdown-it-py, raw HTML disabled)."""

from __future__ import annotations

import re

_FRONT = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)


def render_markdown(text: str) -> str:
    """Render ``text`` (a leading YAML front-matter block is dropped) to HTML; tables enabled, HTML escaped."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return md.render(_FRONT.sub("", text, count=1))
