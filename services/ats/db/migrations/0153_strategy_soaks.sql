-- 0153 staged soaks (issue 17): `ats strategy soak start NAME --days N` turns a strategy's watchlist gate on and
-- its buy gate off (effective-dated writes to strategy_configurations) and records the soak here with its review
-- prompt; `ats strategy soak report NAME` replays the entries the buy gate blocked in the window. Account-scoped.

CREATE TABLE strategy_soaks (
    soak_id        bigserial   PRIMARY KEY,
    account_id     text        NOT NULL DEFAULT 'default',
    strategy_name  text        NOT NULL,
    started_at     timestamptz NOT NULL,              -- effective_from of the watchlist on / buy off write
    ends_at        timestamptz NOT NULL CHECK (ends_at > started_at),
    days           integer     NOT NULL CHECK (days > 0),
    prior_gates    jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- the gates in force before the soak (null: none)
    review_prompt  text,                              -- .claude-cron/prompts/<name>.md, NULL when none was scheduled
    note           text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX strategy_soaks_strategy ON strategy_soaks (account_id, strategy_name, started_at);
COMMENT ON TABLE strategy_soaks IS 'staged soaks: watchlist on / buy off for N days, then a review (ats.strategies.soak)';
SELECT ats_scope_table('strategy_soaks');
