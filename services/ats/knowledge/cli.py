"""`ats kb ...`, `ats docs ...`, `ats plan ...`: the knowledge package's commands.

- ``ats kb scan | update [--agent] | status [--json]``: the MD5-drift knowledge base (:mod:`ats.knowledge.kb`).
- ``ats docs index | search | get | status``: hybrid docs search, the CLI twins of the ats-docs MCP tools
  (:mod:`ats.knowledge.docs_index`).
- ``ats plan save "title" --from FILE | list``: approved plans in plans/ (:mod:`ats.knowledge.plans`).
"""

from __future__ import annotations

CLI_ORDER = 45

import argparse
import json

from ..db.command import command_connection


# --- ats kb ----------------------------------------------------------------------------------------------------

def _kb_record(conn, event_type: str, payload: dict) -> None:
    from ..db.events import record_event

    try:
        record_event(conn, "kb", event_type, payload=payload)
        conn.commit()
    except Exception:  # noqa: BLE001 - the audit event is best effort; the registry already committed
        conn.rollback()


def _kb_scan(args) -> int:
    from .kb import scan

    with command_connection("ats-kb-cli", require_table="kb_registry") as conn:
        res = scan(conn)
        _kb_record(conn, "kb_scan", {k: (len(v) if isinstance(v, list) else v) for k, v in res.items()})
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


def _kb_update(args) -> int:
    from .kb import update

    with command_connection("ats-kb-cli", require_table="kb_registry") as conn:
        res = update(conn, agent=args.agent, only=args.paths or None, prune_orphans=args.prune_orphans)
        _kb_record(conn, "kb_update", {"batch_id": res["batch_id"], "built": len(res["built"]),
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


def _kb_status(args) -> int:
    from .kb import status

    with command_connection("ats-kb-cli", require_table="kb_registry") as conn:
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


def _register_kb(sub: argparse._SubParsersAction) -> None:
    """Add `ats kb` (scan / update / status)."""
    p = sub.add_parser("kb", help="knowledge base with MD5 drift: scan, update [--agent], status",
                       description="One article per source file in kb/<CATEGORY>/<module>.md, rebuilt when the "
                                   "source's MD5 drifts; the registry is the kb_registry table.")
    ks = p.add_subparsers(dest="kb_command", required=True, metavar="COMMAND")
    q = ks.add_parser("scan", help="hash sources (only when size/mtime changed); mark stale / pending / orphaned",
                      description="Walks services/, mcp_servers/, .claude-cron/, .claude/agents|commands|skills, "
                                  "bench/. A clean clone's empty registry is restored from the articles' front matter.")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_kb_scan)
    q = ks.add_parser("update", help="rebuild stale, pending and failed articles",
                      description="Deterministic builder (ast: docstrings, public API, imports, tables, invariants, "
                                  "tests) by default; --agent runs the knowledge-base agent through headless Claude "
                                  "Code (/update-knowledge-base) and falls back to the deterministic builder "
                                  "when no model is available. Exit 1 when an article failed to build.")
    q.add_argument("--agent", action="store_true", help="build through the knowledge-base agent (claude --print)")
    q.add_argument("--prune-orphans", action="store_true", help="delete articles whose source file is gone")
    q.add_argument("--json", action="store_true")
    q.add_argument("paths", nargs="*", help="restrict to these source paths (relative to the project root)")
    q.set_defaults(func=_kb_update)
    q = ks.add_parser("status", help="counts per status and category")
    q.add_argument("--json", action="store_true",
                   help='print {"active": n, "stale": n, "pending": n, "failed": n, ...} as JSON')
    q.set_defaults(func=_kb_status)


# --- ats plan --------------------------------------------------------------------------------------------------

def _plan_save(args) -> int:
    from .plans import save_plan

    res = save_plan(args.title, args.from_file)
    print(res["path"])
    return 0


def _plan_list(args) -> int:
    from .plans import list_plans

    rows = list_plans()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plans saved yet (ats plan save \"title\" --from FILE)")
    for r in rows[: args.limit]:
        print(f"{r['date']} {r['time']}  {r['name']:<60}  {r['title']}")
    return 0


def _register_plan(sub: argparse._SubParsersAction) -> None:
    """Add `ats plan` (save / list)."""
    p = sub.add_parser("plan", help="save approved plans to plans/ (never overwriting) and list them")
    ps = p.add_subparsers(dest="plan_command", required=True, metavar="COMMAND")
    q = ps.add_parser("save", help="copy a plan verbatim to plans/YYYY-MM-DD_HHMM_<slug>.md",
                      description="The name uses the UTC time of saving and a slug of the title; an existing name "
                                  "gets -2, -3, ... appended (files are never overwritten).")
    q.add_argument("title")
    q.add_argument("--from", dest="from_file", required=True, metavar="FILE", help="the plan file ('-' = stdin)")
    q.set_defaults(func=_plan_save)
    q = ps.add_parser("list", help="saved plans, newest first")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_plan_list)


# --- ats docs --------------------------------------------------------------------------------------------------

def _docs_index(args) -> int:
    from . import docs_index as di

    with command_connection("ats-docs-cli") as conn:
        st = di.index(conn, embed=not args.no_embed)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print(f"indexed {st['documents']} documents, {st['chunks']} chunks "
          f"(+{st['added']} new, {st['updated']} changed, {st['removed']} removed, {st['unchanged']} unchanged; "
          f"{st['chunks_written']} chunks written, {st['embedded']} embedded) in {st['seconds']} s")
    print(f"vectors: {st['vector_backend']}, model: {st['model'] or '-'}"
          + (f" ({st['model_note']})" if st.get("model_note") else ""))
    return 0


def _docs_search(args) -> int:
    from . import docs_index as di

    with command_connection("ats-docs-cli") as conn:
        if not args.no_refresh:
            di.index(conn, embed=False)  # re-chunk changed files; vectors come from `ats docs index`
        res = di.search(conn, args.query, k=args.k, mode=args.mode, paths=args.path)
        missing = 0
        if res.get("model"):
            missing = conn.execute(
                "SELECT count(*) AS n FROM doc_chunks c WHERE NOT EXISTS (SELECT 1 FROM doc_embeddings e "
                "WHERE e.content_hash = c.content_hash AND e.model = %s)", (res["model"],)).fetchone()["n"]
    if missing:
        res["warning"] = f"{missing} chunks have no vector yet: run `ats docs index`"
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    if res.get("note"):
        print(f"note: {res['note']}")
    if res.get("warning"):
        print(f"warning: {res['warning']}")
    if not res["results"]:
        print("no results")
    for i, r in enumerate(res["results"], 1):
        print(f"{i:>2}. {r['path']}:{r['start_line']}  [{'+'.join(r['retrievers'])}] score {r['score']:.4f}")
        if r["heading"]:
            print(f"    {r['heading']}")
        print(f"    {r['snippet']}")
    return 0


def _docs_get(args) -> int:
    from . import docs_index as di

    with command_connection("ats-docs-cli") as conn:
        doc = di.get(conn, args.path)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(doc["text"], end="" if doc["text"].endswith("\n") else "\n")
    return 0


def _docs_status(args) -> int:
    from . import docs_index as di

    with command_connection("ats-docs-cli") as conn:
        st = di.status(conn, load_model=not args.no_model)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    m = st["model"]
    print(f"documents:      {st['documents']}  (new, not indexed: {len(st['new_documents'])})")
    print(f"chunks:         {st['chunks']}  (embedded: {st['embedded_chunks']}, stale: {st['stale_chunks']})")
    print(f"vector storage: {st['vector_backend']}")
    print(f"model:          {m['id'] or '-'}" + ("" if m["available"] else f"  ({m['note']})"))
    for p in st["stale_documents"]:
        print(f"  stale: {p}")
    for p in st["new_documents"][:20]:
        print(f"  new:   {p}")
    return 0


def _register_docs(sub: argparse._SubParsersAction) -> None:
    """Add `ats docs` (index, search, get, status) to the top-level parser."""
    p = sub.add_parser("docs", help="hybrid docs search (BM25 + embeddings) over kb/, plans/, reports/, .claude/, "
                                    "CLAUDE.md and lessons",
                       description="Hybrid docs search: the CLI twins of the ats-docs MCP tools.")
    dsub = p.add_subparsers(dest="docs_command", required=True, metavar="COMMAND")
    q = dsub.add_parser("index", help="index changed documents and embed changed chunks")
    q.add_argument("--no-embed", action="store_true", help="chunk only (BM25); skip computing vectors")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_docs_index)
    q = dsub.add_parser("search", help="search the docs (hybrid by default)")
    q.add_argument("query")
    q.add_argument("--mode", choices=("hybrid", "bm25", "vector"), default="hybrid")
    q.add_argument("-k", type=int, default=8, help="number of results (default 8)")
    q.add_argument("--path", action="append", metavar="PREFIX", help="restrict to a path prefix (repeatable)")
    q.add_argument("--no-refresh", action="store_true", help="do not re-chunk changed files first")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_docs_search)
    q = dsub.add_parser("get", help="print one document (path relative to the project root, or lesson:<id>)")
    q.add_argument("path")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_docs_get)
    q = dsub.add_parser("status", help="documents, chunks, stale chunks, model")
    q.add_argument("--no-model", action="store_true", help="do not load the embedding model")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_docs_status)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats kb`, `ats plan` and `ats docs` to the top-level parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level subparsers of `ats`.
    """
    _register_kb(sub)
    _register_plan(sub)
    _register_docs(sub)
