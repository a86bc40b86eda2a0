"""Benchmark (run by hand): latency of the MCP tools `investigate_symbol` and `search` at scale, each beside the
same work done directly with psycopg.

    .venv/bin/python bench/mcp.py [--rows 1000000] [--chunks 10000] [--iterations 50] [--admin-url URL] [--json]

Data (built with generate_series, in a throw-away database on an embedded pgserver in a temp directory, or on
``--admin-url`` / ``ATS_BENCH_ADMIN_URL``):
- ``--rows`` rows in each of signals and order_executions (and one fill per order), 50 symbols over one year of
  1-minute decision times (about 55 signals per symbol per day), 10 % of signals blocked;
- ``--chunks`` markdown chunks: synthetic kb/ articles (20 sections each) indexed with embeddings.

Measured (p50 / p95 / mean in ms over ``--iterations`` calls, after warm-up):
- investigate_symbol(symbol, one-day window), measured by ``bench/forensics.py`` (its ``audit`` shape is this
  data): MCP over stdio (the server as .mcp.json launches it), MCP in-process SDK client, the procedure called
  directly on a psycopg connection, and the baseline: the raw signals / blocked_signals / orders / fills SELECTs
  of that window run directly with psycopg, with each path's ratio to it;
- search(query, k=8): MCP over stdio and in-process (hybrid), the core function (hybrid / bm25 / vector), and the
  baselines run directly with psycopg: the pgvector (or float8[]) nearest-neighbour SQL for a precomputed query
  vector, and PostgreSQL full-text search (GIN index on to_tsvector, ts_rank).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is named mcp.py: drop its own directory from sys.path so `import mcp` finds the SDK, not this script
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

QUERIES = ["daily drawdown breaker tripped", "why was the entry blocked", "kelly fraction position sizing",
           "stale feed anomaly", "how are hourly snapshots reconciled", "take profit stop loss trailing",
           "regime strong bear", "cooldown after exit", "slippage and fees on fills", "walk-forward backtest",
           "market volatility halts entries", "order rejected by broker", "net_pnl_daily_usd anti-pattern",
           "coverage gaps in candles", "investigate BTCUSDT crash", "max hold hours exit"]
WORDS = ("breaker drawdown equity snapshot fill slippage fee kelly fraction regime bull bear neutral signal "
         "blocked gate cooldown trailing stop profit loss candle timeframe coverage anomaly stale feed broker "
         "order position exit entry volatility range momentum backtest walk-forward reconcile report lesson "
         "watchlist strategy parameter effective history migration readonly query index vector search").split()


def _load_forensics():
    """bench/forensics.py as a module: the timing helpers and the MCP client loops live there, once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_forensics", Path(__file__).resolve().parent / "forensics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _load_forensics()
pct, summary, timed, inproc_bench = FX.pct, FX.summary, FX.timed, FX.inproc_bench
#: the 1M-row audit data of the issue #18 figure (bench/forensics.py --shape audit builds the same rows)
build_engine_rows = FX.build_audit_rows


def stdio_bench(name: str, env: dict, calls: list[tuple[str, dict]], n: int) -> dict:
    """MCP server ``name`` of .mcp.json over stdio (see bench/forensics.py ``stdio_bench``)."""
    return FX.stdio_bench(env, calls, n, name=name)


# ---- data --------------------------------------------------------------------------------------------------

def write_docs(root: Path, chunks: int) -> int:
    rnd = random.Random(42)
    per_file = 20
    files = max(1, chunks // per_file)
    for f in range(files):
        d = root / "kb" / "bench" / f"area{f % 25:02d}"
        d.mkdir(parents=True, exist_ok=True)
        intro = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(20, 40)))
        parts = [f"# Article {f}: {' '.join(rnd.sample(WORDS, 3))}\n\n{intro}.\n"]
        for s in range(per_file - 1):
            words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(40, 90)))
            parts.append(f"## Section {s}: {' '.join(rnd.sample(WORDS, 2))}\n\n{words}.\n")
            if s % 7 == 3:
                parts.append("```sql\n# not a heading\nSELECT * FROM signals WHERE symbol = 'BTCUSDT';\n```\n")
        (d / f"article-{f:04d}.md").write_text("\n".join(parts), encoding="utf-8")
    return files


def bench_investigate(url: str, iterations: int, log) -> tuple[dict, dict]:
    """investigate_symbol over one-day windows: direct function, MCP in-process / stdio, raw SELECT baseline --
    measured by bench/forensics.py (which also covers the other forensic tools and a shape with positions).
    Returns (timings with ``ratio_p50`` = path / raw, counts of the first window)."""
    res = FX.bench_tools(url, "audit", iterations, {"investigate"}, log)["investigate"]
    return res, FX.investigate_window_counts(url)


def bench_search(url: str, tmp: Path, chunks: int, iterations: int, log) -> tuple[dict, dict]:
    """search(query, k=8): MCP stdio / in-process (hybrid), direct hybrid/bm25/vector, pgvector kNN SQL and
    PostgreSQL full-text search baselines. Returns (timings, index facts)."""
    from ats.knowledge import docs_index as di
    from mcp_servers.docs import build_server as docs_server

    facts: dict = {}
    home = tmp / "home"
    home.mkdir()
    shutil.copy(ROOT / "pyproject.toml", home / "pyproject.toml")
    facts["doc_files"] = write_docs(home, chunks)
    emb, note = di.load_embedder()
    log(f"indexing {facts['doc_files']} files (model: {emb.model_id if emb else note}) ...")
    with psycopg.connect(url, row_factory=dict_row) as c:
        st = di.index(c, home, embedder=emb)
        facts["docs_index"] = {k: st[k] for k in ("documents", "chunks", "embedded", "vector_backend", "seconds")}
        t0 = time.perf_counter()
        st2 = di.index(c, home, embedder=emb)
        facts["docs_reindex_unchanged_s"] = round(time.perf_counter() - t0, 2)
        assert st2["embedded"] == 0
        c.execute("CREATE INDEX bench_fts ON doc_chunks USING gin (to_tsvector('english', heading || ' ' || content))")
        c.commit()
    scalls = [("search", {"query": q, "k": 8}) for q in QUERIES]
    srch: dict = {}
    env = {"ATS_DATABASE_URL": url, "ATS_LOG_DIR": os.environ["ATS_LOG_DIR"], "ATS_HOME": str(home),
           "ATS_DOCS_REFRESH_SECONDS": "3600", "PATH": os.environ.get("PATH", "")}
    if os.environ.get("PYTHONPATH"):  # a checkout run with PYTHONPATH (a worktree over a shared venv): same code
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    log("search: stdio ...")
    srch["mcp_stdio_hybrid"] = stdio_bench("ats-docs", env, scalls, iterations)
    server = docs_server(url=url, root=home, preload_model=False, refresh_seconds=3600)
    log("search: in-process ...")
    srch["mcp_inprocess_hybrid"] = inproc_bench(server, scalls, iterations)
    server._ats_docs.close()
    with psycopg.connect(url, row_factory=dict_row) as c:
        for mode in ("hybrid", "bm25", "vector"):
            log(f"search: direct {mode} ...")
            srch[f"direct_function_{mode}"] = timed(
                lambda i, m=mode: (di.search(c, QUERIES[i % len(QUERIES)], k=8, mode=m, embedder=emb),
                                   c.rollback()), iterations)
        if emb is not None:
            # every call a query text not seen before: no query-vector cache hit
            srch["direct_function_hybrid_new_queries"] = timed(
                lambda i: (di.search(c, f"{QUERIES[i % len(QUERIES)]} {i + 1000}", k=8, mode="hybrid", embedder=emb),
                           c.rollback()), iterations)
            qvecs = [di._vec_literal(emb.encode([q])[0]) for q in QUERIES]
            srch["query_embedding_only"] = timed(lambda i: emb.encode([QUERIES[i % len(QUERIES)]]), iterations)
            if di.vector_backend(c) == "pgvector":
                def knn(i):
                    v = qvecs[i % len(qvecs)]
                    c.execute("""SELECT c.chunk_id, c.path, c.heading, 1 - (e.embedding <=> %s::vector) AS sim
                                 FROM doc_chunks c JOIN doc_embeddings e ON e.content_hash = c.content_hash
                                  AND e.model = %s ORDER BY e.embedding <=> %s::vector LIMIT 8""",
                              (v, emb.model_id, v)).fetchall()
                    c.rollback()
                srch["baseline_pgvector_knn_sql_psycopg"] = timed(knn, iterations)
                # same results: the vector retriever's top 8 vs the exact pgvector scan in SQL (ties by chunk_id)
                same = 0
                for q, v in zip(QUERIES, qvecs):
                    sql_ids = [r["chunk_id"] for r in c.execute(
                        """SELECT c.chunk_id FROM doc_chunks c JOIN doc_embeddings e ON e.content_hash = c.content_hash
                            AND e.model = %s ORDER BY e.embedding <=> %s::vector, c.chunk_id LIMIT 8""",
                        (emb.model_id, v)).fetchall()]
                    ours = [r["chunk_id"] for r in di.search(c, q, k=8, mode="vector", embedder=emb)["results"]]
                    same += ours == sql_ids
                    c.rollback()
                facts["vector_top8_same_as_sql"] = f"{same}/{len(QUERIES)}"

        def fts(i):
            c.execute("""SELECT chunk_id, path, heading, ts_rank(to_tsvector('english', heading || ' ' || content), q) AS r
                         FROM doc_chunks, plainto_tsquery('english', %s) q
                         WHERE to_tsvector('english', heading || ' ' || content) @@ q
                         ORDER BY r DESC LIMIT 8""", (QUERIES[i % len(QUERIES)],)).fetchall()
            c.rollback()
        srch["baseline_postgres_fts_psycopg"] = timed(fts, iterations)
    return srch, facts


def report(res: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(res, indent=2))
        return
    print(f"\nrows: {res['table_rows']}  (built in {res['build_engine_rows_s']} s)")
    if "investigate_window_counts" in res:
        print(f"investigate_symbol window (1 day, BTCUSDT) counts: {res['investigate_window_counts']}")
    if "docs_index" in res:
        print(f"docs: {res['doc_files']} files, index {res['docs_index']}, "
              f"unchanged re-index {res['docs_reindex_unchanged_s']} s")
        if "vector_top8_same_as_sql" in res:
            print(f"docs: vector top-8 identical to the exact pgvector SQL scan for "
                  f"{res['vector_top8_same_as_sql']} queries")
        s = res.get("search", {})
        if "direct_function_hybrid" in s:
            print(f"docs search target (issue #18): hybrid p95 <= 30 ms; today direct "
                  f"{s['direct_function_hybrid']['p95_ms']:.1f} ms, new queries "
                  f"{s.get('direct_function_hybrid_new_queries', {}).get('p95_ms', float('nan')):.1f} ms, "
                  f"MCP in-process {s.get('mcp_inprocess_hybrid', {}).get('p95_ms', float('nan')):.1f} ms "
                  f"(issue baseline 86 ms)")
    for section in ("investigate_symbol", "search"):
        if section not in res:
            continue
        print(f"\n{section}:")
        print(f"  {'path':<38} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}")
        for k, v in res[section].items():
            if k == "ratio_p50":  # investigate_symbol: each path / the raw SELECTs (target <= 2x, issue #18)
                print(f"  x raw SELECTs (p50; target <= 2.0): {v}")
                continue
            print(f"  {k:<38} {v['p50_ms']:>9.2f} {v['p95_ms']:>9.2f} {v['mean_ms']:>9.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--admin-url", default=os.environ.get("ATS_BENCH_ADMIN_URL"))
    ap.add_argument("--only", choices=("investigate", "search"), help="run one half of the benchmark")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from ats.db.connection import with_dbname
    from ats.db.migrate import migrate

    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="ats-bench-mcp-"))
    srv = None
    admin = args.admin_url
    if not admin:
        import pgserver

        srv = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
        admin = srv.get_uri()
    dbname = f"ats_bench_mcp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{dbname}"')
    url = with_dbname(admin, dbname)
    os.environ["ATS_DATABASE_URL"] = url
    os.environ.setdefault("ATS_LOG_DIR", str(tmp / "logs"))
    os.environ["ATS_MCP_TOOL_TIMEOUT_MS"] = "120000"
    rows = 0 if args.only == "search" else args.rows
    res: dict = {"rows": rows, "chunks_target": args.chunks, "iterations": args.iterations}
    try:
        migrate(url)
        log(f"building {rows:,} signals / order_executions / fills ...")
        res["build_engine_rows_s"] = round(build_engine_rows(url, rows), 1)
        with psycopg.connect(url) as c:
            res["table_rows"] = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                                 for t in ("signals", "blocked_signals", "order_executions", "fills")}
        if args.only != "search":
            res["investigate_symbol"], res["investigate_window_counts"] = bench_investigate(url, args.iterations, log)
        if args.only != "investigate":
            res["search"], facts = bench_search(url, tmp, args.chunks, args.iterations, log)
            res.update(facts)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    report(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
