-- 0020 engine: the replay checkpoint (engine state as JSON, written in the same transaction as the audit rows of
-- the bars up to engine_runs.last_bar_time) and indexes for per-run summaries.
ALTER TABLE engine_runs ADD COLUMN checkpoint jsonb;
COMMENT ON COLUMN engine_runs.checkpoint IS
    'Engine state after last_bar_time (portfolio, pending orders, breakers, cooldowns); a restart with the same run_id resumes from it';
CREATE INDEX blocked_signals_run_gate ON blocked_signals (run_id, gate);
CREATE INDEX position_evaluations_run_ts ON position_evaluations (run_id, ts);
CREATE INDEX fills_run_ts ON fills (run_id, ts);
CREATE INDEX position_targets_run ON position_targets (run_id);
