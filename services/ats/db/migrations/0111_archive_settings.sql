-- 0111 project archive settings (ats.ops.archive.SETTINGS): where `ats archive` writes the git bundle + the
-- reports/kb/plans tarball, and how many archives it keeps. Default account, effective from 1970-01-01.
INSERT INTO system_settings (account_id, key, value, description, effective_from) VALUES
    ('default', 'archive.dir', '""'::jsonb,
     'project archives: target directory ("" = ATS_ARCHIVE_DIR or <root>/.ats/archives); best outside the checkout', '1970-01-01 00:00:00+00'),
    ('default', 'archive.keep', '10'::jsonb,
     'project archives: keep the newest N archives (bundle + tarball + manifest)', '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, key) DO NOTHING;
