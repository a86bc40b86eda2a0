"""Market data: candle loaders (files, Bybit, Alpaca), the candle store, resampling, coverage, feed anomalies,
live backfill.

Numeric type: prices and volumes are stored as PostgreSQL ``NUMERIC`` (migration 0001): the exact decimal text
the exchange or file published is written unchanged (no binary-float drift), so a reload compares equal and
duplicate detection is exact. Readers (``store.read_candles``) convert to float64 for indicator math.
All times are timezone-aware UTC; ``open_time`` is the candle's open.
"""
