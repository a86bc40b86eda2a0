-- 0002 market data: feed anomalies (gaps, stale feeds, spikes, suspected splits, cross-source disagreement).
-- Candles themselves live in `candles` (0001): prices and volumes are NUMERIC (exact decimals as published).
--
-- One row per (symbol, timeframe, open_time, kind). open_time is the candle the anomaly is about (for a gap:
-- the first missing candle; for a stale feed: the first candle that should exist but does not). Rows are
-- written by ats.market_data.anomalies (detect_anomalies / `ats data anomalies --scan`); each NEW row is also
-- a system_events row (component 'market_data', event_type 'feed_anomaly'). The engine's feed-anomaly circuit
-- breaker reads this table through ats.market_data.anomalies.anomalies_between().
CREATE TABLE feed_anomalies (
    anomaly_id   bigserial PRIMARY KEY,
    symbol       text        NOT NULL,
    timeframe    text        NOT NULL CHECK (timeframe IN ('5m', '15m', '1h', '4h', '1d', '1w')),
    open_time    timestamptz NOT NULL,                 -- UTC
    kind         text        NOT NULL CHECK (kind IN ('gap', 'stale', 'spike', 'split', 'cross_source')),
    severity     text        NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (symbol, timeframe, open_time, kind)
);
CREATE INDEX feed_anomalies_time ON feed_anomalies (open_time);
COMMENT ON TABLE feed_anomalies IS 'Feed anomalies per symbol/timeframe/open_time/kind (UTC); detail is kind-specific JSON.';
