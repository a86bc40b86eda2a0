-- 0171 docs search: the per-search freshness check reads the newest vector of the model from an index.
--
-- ats.knowledge.docs_index.search keeps the BM25 structures and the embedding matrix in memory and checks, once
-- per search and in one round trip, whether the index changed: documents (count, latest indexed_at), the largest
-- chunk_id, and the model's vectors (count, latest created_at). This index makes the last two an index scan
-- instead of a scan of doc_embeddings.
-- No HNSW index: the nearest-neighbour search is an exact scan of the in-memory matrix (about 1 ms for 10,000
-- x 384 floats), which returns the same neighbours as the exact SQL scan did; an approximate HNSW scan combined
-- with the model and path filters can return other (or fewer than k) rows.

CREATE INDEX IF NOT EXISTS doc_embeddings_model_created ON doc_embeddings (model, created_at);
