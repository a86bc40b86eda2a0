-- 0132 structured lessons learned (LL-NNN): the existing append-only lessons table gains the fields of an
-- incident lesson. LL numbers come from a sequence (never reused); a correction is a new row with the same
-- ll_number and the next version (the table stays append-only). Plain notes keep ll_number NULL.

CREATE SEQUENCE lesson_ll_seq START 1;
ALTER TABLE lessons
    ADD COLUMN ll_number    integer,
    ADD COLUMN version      integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN lesson_date  date,
    ADD COLUMN trigger      text,
    ADD COLUMN impact_usd   numeric,
    ADD COLUMN root_cause   text,
    ADD COLUMN fix_applied  text,
    ADD COLUMN prevention   text,
    ADD COLUMN rule         text,        -- machine-checkable prevention rule (ats.knowledge.lessons.parse_rule)
    ADD COLUMN links        jsonb NOT NULL DEFAULT '{}'::jsonb;  -- {incident_report, plan, commit}
CREATE UNIQUE INDEX lessons_ll_version ON lessons (ll_number, version) WHERE ll_number IS NOT NULL;
COMMENT ON COLUMN lessons.ll_number IS 'LL-NNN number (sequence lesson_ll_seq, never reused); NULL for a plain note';

-- the version in force of each LL lesson
CREATE VIEW lessons_current AS
    SELECT DISTINCT ON (ll_number) *
      FROM lessons WHERE ll_number IS NOT NULL
     ORDER BY ll_number, version DESC;
GRANT SELECT ON lessons_current TO ats_readonly;
GRANT USAGE, SELECT ON SEQUENCE lesson_ll_seq TO ats_account;
