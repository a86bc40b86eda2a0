-- 0135 parameter sweeps: a grid of backtests (strategies x parameters x symbols [x walk-forward folds]), each
-- cell a backtest through the same engine; resumable (a finished cell is never run again).

CREATE TABLE backtest_sweeps (
    sweep_id     bigserial PRIMARY KEY,
    name         text NOT NULL,
    grid_sha256  text NOT NULL UNIQUE,           -- canonical grid -> the same sweep (resume)
    grid         jsonb NOT NULL,
    account_id   text NOT NULL REFERENCES accounts(account_id),
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    cells_total  integer NOT NULL,
    executor     text,                           -- process:N | ray:ADDRESS
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE backtest_sweep_cells (
    sweep_id     bigint NOT NULL REFERENCES backtest_sweeps(sweep_id) ON DELETE CASCADE,
    cell_key     text NOT NULL,                  -- sha256 of the cell's canonical parameters
    account_id   text NOT NULL,
    strategies   text[] NOT NULL,
    symbols      text[] NOT NULL,
    params       jsonb NOT NULL,                 -- {strategy: {param: value}}
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    backtest_id  bigint REFERENCES backtest_runs(backtest_id),
    run_id       text,
    summary      jsonb,
    error        text,
    duration_s   double precision,
    finished_at  timestamptz,
    PRIMARY KEY (sweep_id, cell_key)
);
SELECT ats_scope_table('backtest_sweeps');
SELECT ats_scope_table('backtest_sweep_cells');
