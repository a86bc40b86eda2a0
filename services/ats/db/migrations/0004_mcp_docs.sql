-- 0004 MCP + docs search: the lessons log and the reports registry (written only through the narrow, audited
-- MCP write tools / procedures), and the hybrid docs-search index (chunks + embeddings keyed by content hash).

-- ---- lessons: short, append-only notes agents and operators learned the hard way -----------------------
CREATE TABLE lessons (
    lesson_id   bigserial PRIMARY KEY,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    body        text NOT NULL CHECK (length(body) >= 1),
    tags        text[] NOT NULL DEFAULT '{}',
    source      text NOT NULL DEFAULT 'operator',   -- mcp | cli | agent:<name> | operator | incident:<id>
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lessons_created ON lessons (created_at);
CREATE INDEX lessons_tags ON lessons USING gin (tags);
COMMENT ON TABLE lessons IS 'Append-only lessons (title, body, tags); searchable through ats-docs as lesson:<id>.';
CREATE TRIGGER lessons_append_only BEFORE UPDATE OR DELETE ON lessons
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();
CREATE TRIGGER lessons_no_truncate BEFORE TRUNCATE ON lessons
    FOR EACH STATEMENT EXECUTE FUNCTION ats_append_only();

-- ---- reports registry: every report file an agent or procedure wrote, with a one-paragraph summary ------
CREATE TABLE reports_registry (
    report_id   bigserial PRIMARY KEY,
    kind        text NOT NULL,                     -- investigation | health_check | daily | weekly | kb | other
    path        text NOT NULL,                     -- relative to the project root, e.g. reports/investigations/...
    summary     text NOT NULL DEFAULT '',
    source      text NOT NULL DEFAULT 'mcp',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reports_registry_kind_created ON reports_registry (kind, created_at);
CREATE INDEX reports_registry_path ON reports_registry (path);
COMMENT ON TABLE reports_registry IS 'Append-only registry of written reports (kind, path, summary).';
CREATE TRIGGER reports_registry_append_only BEFORE UPDATE OR DELETE ON reports_registry
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();

-- ---- docs search index -----------------------------------------------------------------------------------
-- doc_documents: one row per indexed markdown file (or lesson:<id>), with the SHA-256 of its text.
CREATE TABLE doc_documents (
    path         text PRIMARY KEY,                 -- relative to the project root, '/' separators; lesson:<id>
    sha256       text NOT NULL,
    size_bytes   bigint NOT NULL,
    mtime        timestamptz,                      -- file mtime when indexed (NULL for lessons)
    title        text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);

-- doc_chunks: heading-delimited sections (never split inside a code fence).
CREATE TABLE doc_chunks (
    chunk_id      bigserial PRIMARY KEY,
    path          text NOT NULL REFERENCES doc_documents(path) ON DELETE CASCADE,
    ordinal       integer NOT NULL,                -- position in the document, from 0
    heading       text NOT NULL DEFAULT '',        -- heading path, 'Title > Section > Subsection'
    content       text NOT NULL,
    content_hash  text NOT NULL,                   -- sha256 of heading + content: the embedding cache key
    start_line    integer NOT NULL,                -- 1-based line of the chunk's first line in the file
    UNIQUE (path, ordinal)
);
CREATE INDEX doc_chunks_hash ON doc_chunks (content_hash);

-- doc_embeddings: dense vectors per (content hash, model); recomputed only for hashes that have none.
-- pgvector `vector(384)` when the server has the extension (the embedded pgserver does), else float8[].
-- No ANN index: search is an exact cosine scan filtered by model (10k chunks scan in milliseconds, and an HNSW
-- index combined with the model filter could silently return fewer than k rows).
DO $$
DECLARE
    has_vector boolean := false;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS vector;
        has_vector := true;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pgvector not available (%): doc_embeddings.embedding is float8[]', SQLERRM;
    END;
    IF has_vector THEN
        EXECUTE 'CREATE TABLE doc_embeddings (
                     content_hash text NOT NULL,
                     model        text NOT NULL,
                     dim          integer NOT NULL,
                     embedding    vector(384) NOT NULL,
                     created_at   timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (content_hash, model))';
    ELSE
        EXECUTE 'CREATE TABLE doc_embeddings (
                     content_hash text NOT NULL,
                     model        text NOT NULL,
                     dim          integer NOT NULL,
                     embedding    float8[] NOT NULL,
                     created_at   timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (content_hash, model))';
    END IF;
END $$;
COMMENT ON TABLE doc_embeddings IS 'Dense vectors of doc_chunks content keyed by (content_hash, model); vector(384) or float8[].';
