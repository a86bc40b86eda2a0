-- 0130 accounts that share nothing: per-account roles and row-level security on every account-scoped table.
--
-- A process bound to an account (ATS_ACCOUNT / --account) connects with `-c role=ats_acct_<id>`; that role's
-- rows are filtered by the policy below on every SELECT, UPDATE and DELETE, and an INSERT/UPDATE whose row names
-- another account is refused ("new row violates row-level security policy"), by construction rather than by each
-- caller remembering a WHERE clause. The read-only MCP server of an account logs in as ats_ro_<id>, a
-- non-superuser that cannot SET ROLE away from it. The account of a role comes from account_roles keyed by
-- current_user, which a session cannot change with set_config() (a custom GUC could be).
-- The owner role (the unbound default process, migrations) is the tables' owner and is not filtered.
-- Numbered last on purpose: it scopes every table earlier migrations created; a later migration that creates a
-- table with an account_id column calls ats_scope_table('its_name') (a test checks none is left unscoped).

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS profile text NOT NULL DEFAULT 'conservative'
    CHECK (profile IN ('conservative', 'aggressive'));
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS universe text[];          -- symbols; NULL = the watchlist setting
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS description text;
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_broker_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_broker_check CHECK (broker IN ('paper', 'bybit', 'alpaca'));
ALTER TABLE accounts ADD CONSTRAINT accounts_id_shape CHECK (account_id ~ '^[a-z0-9][a-z0-9_-]{0,31}$');
COMMENT ON COLUMN accounts.profile IS 'risk profile applied at creation: conservative | aggressive (settings rows are the truth)';

-- Paper top-ups (`ats account fund`): append-only, one row per funding; the live paper loop adds them to cash.
CREATE TABLE account_cash_adjustments (
    adjustment_id  bigserial PRIMARY KEY,
    account_id     text NOT NULL REFERENCES accounts(account_id),
    amount_usd     numeric(20, 8) NOT NULL CHECK (amount_usd > 0),
    reason         text NOT NULL DEFAULT 'paper top-up',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_run_id text                                  -- the run that added it to its cash (NULL: not yet)
);
CREATE INDEX account_cash_adjustments_account ON account_cash_adjustments (account_id, adjustment_id);

CREATE TABLE account_roles (
    role_name   text PRIMARY KEY,
    account_id  text NOT NULL REFERENCES accounts(account_id),
    kind        text NOT NULL CHECK (kind IN ('app', 'readonly'))
);
COMMENT ON TABLE account_roles IS 'Which account a database role may see: ats_acct_<id> (app), ats_ro_<id> (MCP read-only).';
INSERT INTO account_roles (role_name, account_id, kind) VALUES ('ats_readonly', 'default', 'readonly')
    ON CONFLICT DO NOTHING;
GRANT SELECT ON account_roles TO PUBLIC;

-- The account the current role is bound to; NULL for a role that is bound to none (sees nothing).
CREATE OR REPLACE FUNCTION ats_current_account() RETURNS text
    LANGUAGE sql STABLE SECURITY INVOKER PARALLEL SAFE
    AS $$ SELECT account_id FROM account_roles WHERE role_name = current_user $$;

-- The group role every app role is a member of: DML on the project's tables (filtered by the policies).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ats_account') THEN
        BEGIN
            CREATE ROLE ats_account NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO ats_account', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO ats_account;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ats_account;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ats_account;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ats_account;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ats_account;
-- shared, account-less data stays shared but an account process cannot rewrite another's view of it
REVOKE UPDATE, DELETE ON schema_migrations FROM ats_account;

-- Row-level security with the account policy on one table (idempotent).
-- A nullable account_id marks rows that belong to no account (e.g. market-data events): those stay visible to
-- and writable by every account; a NOT NULL account_id is strictly the bound account's.
CREATE OR REPLACE FUNCTION ats_scope_table(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    nullable boolean;
    cond text;
BEGIN
    SELECT NOT attnotnull INTO nullable FROM pg_attribute WHERE attrelid = tbl AND attname = 'account_id';
    IF nullable IS NULL THEN
        RAISE EXCEPTION 'ats_scope_table: % has no account_id column', tbl;
    END IF;
    cond := CASE WHEN nullable
                 THEN '(account_id IS NULL OR account_id = (SELECT ats_current_account()))'
                 ELSE '(account_id = (SELECT ats_current_account()))' END;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS account_scope ON %s', tbl);
    EXECUTE format('CREATE POLICY account_scope ON %s USING %s WITH CHECK %s', tbl, cond, cond);
END $$;

-- every base table of the public schema with an account_id column (accounts itself included)
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.table_name
          FROM information_schema.columns c
          JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'public' AND c.column_name = 'account_id' AND t.table_type = 'BASE TABLE'
           AND c.table_name <> 'account_roles'
    LOOP
        PERFORM ats_scope_table(format('public.%I', r.table_name)::regclass);
    END LOOP;
END $$;
