"""Helpers for the MCP / docs tests: call tools through the SDK's in-process client, fingerprint a database."""

from __future__ import annotations

import json
from typing import Any

import anyio
import psycopg


def call(server, tool: str, args: dict | None = None):
    """Call one tool through `mcp.Client(server)` (the SDK's in-process client); returns the CallToolResult."""
    from mcp import Client

    async def go():
        async with Client(server) as c:
            return await c.call_tool(tool, args or {})

    return anyio.run(go)


def ok(server, tool: str, args: dict | None = None) -> dict:
    """Call a tool that must succeed; returns its structured content (checked equal to the JSON text)."""
    r = call(server, tool, args)
    assert not r.is_error, f"{tool} failed: {r.content[0].text if r.content else r}"
    doc = r.structured_content
    assert json.loads(r.content[0].text) == json.loads(json.dumps(doc))
    return doc


def err(server, tool: str, args: dict | None = None) -> str:
    """Call a tool that must fail; returns the error text the client sees."""
    r = call(server, tool, args)
    assert r.is_error, f"{tool} unexpectedly succeeded: {r.structured_content}"
    return r.content[0].text


def tool_names(server) -> list[str]:
    from mcp import Client

    async def go():
        async with Client(server) as c:
            return [t.name for t in (await c.list_tools()).tools]

    return anyio.run(go)


def fingerprint(url: str) -> dict[str, Any]:
    """What an attack through `query` could change: row counts of every table in schema public, every
    sequence's state, the set of relations / functions / extensions / roles, large objects, per-role/database
    settings and the ats_readonly role's attributes."""
    with psycopg.connect(url, autocommit=True) as c:
        fp: dict[str, Any] = {}
        rels = c.execute("""SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                            ORDER BY 1""").fetchall()
        fp["relations"] = rels
        for name, kind in rels:
            if kind in ("r", "p"):
                fp[f"count:{name}"] = c.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            elif kind == "S":
                fp[f"seq:{name}"] = c.execute(f'SELECT last_value, is_called FROM "{name}"').fetchone()
        fp["functions"] = c.execute("""SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                       WHERE n.nspname = 'public'""").fetchone()[0]
        fp["extensions"] = c.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
        fp["roles"] = c.execute("""SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls
                                   FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1""").fetchall()
        fp["largeobjects"] = c.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
        fp["settings"] = c.execute("SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2").fetchall()
        fp["lessons"] = c.execute("SELECT coalesce(max(lesson_id), 0) FROM lessons").fetchone()[0]
        return fp
