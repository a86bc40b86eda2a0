-- 0090 live loop: engine_runs.mode gains 'paper-live' (the paper broker on live venue data; 'live' = a venue
-- broker), and live_sessions holds one row per account's running live loop for `ats live status`.
ALTER TABLE engine_runs DROP CONSTRAINT IF EXISTS engine_runs_mode_check;
ALTER TABLE engine_runs ADD CONSTRAINT engine_runs_mode_check
    CHECK (mode IN ('replay', 'live', 'backtest', 'paper-live'));

CREATE TABLE live_sessions (
    account_id    text        PRIMARY KEY REFERENCES accounts (account_id),
    run_id        text        NOT NULL,
    broker        text        NOT NULL,                  -- paper | bybit | alpaca
    endpoint      text        NOT NULL,                  -- the venue REST endpoint (no credentials)
    pid           integer     NOT NULL,
    host          text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('STARTING', 'ACTIVE', 'REDUCING', 'HALTED', 'STOPPED')),
    reason        text,
    last_bar_time timestamptz,                           -- close of the last bar decided (venue clock)
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE live_sessions IS 'one row per account: the live loop (pid, last bar, ACTIVE/REDUCING/HALTED and why)';
