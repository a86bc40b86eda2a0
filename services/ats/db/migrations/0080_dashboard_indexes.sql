-- 0080 dashboard: indexes behind the dashboard's per-run reads of the audit trail, so its API stays under
-- 100 ms p95 with a million fills (bench/dashboard.py). Reads only; the tables and their writers are unchanged.
CREATE INDEX IF NOT EXISTS fills_run_ts ON fills (run_id, ts) INCLUDE (side, qty, price, fee_usd);
CREATE INDEX IF NOT EXISTS fills_run_symbol_ts ON fills (run_id, symbol, ts);
CREATE INDEX IF NOT EXISTS positions_run_symbol ON positions (run_id, symbol);
CREATE INDEX IF NOT EXISTS positions_run_closed ON positions (run_id, closed_at)
    INCLUDE (strategy_name, realized_pnl_usd, fees_usd) WHERE status = 'closed';
