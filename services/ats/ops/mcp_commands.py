"""`ats mcp ...`: serve the ATS MCP servers over stdio, list their tools (.mcp.json runs them through
mcp_servers/launch, which is equivalent to `ats mcp serve NAME`).

Registered by :mod:`ats.ops.cli`: serving the MCP servers is part of operating Claude Code on this machine.
"""

from __future__ import annotations

import argparse
import json


def _serve(args) -> int:
    if args.name == "postgres":
        from mcp_servers.postgres import main

        return main(["--allow-writes"] if args.allow_writes else [])
    from mcp_servers.docs import main

    return main([])


def _tools(args) -> int:
    import anyio

    from mcp import Client

    async def go():
        if args.name == "postgres":
            from mcp_servers.postgres import build_server

            server = build_server(allow_writes=args.allow_writes)
        else:
            from mcp_servers.docs import build_server

            server = build_server(preload_model=False)
        async with Client(server) as c:
            return (await c.list_tools()).tools

    tools = anyio.run(go)
    if args.json:
        print(json.dumps([{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                          for t in tools], indent=2))
        return 0
    for t in tools:
        params = ", ".join(f"{k}{'' if k in t.input_schema.get('required', []) else '?'}"
                           for k in t.input_schema.get("properties", {}))
        print(f"mcp__ats-{args.name}__{t.name}({params})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats mcp` (serve, tools) to the top-level parser."""
    p = sub.add_parser("mcp", help="MCP servers for Claude Code: serve over stdio, list tools",
                       description="The ats-postgres and ats-docs MCP servers (declared in .mcp.json).")
    msub = p.add_subparsers(dest="mcp_command", required=True, metavar="COMMAND")
    for name, helptext, fn in (("serve", "serve one server over stdio (stdout is the protocol)", _serve),
                               ("tools", "list a server's tools as Claude Code names them", _tools)):
        q = msub.add_parser(name, help=helptext)
        q.add_argument("name", choices=("postgres", "docs"))
        q.add_argument("--allow-writes", action="store_true",
                       help="postgres only: expose append_lesson, record_report, write_investigation_report")
        if name == "tools":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=fn)
