"""A small project tree for the knowledge-base tests (ATS_HOME points at a copy)."""

from __future__ import annotations

from pathlib import Path

FILES = {
    "pyproject.toml": '[project]\nname = "ats"\nversion = "0"\n',
    "services/ats/__init__.py": '"""The ats package (test tree)."""\n',
    "services/ats/widgets/__init__.py": "",
    "services/ats/widgets/store.py": '''"""Widget storage: reads and writes the widgets table."""

from __future__ import annotations

LIMIT = 100


def save_widget(conn, name: str, qty: int = 1) -> int:
    """Insert one widget; returns its id."""
    # invariant: qty is never negative
    return conn.execute("INSERT INTO widgets (name, qty) VALUES (%s, %s) RETURNING id", (name, qty)).fetchone()[0]


def count_widgets(conn) -> int:
    """How many widgets exist."""
    return conn.execute("SELECT count(*) FROM widgets w JOIN gadgets g ON g.id = w.id").fetchone()[0]


def _private():
    pass
''',
    "services/ats/widgets/report.py": '''"""Widget report built on the store."""

from .store import count_widgets


class Report:
    """A report of widgets."""

    def render(self, conn) -> str:
        """Markdown text."""
        return f"{count_widgets(conn)} widgets"
''',
    "services/ats/db/migrations/0001_widgets.sql": '''-- widgets and gadgets
-- rows must never be deleted
CREATE TABLE widgets (
    id   bigserial PRIMARY KEY,
    name text NOT NULL,
    qty  integer NOT NULL
);
CREATE TABLE gadgets (
    id bigint PRIMARY KEY
);
CREATE INDEX widgets_name ON widgets (name);
''',
    "mcp_servers/widgets.py": '''"""MCP server exposing widgets."""
from ats.widgets.store import count_widgets
''',
    ".claude/agents/widget-agent.md": '''---
name: widget-agent
description: Counts widgets.
tools: Read
---
You count widgets.

- never write to the database
''',
    "bench/widgets_bench.py": '"""Benchmark widgets."""\nimport time\n',
    "tests/test_widgets.py": "from ats.widgets import store\n\ndef test_x():\n    assert store.LIMIT == 100\n",
}


def make_tree(root: Path) -> Path:
    for rel, text in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root
