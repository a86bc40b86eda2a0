-- 0151 funding of linear-perpetual positions (issue #17): one row per open short position per funding time
-- (00:00, 08:00, 16:00 UTC) applied by the engine's paper model (ats.portfolio.funding). The position's
-- realized_pnl_usd includes the sum of its cost_usd (booked at each funding time), so the trade's P&L and the
-- hourly snapshots carry it. rate_source says where the rate came from: 'funding_rates' (the table of migration
-- 0134, the rate settled at that funding time) or 'fallback' (no row for that symbol and time: the setting
-- broker.funding_fallback_bps was used, default 0 = zero cost, and the row is the note that data was missing).
CREATE TABLE funding_payments (
    funding_id     bigserial PRIMARY KEY,
    run_id         text NOT NULL,
    account_id     text NOT NULL,
    position_id    bigint NOT NULL,
    strategy_name  text NOT NULL,
    symbol         text NOT NULL,
    side           text NOT NULL CHECK (side IN ('long', 'short')),
    ts             timestamptz NOT NULL,                 -- the funding time (engine clock)
    qty            numeric NOT NULL CHECK (qty > 0),     -- open position size, base units
    mark_price     numeric NOT NULL CHECK (mark_price > 0),  -- close of the bar ending at ts (USD)
    funding_rate   numeric NOT NULL,                     -- fraction per interval; positive: longs pay shorts
    rate_source    text NOT NULL CHECK (rate_source IN ('funding_rates', 'fallback')),
    cost_usd       numeric NOT NULL,                     -- paid by the position (negative: received), USD
    UNIQUE (run_id, position_id, ts)
);
CREATE INDEX funding_payments_run_ts ON funding_payments (run_id, ts);
CREATE TRIGGER funding_payments_append_only BEFORE UPDATE OR DELETE ON funding_payments
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();
SELECT ats_scope_table('funding_payments');

INSERT INTO system_settings (account_id, key, value, description, effective_from) VALUES
    ('default', 'broker.funding_fallback_bps', '0.0'::jsonb,
     'funding rate (bps per 8 h, positive: longs pay shorts) the paper model uses when funding_rates has no row for a symbol and funding time; 0 = zero cost (each such payment is still a funding_payments row with rate_source fallback)', '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, key) DO NOTHING;
