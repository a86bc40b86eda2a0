-- 0175 forensics at scale (issue #18): the indexes behind the forensic tools' reads of one run, so each stays
-- within 2x of the raw SELECTs of its rows at 1,000,000 executions (bench/forensics.py). Reads only: the
-- tables and their writers are unchanged.

-- investigate_symbol reads a position's orders by position_id (exit orders fall outside the window): without
-- this index that is a scan of every order of every run.
CREATE INDEX IF NOT EXISTS order_executions_position ON order_executions (position_id) WHERE position_id IS NOT NULL;

-- the window's rows of one symbol in one run (replays, backtests and live share the tables): run, symbol, time
CREATE INDEX IF NOT EXISTS signals_run_symbol_ts ON signals (run_id, symbol, ts);
CREATE INDEX IF NOT EXISTS blocked_signals_run_symbol_ts ON blocked_signals (run_id, symbol, ts);
CREATE INDEX IF NOT EXISTS order_executions_run_symbol_ts ON order_executions (run_id, symbol, submitted_at);

-- positions overlapping a window (opened before its end, not closed before its start): both bounds are
-- index ranges, combined by a bitmap AND / OR instead of reading every position of the symbol
CREATE INDEX IF NOT EXISTS positions_run_symbol_opened ON positions (run_id, symbol, opened_at);
CREATE INDEX IF NOT EXISTS positions_run_symbol_closed ON positions (run_id, symbol, closed_at);
