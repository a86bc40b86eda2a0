-- 0003 engine: regime state, the decision audit trail, breaker state, portfolio snapshots, backtests.
-- Table names follow the reference system (seeds). Every row names its run_id (a replay, a backtest or a
-- live session) and account_id; ts columns are on the engine clock (simulated time in replays), UTC.

CREATE TABLE engine_runs (
    run_id          text PRIMARY KEY,                   -- deterministic: same inputs -> same id (resume)
    account_id      text NOT NULL REFERENCES accounts(account_id),
    mode            text NOT NULL CHECK (mode IN ('replay', 'live', 'backtest')),
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    params          jsonb NOT NULL DEFAULT '{}'::jsonb,  -- strategies, symbols, timeframe, start, end, broker
    started_at      timestamptz NOT NULL DEFAULT now(),  -- wall clock
    finished_at     timestamptz,
    last_bar_time   timestamptz,                        -- checkpoint: last bar fully processed and committed
    bars_processed  bigint NOT NULL DEFAULT 0,
    summary         jsonb
);

-- ---- BTC regime ---------------------------------------------------------------------------------------
CREATE TABLE btc_market_state (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ts           timestamptz NOT NULL,                  -- bar the state was computed on
    regime       text NOT NULL CHECK (regime IN ('strong_bull', 'bull', 'neutral', 'bear', 'strong_bear')),
    confirmed    boolean NOT NULL,                      -- regime held for the confirmation window
    metrics      jsonb NOT NULL DEFAULT '{}'::jsonb,    -- close, ema_fast, ema_slow, ret_7d, ...
    run_id       text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE btc_market_state_history (
    history_id   bigserial PRIMARY KEY,
    ts           timestamptz NOT NULL,
    regime       text NOT NULL,
    prior_regime text,
    confirmed    boolean NOT NULL,
    metrics      jsonb NOT NULL DEFAULT '{}'::jsonb,
    run_id       text,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX btc_market_state_history_ts ON btc_market_state_history (run_id, ts);
CREATE TRIGGER btc_market_state_history_append_only BEFORE UPDATE OR DELETE ON btc_market_state_history
    FOR EACH ROW EXECUTE FUNCTION ats_append_only();

-- ---- decisions ----------------------------------------------------------------------------------------
CREATE TABLE signals (
    signal_id      bigserial PRIMARY KEY,
    run_id         text NOT NULL REFERENCES engine_runs(run_id),
    account_id     text NOT NULL,
    strategy_name  text NOT NULL,
    symbol         text NOT NULL,
    timeframe      text NOT NULL,
    ts             timestamptz NOT NULL,                -- close time of the bar the decision saw
    side           text NOT NULL CHECK (side IN ('buy', 'sell')),
    intent         text NOT NULL CHECK (intent IN ('open', 'close', 'add')),
    position_side  text NOT NULL CHECK (position_side IN ('long', 'short')),
    price          numeric NOT NULL,                    -- the bar close the decision saw
    strength       double precision,
    regime         text,
    status         text NOT NULL CHECK (status IN ('accepted', 'blocked')),
    context        jsonb NOT NULL DEFAULT '{}'::jsonb,  -- indicator values behind the signal
    UNIQUE (run_id, strategy_name, symbol, ts, side, intent)
);
CREATE INDEX signals_symbol_ts ON signals (symbol, ts);
CREATE INDEX signals_run_ts ON signals (run_id, ts);

CREATE TABLE blocked_signals (
    blocked_id     bigserial PRIMARY KEY,
    signal_id      bigint REFERENCES signals(signal_id),
    run_id         text NOT NULL REFERENCES engine_runs(run_id),
    account_id     text NOT NULL,
    strategy_name  text NOT NULL,
    symbol         text NOT NULL,
    ts             timestamptz NOT NULL,
    gate           text NOT NULL,        -- buy_gate | sell_gate | regime | cooldown | risk:<limit> | breaker:<name>
    reason         text NOT NULL,
    context        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX blocked_signals_symbol_ts ON blocked_signals (symbol, ts);
CREATE INDEX blocked_signals_ts ON blocked_signals (ts);
CREATE INDEX blocked_signals_strategy_ts ON blocked_signals (strategy_name, ts);

CREATE TABLE order_executions (
    order_id         bigserial PRIMARY KEY,
    client_order_id  text NOT NULL UNIQUE,   -- deterministic: run/strategy/symbol/bar/intent -> retries dedupe
    run_id           text NOT NULL REFERENCES engine_runs(run_id),
    account_id       text NOT NULL,
    signal_id        bigint REFERENCES signals(signal_id),
    position_id      bigint,
    strategy_name    text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    position_side    text NOT NULL CHECK (position_side IN ('long', 'short')),
    intent           text NOT NULL CHECK (intent IN ('open', 'close', 'add')),
    order_type       text NOT NULL DEFAULT 'market',
    qty              numeric NOT NULL CHECK (qty > 0),   -- base units
    notional_usd     numeric,                            -- qty x decision price
    decision_price   numeric NOT NULL,
    status           text NOT NULL CHECK (status IN ('submitted', 'filled', 'partially_filled', 'rejected', 'cancelled')),
    reject_reason    text,
    filled_qty       numeric NOT NULL DEFAULT 0,
    avg_fill_price   numeric,
    broker           text NOT NULL DEFAULT 'paper',
    broker_order_id  text,
    submitted_at     timestamptz NOT NULL,               -- engine clock
    updated_at       timestamptz NOT NULL,
    context          jsonb NOT NULL DEFAULT '{}'::jsonb  -- exit reason, sizing inputs (kelly, caps), ...
);
CREATE INDEX order_executions_symbol_ts ON order_executions (symbol, submitted_at);
CREATE INDEX order_executions_run ON order_executions (run_id, submitted_at);

CREATE TABLE fills (
    fill_id          bigserial PRIMARY KEY,
    order_id         bigint NOT NULL REFERENCES order_executions(order_id),
    client_order_id  text NOT NULL,
    fill_seq         integer NOT NULL DEFAULT 1,
    run_id           text NOT NULL,
    account_id       text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              numeric NOT NULL CHECK (qty > 0),
    price            numeric NOT NULL CHECK (price > 0),
    fee_usd          numeric NOT NULL DEFAULT 0,
    liquidity        text NOT NULL DEFAULT 'taker' CHECK (liquidity IN ('maker', 'taker')),
    slippage_bps     double precision NOT NULL DEFAULT 0,
    ts               timestamptz NOT NULL,               -- fill time: never earlier than the next bar's open
    UNIQUE (client_order_id, fill_seq)
);
CREATE INDEX fills_symbol_ts ON fills (symbol, ts);
CREATE INDEX fills_order ON fills (order_id);

CREATE TABLE positions (
    position_id      bigserial PRIMARY KEY,
    run_id           text NOT NULL REFERENCES engine_runs(run_id),
    account_id       text NOT NULL,
    strategy_name    text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('long', 'short')),
    status           text NOT NULL CHECK (status IN ('open', 'closed')),
    qty              numeric NOT NULL,        -- open quantity (base units); 0 when closed
    entry_qty        numeric NOT NULL,        -- total quantity bought (long) / sold (short) to open or add
    avg_entry_price  numeric NOT NULL,
    avg_exit_price   numeric,
    realized_pnl_usd numeric NOT NULL DEFAULT 0,   -- net of fees
    fees_usd         numeric NOT NULL DEFAULT 0,
    opened_at        timestamptz NOT NULL,
    closed_at        timestamptz,
    close_reason     text,                    -- tp | sl | trailing | max_hold | signal | manual
    entry_signal_id  bigint REFERENCES signals(signal_id),
    context          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX positions_symbol ON positions (symbol, opened_at);
CREATE INDEX positions_run_status ON positions (run_id, status);
ALTER TABLE order_executions ADD CONSTRAINT order_executions_position_fk
    FOREIGN KEY (position_id) REFERENCES positions(position_id);

CREATE TABLE position_evaluations (
    evaluation_id   bigserial PRIMARY KEY,
    position_id     bigint NOT NULL REFERENCES positions(position_id),
    run_id          text NOT NULL,
    ts              timestamptz NOT NULL,
    price           numeric NOT NULL,
    pnl_pct         double precision,        -- unrealized, percent of entry
    tp_price        numeric,
    sl_price        numeric,
    trailing_stop   numeric,
    hold_minutes    double precision,
    decision        text NOT NULL,           -- hold | exit_tp | exit_sl | exit_trailing | exit_max_hold | exit_signal | exit_blocked
    reason          text,
    context         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX position_evaluations_pos_ts ON position_evaluations (position_id, ts);

CREATE TABLE position_targets (
    target_id       bigserial PRIMARY KEY,
    position_id     bigint NOT NULL REFERENCES positions(position_id),
    run_id          text NOT NULL,
    ts              timestamptz NOT NULL,
    tp_price        numeric,
    sl_price        numeric,
    trailing_stop   numeric,
    reason          text NOT NULL            -- initial | trail_raise | manual
);
CREATE INDEX position_targets_pos_ts ON position_targets (position_id, ts);

-- The authoritative portfolio state. P&L windows are differences of equity between snapshots; never sum
-- balances, never sum net_pnl_daily (a running cumulative since 00:00 UTC, see CLAUDE.md anti-patterns).
CREATE TABLE portfolio_hourly_snapshots (
    snapshot_id          bigserial PRIMARY KEY,
    run_id               text NOT NULL REFERENCES engine_runs(run_id),
    account_id           text NOT NULL,
    ts                   timestamptz NOT NULL,          -- top of the hour, UTC
    cash_usd             numeric NOT NULL,
    positions_value_usd  numeric NOT NULL,              -- signed mark-to-market (shorts negative)
    equity_usd           numeric NOT NULL,              -- cash + positions value
    realized_pnl_usd     numeric NOT NULL,              -- cumulative since run start, net of fees
    unrealized_pnl_usd   numeric NOT NULL,
    fees_usd             numeric NOT NULL,              -- cumulative since run start
    net_pnl_daily_usd    numeric NOT NULL,              -- running cumulative since 00:00 UTC of ts (NOT a delta)
    open_positions       integer NOT NULL,
    positions            jsonb NOT NULL DEFAULT '[]'::jsonb,  -- per symbol: qty, mark, value, unrealized
    UNIQUE (run_id, ts)
);
CREATE INDEX portfolio_hourly_snapshots_account_ts ON portfolio_hourly_snapshots (account_id, ts);

CREATE TABLE breaker_states (
    account_id   text NOT NULL,
    run_id       text NOT NULL,
    breaker      text NOT NULL,          -- daily_drawdown | velocity | market_volatility | feed_anomaly | consecutive_losses | manual_stop
    scope        text NOT NULL DEFAULT '*',   -- '*' or a symbol
    state        text NOT NULL CHECK (state IN ('ok', 'tripped')),
    since        timestamptz NOT NULL,
    reason       text,
    context      jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, breaker, scope)
);

-- ---- backtests ----------------------------------------------------------------------------------------
CREATE TABLE backtest_runs (
    backtest_id     bigserial PRIMARY KEY,
    run_id          text UNIQUE REFERENCES engine_runs(run_id),
    strategies      text[] NOT NULL,
    symbols         text[] NOT NULL,
    timeframe       text NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,
    walk_forward    integer,                 -- number of folds, NULL for a single pass
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    summary         jsonb                    -- return_pct, max_drawdown_pct, sharpe, trades, win_rate, blocked_by_reason, oos
);
CREATE TABLE backtest_trades (
    trade_id        bigserial PRIMARY KEY,
    backtest_id     bigint NOT NULL REFERENCES backtest_runs(backtest_id) ON DELETE CASCADE,
    fold            integer,
    in_sample       boolean,
    strategy_name   text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL,
    entry_time      timestamptz NOT NULL,
    exit_time       timestamptz,
    entry_price     numeric NOT NULL,
    exit_price      numeric,
    qty             numeric NOT NULL,
    pnl_usd         numeric,
    pnl_pct         double precision,
    fees_usd        numeric,
    exit_reason     text
);
CREATE TABLE backtest_blocked_signals (
    id              bigserial PRIMARY KEY,
    backtest_id     bigint NOT NULL REFERENCES backtest_runs(backtest_id) ON DELETE CASCADE,
    strategy_name   text NOT NULL,
    symbol          text NOT NULL,
    ts              timestamptz NOT NULL,
    gate            text NOT NULL,
    reason          text NOT NULL,
    context         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE TABLE backtest_equity_curve (
    backtest_id     bigint NOT NULL REFERENCES backtest_runs(backtest_id) ON DELETE CASCADE,
    ts              timestamptz NOT NULL,
    equity_usd      numeric NOT NULL,
    drawdown_pct    double precision NOT NULL,
    PRIMARY KEY (backtest_id, ts)
);
CREATE TABLE backtest_comparisons (
    comparison_id   bigserial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    backtest_ids    bigint[] NOT NULL,
    metric_table    jsonb NOT NULL,          -- {backtest_id: {return_pct, max_drawdown_pct, sharpe, ...}}
    notes           text
);
