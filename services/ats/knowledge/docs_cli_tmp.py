"""`ats docs ...`: index, search, get and status of the hybrid docs search (the CLI twins of the ats-docs MCP
tools; core in ats.procedures.docs_index)."""

from __future__ import annotations

CLI_ORDER = 60

import argparse
import json


def _connect():
    from .db import connect

    return connect(application_name="ats-docs-cli")


def _index(args) -> int:
    from .procedures import docs_index as di

    with _connect() as conn:
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


def _search(args) -> int:
    from .procedures import docs_index as di

    with _connect() as conn:
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


def _get(args) -> int:
    from .procedures import docs_index as di

    with _connect() as conn:
        doc = di.get(conn, args.path)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(doc["text"], end="" if doc["text"].endswith("\n") else "\n")
    return 0


def _status(args) -> int:
    from .procedures import docs_index as di

    with _connect() as conn:
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats docs` (index, search, get, status) to the top-level parser."""
    p = sub.add_parser("docs", help="hybrid docs search (BM25 + embeddings) over kb/, plans/, reports/, .claude/, "
                                    "CLAUDE.md and lessons",
                       description="Hybrid docs search: the CLI twins of the ats-docs MCP tools.")
    dsub = p.add_subparsers(dest="docs_command", required=True, metavar="COMMAND")
    q = dsub.add_parser("index", help="index changed documents and embed changed chunks")
    q.add_argument("--no-embed", action="store_true", help="chunk only (BM25); skip computing vectors")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_index)
    q = dsub.add_parser("search", help="search the docs (hybrid by default)")
    q.add_argument("query")
    q.add_argument("--mode", choices=("hybrid", "bm25", "vector"), default="hybrid")
    q.add_argument("-k", type=int, default=8, help="number of results (default 8)")
    q.add_argument("--path", action="append", metavar="PREFIX", help="restrict to a path prefix (repeatable)")
    q.add_argument("--no-refresh", action="store_true", help="do not re-chunk changed files first")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_search)
    q = dsub.add_parser("get", help="print one document (path relative to the project root, or lesson:<id>)")
    q.add_argument("path")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_get)
    q = dsub.add_parser("status", help="documents, chunks, stale chunks, model")
    q.add_argument("--no-model", action="store_true", help="do not load the embedding model")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_status)
