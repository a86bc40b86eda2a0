-- 0001 foundation: accounts, candles, effective-dated configuration with trigger-written history,
-- the system_events audit log, and the least-privilege role ats_readonly.

CREATE TABLE accounts (
    account_id     text PRIMARY KEY,
    broker         text NOT NULL DEFAULT 'paper',          -- paper | alpaca | bybit
    mode           text NOT NULL DEFAULT 'paper' CHECK (mode IN ('paper', 'live')),
    base_currency  text NOT NULL DEFAULT 'USDT',
    starting_cash  numeric(20, 8) NOT NULL DEFAULT 10000,   -- in base_currency
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE accounts IS 'Trading accounts; every audit row names its account_id. Accounts share nothing mutable.';
INSERT INTO accounts (account_id) VALUES ('default');

-- Prices and volumes are NUMERIC: exact decimal values as the exchange published them (no binary-float
-- drift, so re-loads compare equal and duplicate detection is exact). The engine converts to float64 for
-- indicator math; money columns elsewhere are NUMERIC too.
CREATE TABLE candles (
    symbol     text        NOT NULL,
    timeframe  text        NOT NULL CHECK (timeframe IN ('5m', '15m', '1h', '4h', '1d', '1w')),
    open_time  timestamptz NOT NULL,                 -- candle open, UTC
    open       numeric     NOT NULL CHECK (open  >= 0),
    high       numeric     NOT NULL CHECK (high  >= 0),
    low        numeric     NOT NULL CHECK (low   >= 0),
    close      numeric     NOT NULL CHECK (close >= 0),
    volume     numeric     NOT NULL CHECK (volume >= 0),
    source     text        NOT NULL,                 -- binance | bybit | alpaca | file:<name> | resample
    complete   boolean     NOT NULL DEFAULT true,    -- false: a resampled candle whose source interval had gaps
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, open_time, source),
    CHECK (high >= low)
);
CREATE INDEX candles_tf_time ON candles (timeframe, open_time);
COMMENT ON TABLE candles IS 'OHLCV candles, one row per (symbol, timeframe, open_time, source); times UTC.';

-- ---------------------------------------------------------------------------------------------------
-- Effective-dated configuration. The current row lives in the main table; every INSERT/UPDATE/DELETE is
-- copied by trigger into the append-only *_history table with valid_from = the row's effective_from, so no
-- code path can skip the history. "As of T" = the latest history row with valid_from <= T.
-- ---------------------------------------------------------------------------------------------------
CREATE TABLE strategy_configurations (
    account_id         text NOT NULL REFERENCES accounts(account_id),
    strategy_name      text NOT NULL,
    watchlist_enabled  boolean NOT NULL DEFAULT true,   -- gate 1: contributes watchlist scoring
    buy_enabled        boolean NOT NULL DEFAULT false,  -- gate 2: may open new positions
    sell_enabled       boolean NOT NULL DEFAULT true,   -- gate 3: may close positions
    params             jsonb   NOT NULL DEFAULT '{}'::jsonb,  -- tp_pct, sl_pct, trade_amount_usd, cooldown_min, ...
    effective_from     timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    updated_by         text NOT NULL DEFAULT current_user,
    PRIMARY KEY (account_id, strategy_name)
);

CREATE TABLE strategy_configurations_history (
    history_id         bigserial PRIMARY KEY,
    account_id         text NOT NULL,
    strategy_name      text NOT NULL,
    operation          text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    watchlist_enabled  boolean,
    buy_enabled        boolean,
    sell_enabled       boolean,
    params             jsonb,
    valid_from         timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by         text NOT NULL DEFAULT current_user
);
CREATE INDEX strategy_configurations_history_asof
    ON strategy_configurations_history (account_id, strategy_name, valid_from DESC, history_id DESC);

CREATE TABLE system_settings (
    account_id      text NOT NULL REFERENCES accounts(account_id),
    key             text NOT NULL,
    value           jsonb NOT NULL,
    description     text,
    effective_from  timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL DEFAULT current_user,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE system_settings_history (
    history_id   bigserial PRIMARY KEY,
    account_id   text NOT NULL,
    key          text NOT NULL,
    operation    text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    value        jsonb,
    valid_from   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by   text NOT NULL DEFAULT current_user
);
CREATE INDEX system_settings_history_asof ON system_settings_history (account_id, key, valid_from DESC, history_id DESC);

CREATE FUNCTION ats_strategy_configurations_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO strategy_configurations_history
            (account_id, strategy_name, operation, valid_from)
        VALUES (OLD.account_id, OLD.strategy_name, 'DELETE', greatest(now(), OLD.effective_from));
        RETURN OLD;
    END IF;
    INSERT INTO strategy_configurations_history
        (account_id, strategy_name, operation, watchlist_enabled, buy_enabled, sell_enabled, params, valid_from)
    VALUES (NEW.account_id, NEW.strategy_name, TG_OP, NEW.watchlist_enabled, NEW.buy_enabled, NEW.sell_enabled,
            NEW.params, NEW.effective_from);
    RETURN NEW;
END $$;

CREATE FUNCTION ats_system_settings_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO system_settings_history (account_id, key, operation, valid_from)
        VALUES (OLD.account_id, OLD.key, 'DELETE', greatest(now(), OLD.effective_from));
        RETURN OLD;
    END IF;
    INSERT INTO system_settings_history (account_id, key, operation, value, valid_from)
    VALUES (NEW.account_id, NEW.key, TG_OP, NEW.value, NEW.effective_from);
    RETURN NEW;
END $$;

-- updated_at always moves; an UPDATE that does not set effective_from explicitly takes effect now().
CREATE FUNCTION ats_touch_effective() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF TG_OP = 'UPDATE' AND NEW.effective_from IS NOT DISTINCT FROM OLD.effective_from THEN
        NEW.effective_from := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER strategy_configurations_touch BEFORE UPDATE ON strategy_configurations
    FOR EACH ROW EXECUTE FUNCTION ats_touch_effective();
CREATE TRIGGER strategy_configurations_history AFTER INSERT OR UPDATE OR DELETE ON strategy_configurations
    FOR EACH ROW EXECUTE FUNCTION ats_strategy_configurations_history();
CREATE TRIGGER system_settings_touch BEFORE UPDATE ON system_settings
    FOR EACH ROW EXECUTE FUNCTION ats_touch_effective();
CREATE TRIGGER system_settings_history AFTER INSERT OR UPDATE OR DELETE ON system_settings
    FOR EACH ROW EXECUTE FUNCTION ats_system_settings_history();

-- Append-only guard, reused by every *_history / audit table that must never change.
CREATE FUNCTION ats_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER strategy_configurations_history_append_only BEFORE UPDATE OR DELETE ON strategy_configurations_history
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();
CREATE TRIGGER system_settings_history_append_only BEFORE UPDATE OR DELETE ON system_settings_history
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();
CREATE TRIGGER strategy_configurations_history_no_truncate BEFORE TRUNCATE ON strategy_configurations_history
    FOR EACH STATEMENT EXECUTE FUNCTION ats_append_only();
CREATE TRIGGER system_settings_history_no_truncate BEFORE TRUNCATE ON system_settings_history
    FOR EACH STATEMENT EXECUTE FUNCTION ats_append_only();

-- ---------------------------------------------------------------------------------------------------
-- system_events: the audit log. ts is the event's time on the engine clock (simulated time in a replay);
-- recorded_at is the wall clock.
-- ---------------------------------------------------------------------------------------------------
CREATE TABLE system_events (
    event_id     bigserial PRIMARY KEY,
    ts           timestamptz NOT NULL DEFAULT now(),
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    account_id   text,
    component    text NOT NULL,          -- market_data | engine | risk | broker | cron | mcp | kb | ...
    event_type   text NOT NULL,          -- e.g. breaker_tripped, breaker_reset, feed_anomaly, cron_run
    severity     text NOT NULL DEFAULT 'info' CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    symbol       text,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX system_events_ts ON system_events (ts);
CREATE INDEX system_events_symbol_ts ON system_events (symbol, ts) WHERE symbol IS NOT NULL;
CREATE INDEX system_events_type_ts ON system_events (event_type, ts);
CREATE INDEX system_events_component_ts ON system_events (component, ts);
COMMENT ON TABLE system_events IS 'Audit log: every breaker trip/reset, anomaly, run and narrow write. ts = engine clock (UTC).';

-- ---------------------------------------------------------------------------------------------------
-- Least privilege: ats_readonly may SELECT the project's tables and nothing else.
-- ---------------------------------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ats_readonly') THEN
        BEGIN
            CREATE ROLE ats_readonly LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by another database's migration on the same server
        END;
    END IF;
END $$;
ALTER ROLE ats_readonly SET default_transaction_read_only = on;
ALTER ROLE ats_readonly SET statement_timeout = '5s';
ALTER ROLE ats_readonly SET idle_in_transaction_session_timeout = '30s';

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ats_readonly', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE CREATE ON DATABASE %I FROM PUBLIC', current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ats_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ats_readonly;
-- every table later migrations create (as this owner) is readable too, and only readable
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ats_readonly;

-- no server-file, large-object or backend-signalling functions for non-superusers in this database
REVOKE EXECUTE ON FUNCTION pg_read_file(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_read_file(text, bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_read_binary_file(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_ls_dir(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_import(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_import(text, oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_export(oid, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_creat(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_create(oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_from_bytea(oid, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_put(oid, bigint, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_unlink(oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_open(oid, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lowrite(integer, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_terminate_backend(integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_cancel_backend(integer) FROM PUBLIC;
