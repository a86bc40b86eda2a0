"""`ats kb scan | update [--agent] | status [--json]`: the MD5-drift knowledge base (see ats.procedures.kb)."""

from __future__ import annotations

CLI_ORDER = 45

import argparse
import json

from .db import connect


def _conn():
    conn = connect()
    row = conn.execute("SELECT to_regclass('kb_registry') IS NOT NULL AS e").fetchone()
    if not row["e"]:  # an older database: apply pending migrations (0005 creates kb_registry)
        from .db import database_url
        from .db.migrate import migrate

        conn.close()
        migrate(database_url())
        conn = connect()
    return conn


def _record(conn, event_type: str, payload: dict) -> None:
    from .db.events import record_event

    try:
        record_event(conn, "kb", event_type, payload=payload)
        conn.commit()
    except Exception:  # noqa: BLE001 - the audit event is best effort; the registry already committed
        conn.rollback()


def _scan(args) -> int:
    from .procedures.kb import scan

    with _conn() as conn:
        res = scan(conn)
        _record(conn, "kb_scan", {k: (len(v) if isinstance(v, list) else v) for k, v in res.items()})
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    c = res["counts"]
    print(f"kb scan: {res['files']} source files ({res['hashed']} hashed, {res['unchanged']} unchanged by size+mtime)"
          f" in {res['duration_s']:.3f} s" + (f"; {res['restored']} rows restored from article front matter"
                                             if res["restored"] else ""))
    for label, key in (("new (pending)", "new"), ("newly stale", "stale"), ("orphaned", "orphaned")):
        if res[key]:
            print(f"  {label}: {len(res[key])}: " + ", ".join(res[key][:10]) + (" ..." if len(res[key]) > 10 else ""))
    print("  status: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    return 0


def _update(args) -> int:
    from .procedures.kb import update

    with _conn() as conn:
        res = update(conn, agent=args.agent, only=args.paths or None, prune_orphans=args.prune_orphans)
        _record(conn, "kb_update", {"batch_id": res["batch_id"], "built": len(res["built"]),
                                    "failed": len(res["failed"]), "builder": res["builder"],
                                    "builder_note": res["builder_note"]})
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"kb update: {len(res['built'])} article(s) built by {res['builder']}"
              + (f" ({res['builder_note']})" if res["builder_note"] else "")
              + f", {len(res['failed'])} failed" + (f", {len(res['pruned'])} pruned" if res["pruned"] else ""))
        for f in res["failed"]:
            print(f"  FAILED {f['source_path']}: {f['error']}")
        print("  status: " + ", ".join(f"{k} {v}" for k, v in res["counts"].items()))
    return 1 if res["failed"] else 0


def _status(args) -> int:
    from .procedures.kb import status

    with _conn() as conn:
        st = status(conn)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print("kb status: " + ", ".join(f"{k} {st[k]}" for k in ("active", "stale", "pending", "failed", "orphaned"))
          + f" (total {st['total']})")
    for cat, c in sorted(st["categories"].items()):
        print(f"  {cat:<14} " + " ".join(f"{k}={v}" for k, v in c.items() if v))
    for r in st["needs_work"][:20]:
        print(f"  {r['status']:<8} {r['source_path']}" + (f"  ({r['error']})" if r.get("error") else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats kb` (scan / update / status)."""
    p = sub.add_parser("kb", help="knowledge base with MD5 drift: scan, update [--agent], status",
                       description="One article per source file in kb/<CATEGORY>/<module>.md, rebuilt when the "
                                   "source's MD5 drifts; the registry is the kb_registry table.")
    ks = p.add_subparsers(dest="kb_command", required=True, metavar="COMMAND")
    q = ks.add_parser("scan", help="hash sources (only when size/mtime changed); mark stale / pending / orphaned",
                      description="Walks services/, mcp_servers/, .claude-cron/, .claude/agents|commands|skills, "
                                  "bench/. A clean clone's empty registry is restored from the articles' front matter.")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_scan)
    q = ks.add_parser("update", help="rebuild stale, pending and failed articles",
                      description="Deterministic builder (ast: docstrings, public API, imports, tables, invariants, "
                                  "tests) by default; --agent runs the knowledge-base agent through headless Claude "
                                  "Code (/update-knowledge-base) and falls back to the deterministic builder "
                                  "when no model is available. Exit 1 when an article failed to build.")
    q.add_argument("--agent", action="store_true", help="build through the knowledge-base agent (claude --print)")
    q.add_argument("--prune-orphans", action="store_true", help="delete articles whose source file is gone")
    q.add_argument("--json", action="store_true")
    q.add_argument("paths", nargs="*", help="restrict to these source paths (relative to the project root)")
    q.set_defaults(func=_update)
    q = ks.add_parser("status", help="counts per status and category")
    q.add_argument("--json", action="store_true",
                   help='print {"active": n, "stale": n, "pending": n, "failed": n, ...} as JSON')
    q.set_defaults(func=_status)

