"""Docs search (ats.knowledge.docs_index and `ats docs`; the ats-docs MCP server: tests/mcp_servers/test_mcp_docs.py): heading-aware chunking that never
splits a code fence, BM25 + embeddings with reciprocal rank fusion, incremental re-embedding by content hash,
BM25-only degradation, pgvector and float8[] storage, lessons, get/status. Real PostgreSQL, the real local
all-MiniLM-L6-v2 model (skipped with the reason when it is not installed)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.knowledge import docs_index as di
from ats.knowledge import docs_records

from _docs_helpers import DOCS, load_embedder_or_skip, write_corpus
from conftest import ROOT, clone_template, drop_database, run_cli

pytestmark = pytest.mark.dblayer


@pytest.fixture(scope="module")
def embedder():
    return load_embedder_or_skip()


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def indexed(pg_admin_url, template_db, corpus_root, embedder, db_url):
    """(url, stats): a module database with the corpus indexed and embedded."""
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_docs")
    with psycopg.connect(url, row_factory=dict_row) as c:
        stats = di.index(c, corpus_root, embedder=embedder)
    yield url, stats
    drop_database(pg_admin_url, name)


@pytest.fixture
def iconn(indexed):
    with psycopg.connect(indexed[0], row_factory=dict_row) as c:
        yield c


# ---- chunking -----------------------------------------------------------------------------------------------

def test_chunks_split_at_headings_with_heading_paths_and_lines():
    text = "# Title\n\nintro\n\n## A\n\ntext a\n\n### A1\n\ntext a1\n\n## B\n\ntext b\n"
    chunks = di.chunk_markdown(text)
    assert [c.heading for c in chunks] == ["Title", "Title > A", "Title > A > A1", "Title > B"]
    assert [c.start_line for c in chunks] == [1, 5, 9, 13]
    assert chunks[1].content == "## A\n\ntext a"


def test_chunks_never_split_inside_code_fences():
    text = textwrap.dedent(DOCS["kb/data/candles.md"])
    chunks = di.chunk_markdown(text)
    assert [c.heading for c in chunks] == ["Candles", "Candles > Loading"]
    loading = chunks[1].content
    assert "# this line is inside a fence" in loading and loading.count("```") == 2
    # a long section is split at blank lines, but a fence longer than the limit stays whole
    fence = "```python\n" + "\n\n".join(f"# comment {i}\nx_{i} = {i}" for i in range(200)) + "\n```"
    long = "# Big\n\n" + "\n\n".join(f"paragraph {i} " + "word " * 40 for i in range(20)) + "\n\n" + fence + "\n\nafter\n"
    chunks = di.chunk_markdown(long, max_chars=1000)
    assert len(chunks) > 3 and all(c.heading == "Big" for c in chunks)
    for c in chunks:
        assert c.content.count("```") % 2 == 0, "a chunk boundary fell inside a fence"
    assert any(fence in c.content for c in chunks)
    tilde = "# T\n\n~~~\n## not a heading\n~~~\n\n## Real\n\nx\n"
    assert [c.heading for c in di.chunk_markdown(tilde)] == ["T", "T > Real"]


def test_chunk_hash_covers_heading_and_content():
    a, b = di.Chunk("H", "text", 1), di.Chunk("H2", "text", 1)
    assert a.content_hash != b.content_hash and a.content_hash == di.Chunk("H", "text", 9).content_hash


def test_tokenize_keeps_identifiers_and_parts():
    toks = di.tokenize("The net_pnl_daily_usd column of order_executions")
    assert {"net_pnl_daily_usd", "net", "pnl", "daily", "usd", "order_executions", "executions"} <= set(toks)
    assert "the" not in toks


def test_bm25_inverted_index_scores_equal_rank_bm25_bit_for_bit():
    """di.Bm25 replaces rank_bm25.BM25Okapi (same scores, same float operations): random corpora with words in
    more than half of the documents (negative idf -> epsilon floor), repeated and unknown query tokens."""
    import random

    import numpy as np
    from rank_bm25 import BM25Okapi

    rng = random.Random(7)
    words = [f"w{i}" for i in range(60)] + ["common"] * 30
    for n_docs in (1, 2, 7, 300):
        docs = [[rng.choice(words) for _ in range(rng.randint(0, 40))] for _ in range(n_docs)]
        docs[0] = docs[0] or ["common"]
        ref, ours = BM25Okapi(docs), di.Bm25(docs)
        assert ours.idf == ref.idf and ours.avgdl == ref.avgdl
        for _ in range(25):
            q = [rng.choice(words + ["unknown"]) for _ in range(rng.randint(1, 6))]
            a, b = ref.get_scores(q), ours.get_scores(q)
            assert np.array_equal(a, b), (q, a, b)
            assert np.array_equal(np.argsort(-a), np.argsort(-b))


def test_query_vectors_are_cached(embedder):
    q = "which breaker stops new entries after a bad day"
    v = embedder.encode_query(q)
    assert embedder.cached_query(q) is v and embedder.encode_query(q) is v and not v.flags.writeable
    assert float(abs(v - embedder.encode([q])[0]).max()) < 1e-5
    assert embedder.cached_query(q + "?") is None


# ---- index and search -------------------------------------------------------------------------------------

def test_index_covers_corpus_only(indexed, iconn, corpus_root):
    url, stats = indexed
    paths = {r["path"] for r in iconn.execute("SELECT path FROM doc_documents")}
    assert paths == set(DOCS)
    assert stats["added"] == len(DOCS) and stats["embedded"] == stats["chunks"] > len(DOCS)
    assert stats["vector_backend"] in ("pgvector", "float8[]")


def test_bm25_finds_identifiers(iconn, embedder):
    res = di.search(iconn, "daily_drawdown breaker", mode="bm25")
    top = res["results"][0]
    assert top["path"] == "kb/risk/circuit-breakers.md" and top["heading"] == "Circuit breakers > Daily drawdown"
    assert top["retrievers"] == ["bm25"] and res["mode_used"] == "bm25" and "note" not in top
    assert "daily_drawdown" in top["snippet"]


def test_vector_finds_meaning_without_shared_words(iconn, embedder):
    res = di.search(iconn, "stop buying after losing too much money today", mode="vector", k=3, embedder=embedder)
    assert "kb/risk/circuit-breakers.md" in [r["path"] for r in res["results"]]
    assert all(r["retrievers"] == ["vector"] and -1 <= r["score"] <= 1 for r in res["results"])


def test_hybrid_fuses_with_reciprocal_rank_k60(iconn, embedder):
    res = di.search(iconn, "why were BTCUSDT entries blocked during the crash", k=8, embedder=embedder)
    assert res["mode_used"] == "hybrid" and res["model"] == embedder.model_id and res["note"] is None
    both = [r for r in res["results"] if r["retrievers"] == ["bm25", "vector"]]
    assert both, res["results"]
    for r in res["results"]:
        assert r["score"] == pytest.approx(sum(1 / (60 + rank) for rank in r["ranks"].values()), abs=1e-6)
    assert [r["score"] for r in res["results"]] == sorted((r["score"] for r in res["results"]), reverse=True)
    assert res["results"][0]["path"] == "reports/investigations/2021-05-19_BTCUSDT.md"


def test_paths_filter(iconn, embedder):
    res = di.search(iconn, "positions", paths=["plans/"], embedder=embedder)
    assert res["results"] and all(r["path"].startswith("plans/") for r in res["results"])
    res = di.search(iconn, "investigator agent", paths=[".claude/"], embedder=embedder)
    assert {r["path"] for r in res["results"]} == {".claude/agents/investigator.md"}


def test_bad_arguments(iconn):
    with pytest.raises(Exception, match="mode must be"):
        di.search(iconn, "x", mode="fuzzy")
    with pytest.raises(Exception, match="empty query"):
        di.search(iconn, "  ")


def test_without_model_bm25_only_and_every_result_says_so(iconn, monkeypatch):
    monkeypatch.setenv("ATS_EMBED_MODEL", "none")
    res = di.search(iconn, "Kelly fraction sizing")
    assert res["mode_used"] == "bm25" and res["model"] is None and res["note"].startswith("BM25 only")
    assert res["results"] and all(r["note"].startswith("BM25 only") and r["retrievers"] == ["bm25"]
                                  for r in res["results"])
    assert res["results"][0]["path"] == "plans/2021-05-20-position-sizing.md"
    with pytest.raises(Exception, match="vector search unavailable"):
        di.search(iconn, "Kelly", mode="vector")
    st = di.status(iconn)
    assert st["model"]["available"] is False and "ATS_EMBED_MODEL" in st["model"]["note"]


def test_get_and_corpus_boundary(iconn, corpus_root):
    doc = di.get(iconn, "CLAUDE.md", corpus_root)
    assert doc["text"].startswith("# CLAUDE.md") and doc["indexed"] and not doc["stale"]
    assert [c["heading"] for c in doc["chunks"]] == ["CLAUDE.md > Anti-patterns"]
    for bad in ("../etc/passwd", "/etc/passwd", "services/secret.md", "kb/../../x.md", "pyproject.toml"):
        with pytest.raises(Exception, match="not a docs path"):
            di.get(iconn, bad, corpus_root)
    with pytest.raises(Exception, match="no such document"):
        di.get(iconn, "kb/missing.md", corpus_root)


def test_symlinks_out_of_the_root_are_neither_indexed_nor_served(tmp_path, iconn):
    root = write_corpus(tmp_path / "root")
    outside = tmp_path / "outside.md"
    outside.write_text("# secret\n\nnot for agents\n")
    (root / "kb" / "link.md").symlink_to(outside)
    assert "kb/link.md" not in di.doc_files(root) and "kb/risk/circuit-breakers.md" in di.doc_files(root)
    with pytest.raises(Exception, match="outside the project root"):
        di.get(iconn, "kb/link.md", root)


# ---- incremental indexing ---------------------------------------------------------------------------------

def test_reindex_embeds_only_changed_chunks(fresh_db_url, tmp_path, embedder):
    root = write_corpus(tmp_path)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        first = di.index(c, root, embedder=embedder)
        again = di.index(c, root, embedder=embedder)
        assert again["embedded"] == 0 and again["chunks_written"] == 0 and again["unchanged"] == len(DOCS)
        before = {r["content_hash"]: r["created_at"] for r in c.execute("SELECT content_hash, created_at FROM doc_embeddings")}
        # edit one section of one file: only that chunk gets a new vector
        p = root / "kb/risk/circuit-breakers.md"
        p.write_text(p.read_text().replace("above 6% it blocks", "above 7% it blocks"))
        st = di.status(c, root)
        assert st["stale_documents"] == ["kb/risk/circuit-breakers.md"] and st["stale_chunks"] == 3
        third = di.index(c, root, embedder=embedder)
        assert third["updated"] == 1 and third["chunks_written"] == 3 and third["embedded"] == 1
        after = {r["content_hash"]: r["created_at"] for r in c.execute("SELECT content_hash, created_at FROM doc_embeddings")}
        assert len(set(after) - set(before)) == 1 and len(set(before) - set(after)) == 1  # old vector collected
        assert all(after[h] == before[h] for h in set(after) & set(before))
        # a new file and a deleted file
        n_plan = c.execute("SELECT count(*) AS n FROM doc_chunks WHERE path LIKE 'plans/%'").fetchone()["n"]
        (root / "kb/new.md").write_text("# New\n\nfresh text about regimes\n")
        (root / "plans/2021-05-20-position-sizing.md").unlink()
        st = di.status(c, root)
        assert st["new_documents"] == ["kb/new.md"] and "plans/2021-05-20-position-sizing.md" in st["stale_documents"]
        fourth = di.index(c, root, embedder=embedder)
        assert fourth["added"] == 1 and fourth["removed"] == 1 and fourth["embedded"] == 1
        assert di.status(c, root)["stale_chunks"] == 0
        assert c.execute("SELECT count(*) AS n FROM doc_chunks WHERE path LIKE 'plans/%'").fetchone()["n"] == 0
        assert c.execute("SELECT count(*) AS n FROM doc_chunks").fetchone()["n"] == first["chunks"] - n_plan + 1


def test_lessons_are_indexed_and_gettable(fresh_db_url, tmp_path, embedder):
    root = write_corpus(tmp_path)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        les = docs_records.append_lesson(c, "Breaker reset timing", "The daily_drawdown breaker resets at the next "
                                         "UTC day, not 24 hours after the trip.", ["risk"], source="test")
        di.index(c, root, embedder=embedder)
        res = di.search(c, "when does the drawdown breaker reset", k=3, embedder=embedder)
        assert f"lesson:{les['lesson_id']}" in [r["path"] for r in res["results"]]
        res = di.search(c, "breaker reset", paths=["lesson:"], embedder=embedder)
        assert {r["path"] for r in res["results"]} == {f"lesson:{les['lesson_id']}"}
        doc = di.get(c, f"lesson:{les['lesson_id']}", root)
        assert "Breaker reset timing" in doc["text"] and "tags: risk" in doc["text"] and doc["indexed"]


def test_float8_array_fallback(fresh_db_url, tmp_path, embedder):
    """Without pgvector (the system PostgreSQL 15 here) embeddings are float8[]; on a server with pgvector the
    same storage is produced by dropping the extension, as migration 0004 would have created it."""
    root = write_corpus(tmp_path)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        if di.vector_backend(c) == "pgvector":
            c.execute("DROP EXTENSION vector CASCADE")
            c.execute("ALTER TABLE doc_embeddings ADD COLUMN embedding float8[] NOT NULL")
            c.commit()
        assert di.vector_backend(c) == "float8[]"
        st = di.index(c, root, embedder=embedder)
        assert st["vector_backend"] == "float8[]" and st["embedded"] == st["chunks"]
        res = di.search(c, "stop buying after losing too much money today", mode="vector", k=3, embedder=embedder)
        assert "kb/risk/circuit-breakers.md" in [r["path"] for r in res["results"]]
        hyb = di.search(c, "daily_drawdown breaker", embedder=embedder)
        assert hyb["results"][0]["retrievers"] == ["bm25", "vector"]
        assert hyb["results"][0]["path"] == "kb/risk/circuit-breakers.md"
        # vectors added later (as the server's background embedder does) are seen by the next search
        (root / "kb" / "weather.md").write_text("# Weather\n\nRain and thunderstorms are expected tomorrow.\n")
        di.index(c, root, embed=False)
        assert "kb/weather.md" not in [r["path"] for r in
                                       di.search(c, "storm forecast", mode="vector", embedder=embedder)["results"]]
        assert di.embed_missing(c, embedder) == 1
        res = di.search(c, "storm forecast", mode="vector", k=1, embedder=embedder)
        assert res["results"][0]["path"] == "kb/weather.md"


# ---- CLI twins (the MCP tools: tests/mcp_servers/test_mcp_docs.py) -----------------------------------------------------------------------------

def test_cli_twins(fresh_db_url, tmp_path, embedder):
    root = write_corpus(tmp_path)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    env = {"ATS_HOME": str(root), "ATS_DATABASE_URL": fresh_db_url}
    r = run_cli("docs", "index", env=env)
    assert r.returncode == 0, r.stderr
    assert f"indexed {len(DOCS)} documents" in r.stdout and "model: sentence-transformers/all-MiniLM-L6-v2" in r.stdout
    r = run_cli("docs", "search", "daily_drawdown breaker", "--json", "-k", "3", "--mode", "bm25", env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode_used"] == "bm25" and res["results"][0]["path"] == "kb/risk/circuit-breakers.md"
    r = run_cli("docs", "search", "Kelly fraction", env={**env, "ATS_EMBED_MODEL": "none"})
    assert r.returncode == 0 and "plans/2021-05-20-position-sizing.md" in r.stdout, r.stderr
    assert "note: BM25 only" in r.stdout
    r = run_cli("docs", "status", "--json", "--no-model", env=env)
    st = json.loads(r.stdout)
    assert st["documents"] == len(DOCS) and st["stale_documents"] == [] and st["new_documents"] == []
    r = run_cli("docs", "get", "../secret", env=env)
    assert r.returncode == 1 and "not a docs path" in r.stderr
