-- 0152 watchlist scores (issue 17): the watchlist gate means "this strategy contributes its score". Every hour
-- (`ats watchlist score`, ats.strategies.watchlist.score_watchlist) each strategy whose watchlist gate is on scores
-- each watchlist symbol from its prepared indicators at the last closed bar; the ranked watchlist and the
-- /watchlist-healthcheck capture figures are read from here. Account-scoped (migration 0130).

CREATE TABLE watchlist_scores (
    ts           timestamptz NOT NULL,                -- the hour scored (UTC); the bar used closed at or before it
    account_id   text        NOT NULL DEFAULT 'default',
    symbol       text        NOT NULL,
    strategy     text        NOT NULL,
    score        double precision NOT NULL CHECK (score >= 0 AND score <= 100),
    components   jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- strength, recency, side, exit_active, bar, indicators
    computed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (account_id, ts, symbol, strategy)
);
CREATE INDEX watchlist_scores_symbol_ts ON watchlist_scores (account_id, symbol, ts);
COMMENT ON TABLE watchlist_scores IS 'hourly per-strategy watchlist score 0..100 of each symbol (ats.strategies.watchlist)';
SELECT ats_scope_table('watchlist_scores');
