-- 0110 backup settings: rotation of `ats db backup` dumps (ats.db.backup.SETTINGS), default account, effective
-- from 1970-01-01 like the other seeded settings. Existing rows are left alone.
INSERT INTO system_settings (account_id, key, value, description, effective_from) VALUES
    ('default', 'backup.keep_daily', '7'::jsonb,
     'database backups: keep the newest dump of each of the last N UTC days that have one', '1970-01-01 00:00:00+00'),
    ('default', 'backup.keep_weekly', '4'::jsonb,
     'database backups: also keep the newest dump of each of the last M ISO weeks that have one', '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, key) DO NOTHING;
