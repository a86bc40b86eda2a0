-- 0140 the first two LL lessons (issue 15), so every entry of a replay consults real lessons from the start.
-- LL-001 carries a machine-checked prevention rule (multi-leg structures go out as ONE MLEG order); it matches no
-- single-leg strategy, so replays of the crypto strategies keep their figures. LL-002 (no rule) is the P&L
-- double-count anti-pattern of CLAUDE.md. Numbers come from lesson_ll_seq like every other lesson.

INSERT INTO lessons (title, body, tags, source, ll_number, version, lesson_date, trigger, impact_usd, root_cause,
                     fix_applied, prevention, rule, links)
VALUES
('Sequential iron-condor fill left a naked short put overnight',
 'Trigger: the four legs of an iron condor entry were sent as four simple orders; the call spread filled, the put spread did not, leaving a naked short put overnight.'
 || E'\n\nRoot cause: a multi-leg structure was submitted leg by leg (order_class simple) instead of as one multi-leg order.'
 || E'\n\nFix applied: multi-leg structures go out as ONE order_class = mleg order carrying all legs (all fill or none); the Alpaca broker refuses anything else (execution/alpaca.py check_multi_leg).'
 || E'\n\nPrevention: the entry gate lesson:LL-001 blocks any entry of a strategy with more than one leg whose order is not mleg.'
 || E'\n\nRule: require order_class = mleg for strategies with more than one leg',
 ARRAY['strategy:iron_condor', 'order_type:mleg', 'venue:alpaca', 'options', 'entry'], 'migration:0140',
 nextval('lesson_ll_seq'), 1, DATE '2026-03-02',
 'The four legs of an iron condor entry were sent as four simple orders; the call spread filled, the put spread did not, leaving a naked short put overnight.',
 NULL,
 'A multi-leg structure was submitted leg by leg (order_class simple) instead of as one multi-leg order.',
 'Multi-leg structures go out as ONE order_class = mleg order carrying all legs (all fill or none); the Alpaca broker refuses anything else.',
 'The entry gate lesson:LL-001 blocks any entry of a strategy with more than one leg whose order is not mleg.',
 'require order_class = mleg for strategies with more than one leg',
 '{"incident_report": "issue 15 (seed system LL-221)"}'::jsonb);

INSERT INTO lessons (title, body, tags, source, ll_number, version, lesson_date, trigger, impact_usd, root_cause,
                     fix_applied, prevention, rule, links)
VALUES
('P&L double-count: summed positions or snapshot rows instead of the equity difference',
 'Trigger: a review of a strategy''s entries and results summed realized P&L of positions (and balances of snapshot rows) across runs; the wallet sum said +20.6 % while the snapshot said -8.18 %.'
 || E'\n\nRoot cause: summing rows counts several runs and account legs, misses fees and unrealized P&L, and lags the snapshot; net_pnl_daily_usd is a running cumulative since 00:00 UTC.'
 || E'\n\nFix applied: P&L is the equity difference inside one run from portfolio_hourly_snapshots (pnl_windows, mcp portfolio_pnl).'
 || E'\n\nPrevention: judge a strategy, an entry sizing change or a paper run only from the equity difference of one run; never sum positions, balances or hourly rows (CLAUDE.md wrong-query table).',
 ARRAY['pnl', 'snapshots', 'forensics', 'anti-pattern', 'paper', 'entry'], 'migration:0140',
 nextval('lesson_ll_seq'), 1, DATE '2026-11-21',
 'A review of a strategy''s entries and results summed realized P&L of positions (and balances of snapshot rows) across runs; the wallet sum said +20.6 % while the snapshot said -8.18 %.',
 NULL,
 'Summing rows counts several runs and account legs, misses fees and unrealized P&L, and lags the snapshot; net_pnl_daily_usd is a running cumulative since 00:00 UTC.',
 'P&L is the equity difference inside one run from portfolio_hourly_snapshots (pnl_windows, mcp portfolio_pnl).',
 'Judge a strategy, an entry sizing change or a paper run only from the equity difference of one run; never sum positions, balances or hourly rows (CLAUDE.md wrong-query table).',
 NULL,
 '{"plan": "CLAUDE.md#wrong-query-table"}'::jsonb);
