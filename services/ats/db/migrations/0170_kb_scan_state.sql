-- 0170 kb scan state: what the last `ats kb scan` learned from git, so the next scan re-hashes only the files
-- git (and the directory listing cache) say may have changed since (ats.knowledge.kb_git).
--
-- One row: the registry is one per database. A scan whose root differs from `root`, or a row with head_commit
-- NULL (not a git checkout, or git failed), makes the next scan a full MD5 scan that rewrites this row.
--   staged     git diff-index --cached HEAD (index vs HEAD) at the last scan, reused while the index file is unchanged
--   dirty      git diff-files (work tree vs index, by git's stat cache) at the last scan, plus files hashed in the
--              last scan whose mtime was within 2 s of it (a later revert must still be noticed)
--   untracked  registry paths git does not track (untracked or ignored sources and kb articles): re-stat'ed on
--              every scan, like the full scan does for every file
--   dirs       {directory: st_mtime_ns} of the watched directories (-1: modified too recently to trust, re-listed
--              next scan; null: absent): a directory whose mtime moved is re-listed for new files
-- Not account data (like kb_registry): no account_id.

CREATE TABLE kb_scan_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    root             text NOT NULL,                      -- absolute project root the registry was scanned from
    method           text NOT NULL CHECK (method IN ('git', 'full')),
    head_commit      text,                               -- HEAD at the last scan; NULL = no usable git state
    index_sig        bigint[],                           -- [st_mtime_ns, st_size, st_ino] of the git index file
    staged           text[] NOT NULL DEFAULT '{}',
    dirty            text[] NOT NULL DEFAULT '{}',
    untracked        text[] NOT NULL DEFAULT '{}',
    dirs             jsonb NOT NULL DEFAULT '{}',
    fallback_reason  text,                               -- why the last scan was a full one (NULL: git scan)
    scanned_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kb_scan_state IS 'Last kb scan: git HEAD, index signature, dirty/staged/untracked paths, directory mtimes.';
