"""The ats-docs MCP server (mcp_servers/docs.py) in process: search refreshes the index, hybrid results once the
vectors are computed, path filters, get, status and its refusals. Real PostgreSQL, the real local model."""

from __future__ import annotations

import pytest

from _docs_helpers import DOCS, load_embedder_or_skip, write_corpus
from _mcp_helpers import err, ok

pytestmark = pytest.mark.dblayer


@pytest.fixture(scope="module")
def embedder():
    return load_embedder_or_skip()


def test_docs_mcp_tools(fresh_db_url, tmp_path, embedder):
    from mcp_servers.docs import build_server

    root = write_corpus(tmp_path)
    server = build_server(url=fresh_db_url, root=root, refresh_seconds=0, preload_model=False)
    try:
        res = ok(server, "search", {"query": "daily_drawdown breaker", "k": 3})  # first search indexes
        assert res["results"][0]["path"] == "kb/risk/circuit-breakers.md"
        server._ats_docs.wait_embedding()
        st = ok(server, "status")
        assert st["documents"] == len(DOCS) and st["stale_chunks"] == 0 and st["model"]["available"]
        assert st["embedded_chunks"] == st["chunks"]
        res = ok(server, "search", {"query": "daily_drawdown breaker", "k": 3})
        assert res["mode_used"] == "hybrid" and "vector" in res["results"][0]["retrievers"]
        res = ok(server, "search", {"query": "sizing", "paths": ["plans/"], "mode": "bm25"})
        assert res["results"] and all(r["path"].startswith("plans/") for r in res["results"])
        # a file added while the server runs is found by the next search (refresh before search)
        (root / "kb" / "regimes.md").write_text("# Regimes\n\nThe strong_bear regime halves trade_amount_usd.\n")
        res = ok(server, "search", {"query": "strong_bear regime", "k": 2, "mode": "bm25"})
        assert res["results"][0]["path"] == "kb/regimes.md"
        doc = ok(server, "get", {"path": "kb/regimes.md"})
        assert doc["text"].startswith("# Regimes") and doc["indexed"]
        assert "not a docs path" in err(server, "get", {"path": "../../etc/passwd"})
        assert "mode must be" in err(server, "search", {"query": "x", "mode": "nope"})
    finally:
        server._ats_docs.wait_embedding()
        server._ats_docs.close()
