-- 0131 alerts: what was sent to a person, per cause, so alerts are deduplicated and rate-limited
-- (one message per cause per window, with the count of the events it stands for).

CREATE TABLE alert_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    account_id      text NOT NULL REFERENCES accounts(account_id),
    cause           text NOT NULL,             -- e.g. breaker_tripped:velocity:BTCUSDT, feed_anomaly:ETHUSDT
    first_event_id  bigint,                    -- system_events covered by this message (NULL: a daily summary)
    last_event_id   bigint,
    event_count     integer NOT NULL DEFAULT 1,
    pending_count   integer NOT NULL DEFAULT 0, -- events of this cause seen inside the window, not yet sent
    sent_at         timestamptz NOT NULL DEFAULT clock_timestamp(),   -- wall clock
    delivered       boolean NOT NULL,
    channels        integer NOT NULL,          -- how many channel URLs it went to
    title           text NOT NULL,
    body            text NOT NULL,
    error           text
);
CREATE INDEX alert_deliveries_cause ON alert_deliveries (account_id, cause, sent_at DESC);

-- the last system_events row the dispatcher has looked at, per account
CREATE TABLE alert_cursor (
    account_id     text PRIMARY KEY REFERENCES accounts(account_id),
    last_event_id  bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

INSERT INTO system_settings (account_id, key, value, description, effective_from) VALUES
    ('default', 'alerts.urls', '[]'::jsonb,
     'apprise notification URLs (mailto://, tgram://, slack://, json://...); ${VAR} is read from the environment or the account env file, so secrets stay out of the database', '1970-01-01 00:00:00+00'),
    ('default', 'alerts.window_minutes', '60'::jsonb,
     'rate limit: at most one message per cause per this many minutes; later events of the cause are counted and sent with the next message', '1970-01-01 00:00:00+00'),
    ('default', 'alerts.include_replays', 'false'::jsonb,
     'also alert on breaker trips of replays and backtests (normally only live and paper-live runs alert)', '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, key) DO NOTHING;

SELECT ats_scope_table('alert_deliveries');
SELECT ats_scope_table('alert_cursor');
