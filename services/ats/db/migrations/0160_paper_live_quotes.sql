-- 0160 paper-live quotes: the venue's price at decision time beside each paper order (issue 12: "a soak
-- measures modelled vs venue prices"). One row per paper order of a paper-live run; join fills on
-- client_order_id for the modelled fill price (next-bar open + slippage) against the venue's price then.
CREATE TABLE paper_live_quotes (
    client_order_id  text PRIMARY KEY,
    run_id           text NOT NULL REFERENCES engine_runs(run_id),
    account_id       text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    decision_ts      timestamptz NOT NULL,        -- the bar close the order was decided at (venue clock)
    venue_price      numeric NOT NULL CHECK (venue_price > 0),   -- quote currency (USD / USDT)
    price_source     text NOT NULL,               -- 'last_price' (venue ticker) | 'bar_close' (venue candle)
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX paper_live_quotes_run ON paper_live_quotes (run_id);
SELECT ats_scope_table('paper_live_quotes');
