-- 0070 feed anomalies: a new kind 'bad_tick' (issue 11 item 2). A single-field bad print (e.g. an open about
-- twice the previous close with high = that open while low and close stay in line) is neither a split nor a
-- spike: ats.market_data.anomalies.detect_bad_ticks classifies it, naming the field(s) in detail.fields.
-- The engine's feed-anomaly breaker reads every kind, so a bad tick halts new entries like any anomaly.
ALTER TABLE feed_anomalies DROP CONSTRAINT feed_anomalies_kind_check;
ALTER TABLE feed_anomalies ADD CONSTRAINT feed_anomalies_kind_check
    CHECK (kind IN ('gap', 'stale', 'spike', 'split', 'bad_tick', 'cross_source'));
