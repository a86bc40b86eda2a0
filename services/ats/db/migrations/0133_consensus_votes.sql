-- 0133 consensus gate: every model vote on an entry candidate, with latency and cost, so a decision can be
-- audited and a replay can reuse recorded votes (`--consensus replay`) instead of calling a model.

CREATE TABLE consensus_votes (
    vote_id      bigserial PRIMARY KEY,
    run_id       text NOT NULL,
    account_id   text NOT NULL,
    ts           timestamptz NOT NULL,          -- decision bar (engine clock)
    strategy     text NOT NULL,
    symbol       text NOT NULL,
    side         text NOT NULL,
    voter        text NOT NULL,                 -- e.g. claude:claude-sonnet-4-5, openai:gpt-x@http://host
    vote         text NOT NULL CHECK (vote IN ('ENTER', 'HOLD')),
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason       text,
    latency_ms   double precision NOT NULL,
    cost_usd     numeric,                       -- NULL when the endpoint does not say
    error        text,                          -- timeout | http 500 | malformed reply ... (the vote is then HOLD)
    decided      text NOT NULL CHECK (decided IN ('enter', 'hold')),
    source       text NOT NULL DEFAULT 'live' CHECK (source IN ('live', 'recorded')),
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX consensus_votes_key ON consensus_votes (account_id, strategy, symbol, ts);
CREATE INDEX consensus_votes_run ON consensus_votes (run_id, ts);
SELECT ats_scope_table('consensus_votes');

INSERT INTO system_settings (account_id, key, value, description, effective_from) VALUES
    ('default', 'consensus.models', '[]'::jsonb,
     'voters of the consensus gate: [{"kind": "claude", "model": "..."} | {"kind": "openai", "model": "...", "base_url": "http://.../v1", "api_key_env": "NAME"}]; empty = gate off', '1970-01-01 00:00:00+00'),
    ('default', 'consensus.supermajority', '0.6667'::jsonb,
     'fraction of ALL configured voters that must vote ENTER (a voter that errs or times out counts as HOLD)', '1970-01-01 00:00:00+00'),
    ('default', 'consensus.timeout_s', '30'::jsonb,
     'seconds one vote may take; a slower voter counts as HOLD', '1970-01-01 00:00:00+00'),
    ('default', 'consensus.strategies', '[]'::jsonb,
     'strategies whose entries need the consensus vote (empty: none)', '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, key) DO NOTHING;
