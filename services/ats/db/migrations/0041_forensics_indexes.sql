-- 0041 forensics: investigate_symbol takes each table's time span per run; (run_id, ts) makes that an index
-- probe instead of a scan of every blocked signal (measured with bench/mcp.py at 1M rows).
CREATE INDEX IF NOT EXISTS blocked_signals_run_ts ON blocked_signals (run_id, ts);
