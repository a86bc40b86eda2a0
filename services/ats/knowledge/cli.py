"""`ats kb ...`, `ats docs ...`, `ats plan ...`: the knowledge package's commands.

- ``ats kb scan | update [--agent] | status [--json]``: the MD5-drift knowledge base (:mod:`ats.knowledge.kb`).
- ``ats docs index | search | get | status``: hybrid docs search, the CLI twins of the ats-docs MCP tools
  (:mod:`ats.knowledge.docs_index`).
- ``ats plan save "title" --from FILE | list``: approved plans in plans/ (:mod:`ats.knowledge.plans`).
- ``ats lesson add --from FILE | --interactive``, ``list [--tag T]``, ``show LL-NNN``, ``mirror``: lessons learned
  LL-NNN (:mod:`ats.knowledge.lessons`); ``add`` also writes the ``kb/lessons/LL-NNN.md`` mirror.
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
        res = scan(conn, method="full" if args.full else "auto")
        _kb_record(conn, "kb_scan", {k: (len(v) if isinstance(v, list) else v) for k, v in res.items()})
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    c = res["counts"]
    how = (f"git: {res['candidates']} path(s) re-checked" if res["method"] == "git"
           else "full walk" + (f": {res['fallback_reason']}" if res["fallback_reason"] else ""))
    print(f"kb scan ({how}): {res['files']} source files ({res['hashed']} hashed, {res['unchanged']} unchanged)"
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
                      description="Asks git which files under services/, mcp_servers/, .claude-cron/, "
                                  ".claude/agents|commands|skills, bench/ and kb/ changed since the last scan and "
                                  "re-hashes only those (ats.knowledge.kb_git); walks everything instead outside a git "
                                  "checkout, on the first scan, or with --full. A clean clone's empty registry is "
                                  "restored from the articles' front matter.")
    q.add_argument("--full", action="store_true",
                   help="walk and stat every source instead of asking git what changed since the last scan")
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


# --- ats lesson --------------------------------------------------------------------------------------------------

_ASK = (("title", "Title (one line)"), ("trigger", "Trigger: what happened"), ("root_cause", "Root cause"),
        ("fix_applied", "Fix applied"), ("prevention", "Prevention"))


def _interactive_draft(read=input):
    """A LessonDraft from answers on stdin (empty optional answers are skipped); UsageError on a missing field."""
    from ..errors import UsageError
    from .lessons import LessonDraft, _date, _usd, parse_ll, parse_rule

    vals = {}
    for key, label in _ASK:
        v = read(f"{label}: ").strip()
        if not v:
            raise UsageError(f"lesson {key} is required")
        vals[key] = v
    date_s = read("Date (YYYY-MM-DD, empty = today): ").strip()
    usd = read("Impact in USD (empty = not quantified): ").strip()
    tags = [t.strip() for t in read("Tags (comma-separated, e.g. strategy:momentum,symbol:BTCUSDT): ").split(",")
            if t.strip()]
    rule = read("Prevention rule (empty = none; e.g. 'block entries in BTCUSDT during strong_bear'): ").strip() or None
    corr = read("Correction of (LL-NNN, empty = new lesson): ").strip()
    if rule:
        parse_rule(rule)
    return LessonDraft(**vals, lesson_date=_date(date_s, "interactive"), impact_usd=_usd(usd, "interactive"),
                       tags=tags, rule=rule, ll_number=parse_ll(corr) if corr else None, source="cli:interactive")


def _lesson_add(args) -> int:
    from ..errors import UsageError
    from .lessons import add_lesson, draft_from_file, mirror

    if bool(args.from_file) == bool(args.interactive):
        raise UsageError("ats lesson add: give exactly one of --from FILE or --interactive")
    draft = draft_from_file(args.from_file) if args.from_file else _interactive_draft()
    with command_connection("ats-lesson-cli", require_table="lessons") as conn:
        row = add_lesson(conn, draft)
        from ..db.events import record_event

        record_event(conn, "knowledge", "lesson_added",
                     payload={"ll": row["ll"], "version": row["version"], "title": row["title"],
                              "rule": row.get("rule"), "source": row["source"]})
        conn.commit()
        written = mirror(conn)
    if args.json:
        print(json.dumps({**row, "mirrored": [str(p) for p in written]}, indent=2, default=str))
        return 0
    print(f"{row['ll']} v{row['version']}: {row['title']}" + (f"  [rule: {row['rule']}]" if row.get("rule") else ""))
    for p in written:
        print(f"  mirrored {p}")
    return 0


def _lesson_list(args) -> int:
    from .lessons import list_lessons

    with command_connection("ats-lesson-cli", require_table="lessons") as conn:
        rows = list_lessons(conn, tag=args.tag)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no lessons" + (f" tagged {args.tag}" if args.tag else ""))
    for r in rows:
        impact = f"{float(r['impact_usd']):,.2f} USD" if r.get("impact_usd") is not None else "-"
        print(f"{r['ll']} v{r['version']} {r['lesson_date']}  {r['title']}  (impact {impact}"
              + (", rule" if r.get("rule") else "") + (f"; tags {', '.join(r['tags'])}" if r.get("tags") else "")
              + ")")
    return 0


def _lesson_show(args) -> int:
    from .lessons import get_lesson, render_lesson

    with command_connection("ats-lesson-cli", require_table="lessons") as conn:
        r = get_lesson(conn, args.ll)
    if args.json:
        print(json.dumps(r, indent=2, default=str))
        return 0
    print(render_lesson(r), end="")
    if len(r["history"]) > 1:
        print("versions: " + ", ".join(f"v{h['version']} {h['created_at']:%Y-%m-%d %H:%M} {h['title']}"
                                       for h in r["history"]))
    return 0


def _lesson_mirror(args) -> int:
    from .lessons import mirror

    with command_connection("ats-lesson-cli", require_table="lessons") as conn:
        written = mirror(conn)
    if args.json:
        print(json.dumps([str(p) for p in written]))
        return 0
    print(f"kb/lessons: {len(written)} file(s) written" + ("" if written else " (mirror up to date)"))
    for p in written:
        print(f"  {p}")
    return 0


def _register_lesson(sub: argparse._SubParsersAction) -> None:
    """Add `ats lesson` (add, list, show, mirror) to the top-level parser."""
    p = sub.add_parser("lesson", help="lessons learned LL-NNN: add, list, show, mirror to kb/lessons/",
                       description="Structured, append-only lessons (a correction is a new version), consulted "
                                   "before every entry; a lesson's prevention rule is an entry gate.")
    ls = p.add_subparsers(dest="lesson_command", required=True, metavar="COMMAND")
    q = ls.add_parser("add", help="add a lesson (or a correction: front matter 'll: LL-NNN') and mirror it")
    q.add_argument("--from", dest="from_file", metavar="FILE", help="markdown with YAML front matter")
    q.add_argument("--interactive", action="store_true", help="answer the fields on stdin")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_lesson_add)
    q = ls.add_parser("list", help="the version in force of every lesson")
    q.add_argument("--tag", default=None, help="only lessons carrying this tag (e.g. strategy:momentum)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_lesson_list)
    q = ls.add_parser("show", help="one lesson (version in force) and its versions")
    q.add_argument("ll", help="LL-NNN")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_lesson_show)
    q = ls.add_parser("mirror", help="write kb/lessons/LL-NNN.md for every lesson whose mirror is missing or stale")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_lesson_mirror)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ats kb`, `ats plan`, `ats docs` and `ats lesson` to the top-level parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level subparsers of `ats`.
    """
    _register_kb(sub)
    _register_plan(sub)
    _register_docs(sub)
    _register_lesson(sub)
