-- 0134 microstructure data from Bybit (linear perpetuals): open interest, funding rates, long/short account
-- ratio, taker buy/sell volume. Same discipline as candles: UTC times, NUMERIC values exactly as published, one
-- row per (symbol, period, time, source), loaded in one transaction per payload/file.

CREATE TABLE open_interest (
    symbol         text        NOT NULL,
    interval       text        NOT NULL CHECK (interval IN ('5min', '15min', '30min', '1h', '4h', '1d')),
    ts             timestamptz NOT NULL,
    open_interest  numeric     NOT NULL CHECK (open_interest >= 0),   -- contracts (base units)
    source         text        NOT NULL DEFAULT 'bybit',
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, ts, source)
);

CREATE TABLE funding_rates (
    symbol        text        NOT NULL,
    ts            timestamptz NOT NULL,                 -- funding time (settlement), UTC
    funding_rate  numeric     NOT NULL,                 -- fraction per funding interval (0.0001 = 1 bp)
    source        text        NOT NULL DEFAULT 'bybit',
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ts, source)
);
COMMENT ON COLUMN funding_rates.funding_rate IS 'fraction paid by longs to shorts per interval (negative: shorts pay)';

CREATE TABLE long_short_ratios (
    symbol      text        NOT NULL,
    period      text        NOT NULL CHECK (period IN ('5min', '15min', '30min', '1h', '4h', '1d')),
    ts          timestamptz NOT NULL,
    buy_ratio   numeric     NOT NULL CHECK (buy_ratio >= 0 AND buy_ratio <= 1),   -- share of accounts long
    sell_ratio  numeric     NOT NULL CHECK (sell_ratio >= 0 AND sell_ratio <= 1),
    source      text        NOT NULL DEFAULT 'bybit',
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, period, ts, source)
);

CREATE TABLE taker_volume (
    symbol        text        NOT NULL,
    timeframe     text        NOT NULL CHECK (timeframe IN ('5m', '15m', '1h', '4h', '1d')),
    bucket_start  timestamptz NOT NULL,
    buy_volume    numeric     NOT NULL CHECK (buy_volume >= 0),    -- base units bought by takers
    sell_volume   numeric     NOT NULL CHECK (sell_volume >= 0),
    trades        integer     NOT NULL CHECK (trades >= 0),
    source        text        NOT NULL DEFAULT 'bybit',
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, bucket_start, source)
);
COMMENT ON TABLE taker_volume IS 'taker buy/sell volume per bucket, aggregated from public trades (side = taker side)';
