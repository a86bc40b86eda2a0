"""Docs-search quality on this repository's own docs: recall@5 and MRR of the hybrid ranking over the operator
questions of tests/knowledge/docs_eval.toml, and the same ranking as the reference implementation.

The reference is the hybrid ranking as it was before the speed-up, rebuilt here from its parts: rank_bm25's
BM25Okapi over the indexed chunks (same tokens), the exact pgvector cosine scan in SQL, reciprocal rank fusion
k = 60 with ties by chunk_id. ``ats.knowledge.docs_index.search`` must return the same chunks in the same order
for every question, and its recall@5 / MRR must not fall below the floor recorded in the TOML. Real PostgreSQL,
the real local all-MiniLM-L6-v2 model (skipped with the reason when it is not installed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from ats.knowledge import docs_index as di

from _docs_helpers import load_embedder_or_skip
from conftest import ROOT, clone_template, drop_database

pytestmark = pytest.mark.dblayer

EVAL = Path(__file__).with_name("docs_eval.toml")
K = 10


@pytest.fixture(scope="module")
def evalset() -> dict:
    return tomllib.loads(EVAL.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def repo_index(pg_admin_url, template_db):
    """(url, embedder): a database with this repository's docs indexed and embedded."""
    emb = load_embedder_or_skip()
    name, url = clone_template(pg_admin_url, template_db, prefix="ats_docs_eval")
    with psycopg.connect(url, row_factory=dict_row) as c:
        if di.vector_backend(c) != "pgvector":
            pytest.skip("the reference ranking is the pgvector SQL scan; this server has no pgvector")
        di.index(c, ROOT, embedder=emb)
    yield url, emb
    drop_database(pg_admin_url, name)


def reference_search(conn, emb, query: str, k: int) -> list[int]:
    """chunk_ids of the pre-speed-up hybrid ranking (see module docstring)."""
    from rank_bm25 import BM25Okapi

    rows = conn.execute("SELECT chunk_id, heading, content FROM doc_chunks ORDER BY chunk_id").fetchall()
    ids = [r["chunk_id"] for r in rows]
    bm = BM25Okapi([di.tokenize(f"{r['heading']}\n{r['content']}") for r in rows])
    n = max(di.CANDIDATES, k)
    lists = []
    q = di.tokenize(query)
    if q:
        scores = bm.get_scores(q)
        hits = []
        for i in np.argsort(-scores):
            if scores[i] <= 0:
                break
            hits.append(ids[i])
            if len(hits) >= n:
                break
        lists.append(hits)
    qv = emb.encode([query])[0]
    lists.append([r["chunk_id"] for r in conn.execute(
        """SELECT c.chunk_id FROM doc_chunks c
             JOIN doc_embeddings e ON e.content_hash = c.content_hash AND e.model = %s
            ORDER BY e.embedding <=> %s::vector, c.chunk_id LIMIT %s""",
        (emb.model_id, di._vec_literal(qv), n))])
    fused: dict[int, float] = {}
    for hits in lists:
        for rank, cid in enumerate(hits, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (di.RRF_K + rank)
    return [cid for cid, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def quality(ranked_paths: list[list[str]], questions: list[dict]) -> tuple[float, float]:
    """(recall@5, MRR) of ranked result paths against each question's answering files."""
    hit5 = rr = 0.0
    for paths, q in zip(ranked_paths, questions):
        good = set(q["files"])
        ranks = [i for i, p in enumerate(paths, 1) if p in good]
        if ranks and ranks[0] <= 5:
            hit5 += 1
        rr += 1.0 / ranks[0] if ranks else 0.0
    return hit5 / len(questions), rr / len(questions)


def test_eval_set_names_real_files(evalset):
    qs = evalset["q"]
    assert len(qs) >= 20
    missing = sorted({f for q in qs for f in q["files"] if not (ROOT / f).is_file()})
    assert not missing, f"docs_eval.toml names files that do not exist: {missing}"


def test_hybrid_ranking_quality_and_same_results_as_reference(repo_index, evalset, capsys):
    url, emb = repo_index
    qs = evalset["q"]
    with psycopg.connect(url, row_factory=dict_row) as c:
        got = [di.search(c, q["ask"], k=K, mode="hybrid", embedder=emb)["results"] for q in qs]
        ref = [reference_search(c, emb, q["ask"], K) for q in qs]
        path_of = {r["chunk_id"]: r["path"] for r in c.execute("SELECT chunk_id, path FROM doc_chunks")}
    for q, g, r in zip(qs, got, ref):
        assert [x["chunk_id"] for x in g] == r, f"{q['ask']!r}: ranking differs from the reference"
    recall, mrr = quality([[x["path"] for x in g] for g in got], qs)
    ref_recall, ref_mrr = quality([[path_of[cid] for cid in r] for r in ref], qs)
    with capsys.disabled():
        print(f"\ndocs eval ({len(qs)} questions): recall@5 {recall:.3f} MRR {mrr:.3f} "
              f"(reference {ref_recall:.3f} / {ref_mrr:.3f}; floor {evalset['floor']['recall_at_5']:.3f} / "
              f"{evalset['floor']['mrr']:.3f})")
    assert recall >= evalset["floor"]["recall_at_5"] and mrr >= evalset["floor"]["mrr"]
