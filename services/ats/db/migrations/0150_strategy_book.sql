-- 0150 the book of eleven (issue #17): the six strategies the book adds (ats.strategies.book) for the default
-- account, all three gates on, effective from 1970-01-01 like 0021 so a replay of any past period finds them; their
-- params equal the Python defaults (tests/strategies/test_strategies_seeds.py checks it). Existing rows are left
-- alone.
--
-- range_fade (split into range_fade_long / range_fade_short) and volatility_breakout become reference strategies
-- outside the book: their default-account rows are CLOSED by a new configuration version -- watchlist and buy gates
-- off, sell gate on (an open position can still exit) -- effective from this migration's time. That is an UPDATE
-- that sets effective_from explicitly (to now()), which the history trigger records as a NEW version; the 1970
-- version stays in strategy_configurations_history untouched, so what a replay of 2021 sees as of then is not
-- rewritten (no back-dating: CLAUDE.md anti-pattern 2026-12-01). Only rows still enabled are touched.
INSERT INTO strategy_configurations (account_id, strategy_name, watchlist_enabled, buy_enabled, sell_enabled, params,
                                     effective_from) VALUES
    ('default', 'growth_potential', true, true, true,
     '{"cooldown_min": 240, "ema_fast": 20, "ema_slow": 50, "max_adds": 0, "max_hold_hours": 120, "oi_lookback_hours": 24, "oi_rise_min_pct": 2.0, "room_bars": 720, "room_min_pct": 10.0, "sl_pct": 4.0, "tp_pct": 8.0, "trade_amount_usd": 500.0, "trailing_activation_pct": 4.0, "trailing_pct": 3.0, "volume_fast": 24, "volume_ratio_min": 1.2, "volume_slow": 168}'::jsonb,
     '1970-01-01 00:00:00+00'),
    ('default', 'momentum_short', true, true, true,
     '{"cooldown_min": 240, "ema_period": 50, "exit_rsi": 55.0, "funding_min_bps": -1.0, "max_adds": 1, "max_hold_hours": 72, "roc_bars": 24, "roc_min_pct": 3.0, "rsi_max": 45.0, "rsi_min": 25.0, "rsi_period": 14, "sl_pct": 3.0, "tp_pct": 6.0, "trade_amount_usd": 500.0, "trailing_activation_pct": 3.0, "trailing_pct": 2.5}'::jsonb,
     '1970-01-01 00:00:00+00'),
    ('default', 'btc_trend_short', true, true, true,
     '{"bb_period": 20, "bb_std": 2.0, "cooldown_min": 240, "ema_period": 50, "ema_trend": 200, "exit_buffer_pct": 1.0, "funding_min_bps": -1.0, "max_adds": 1, "max_hold_hours": 72, "sl_pct": 2.5, "squeeze_bars": 24, "squeeze_max_pct": 4.0, "touch_pct": 0.5, "tp_pct": 5.0, "trade_amount_usd": 500.0, "trailing_activation_pct": 2.5, "trailing_pct": 2.0}'::jsonb,
     '1970-01-01 00:00:00+00'),
    ('default', 'range_fade_long', true, true, true,
     '{"adx_max": 20.0, "adx_period": 14, "cooldown_min": 120, "edge_frac": 0.15, "max_adds": 0, "max_hold_hours": 24, "max_width_pct": 8.0, "range_bars": 72, "sl_pct": 2.0, "tp_pct": 2.5, "trade_amount_usd": 500.0, "trailing_activation_pct": 0.0, "trailing_pct": 0.0}'::jsonb,
     '1970-01-01 00:00:00+00'),
    ('default', 'range_fade_short', true, true, true,
     '{"adx_max": 20.0, "adx_period": 14, "cooldown_min": 120, "edge_frac": 0.15, "max_adds": 0, "max_hold_hours": 24, "max_width_pct": 8.0, "range_bars": 72, "sl_pct": 2.0, "tp_pct": 2.5, "trade_amount_usd": 500.0, "trailing_activation_pct": 0.0, "trailing_pct": 0.0}'::jsonb,
     '1970-01-01 00:00:00+00'),
    ('default', 'btc_swing', true, true, true,
     '{"cooldown_min": 1440, "ema_fast": 240, "ema_slow": 720, "max_adds": 0, "max_hold_hours": 720, "roc_bars": 168, "roc_min_pct": 5.0, "sl_pct": 10.0, "tp_pct": 25.0, "trade_amount_usd": 500.0, "trailing_activation_pct": 12.0, "trailing_pct": 8.0}'::jsonb,
     '1970-01-01 00:00:00+00')
ON CONFLICT (account_id, strategy_name) DO NOTHING;

UPDATE strategy_configurations
   SET watchlist_enabled = false, buy_enabled = false, sell_enabled = true, effective_from = now()
 WHERE account_id = 'default' AND strategy_name IN ('range_fade', 'volatility_breakout')
   AND (watchlist_enabled OR buy_enabled);
