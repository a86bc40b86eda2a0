-- 0005 knowledge base: one row per source file, tracked by MD5 drift (ats kb scan / update / status).
--
-- status: pending  = source known, article never built (new module) or its article file is missing
--         active   = article built from the source's current MD5 (built_md5 = md5)
--         stale    = the source's MD5 drifted since the article was built
--         failed   = the last build raised (error says why); retried by the next update
--         orphaned = the source file is gone; the article is kept until pruned
-- size + mtime are the stat() figures of the last hash: a scan re-hashes only files whose size or mtime changed.
-- The same facts (source_path, source_md5, version, builder, built_at) are in each article's YAML front matter,
-- so a clean clone (empty registry) rebuilds this table from the committed kb/ articles.

CREATE TABLE kb_registry (
    source_path   text PRIMARY KEY,                     -- relative to the project root, '/' separators
    md5           text,                                 -- MD5 of the source at the last scan (NULL: not hashed yet)
    size          bigint,                               -- bytes, at the last hash
    mtime         double precision,                     -- st_mtime (Unix seconds), at the last hash
    built_md5     text,                                 -- MD5 of the source the article was built from
    article_path  text NOT NULL,                        -- kb/<CATEGORY>/<module>.md, relative to the root
    category      text NOT NULL,
    version       integer NOT NULL DEFAULT 0,           -- +1 per rebuild
    status        text NOT NULL CHECK (status IN ('active', 'stale', 'pending', 'failed', 'orphaned')),
    built_at      timestamptz,
    builder       text,                                 -- deterministic | agent:knowledge-base-agent
    builder_note  text,                                 -- e.g. why the agent builder fell back
    error         text,                                 -- last build error (status failed)
    batch_id      text,                                 -- the `ats kb update` run that last built it
    first_seen    timestamptz NOT NULL DEFAULT now(),
    scanned_at    timestamptz
);
CREATE INDEX kb_registry_status ON kb_registry (status, category);
CREATE UNIQUE INDEX kb_registry_article ON kb_registry (article_path);
COMMENT ON TABLE kb_registry IS 'Knowledge-base registry: source MD5 vs the MD5 each kb/ article was built from.';
