"""Backtests: the engine's decision path over history, recorded in the backtest_* tables, with optional
walk-forward evaluation.

``run_backtest`` (a) runs the full window as an engine run in mode 'backtest' (the normal audit trail: signals,
blocked_signals, orders, fills, positions, snapshots, all with the run id), then (b) writes ``backtest_runs``,
``backtest_trades`` (one row per position; open ones have no exit), ``backtest_blocked_signals`` and
``backtest_equity_curve`` (hourly equity and drawdown) and a summary: return %, max drawdown %, Sharpe, trades,
win rate, blocked signals by gate.

Walk-forward (``walk_forward=N``): the window is cut into N + 1 equal segments; fold k (1..N) uses segments
1..k as in-sample and segment k + 1 as out-of-sample (anchored walk-forward, R. Pardo, *The Evaluation and
Optimization of Trading Strategies*, 2008). In each fold the TP/SL of every strategy are scaled by each factor
in ``WF_SCALES`` (0.75, 1.0, 1.5 x the configuration in force at the fold start); the candidate with the best
in-sample Sharpe is then run out of sample. Fold runs use the same engine with an in-memory sink (they are not
engine runs of their own); their trades are stored in backtest_trades with ``fold`` and ``in_sample``. The
summary's ``oos`` block chains the out-of-sample equity curves: compounded return, max drawdown, Sharpe,
trades, win rate, and the chosen scale per fold.

Only one heavy run at a time (``ats.engine.runs.heavy_lock``): a second concurrent backtest gets BusyError.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime, timezone

import psycopg
from psycopg.types.json import Jsonb

from ..db.connection import connect, database_url
from ..errors import UsageError
from .core import Engine
from .feed import ReplayFeed
from .metrics import drawdown_series, equity_metrics, trade_metrics
from .replay import run_replay
from .runs import RunSpec, heavy_lock, resolve
from .sink import MemorySink, _dec, to_dt

WF_SCALES = (0.75, 1.0, 1.5)


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def run_backtest(spec: RunSpec, *, url: str | None = None, walk_forward: int | None = None,
                 progress: bool = False, commit_every: int = 500, lock: bool = True, consensus: str = "off") -> dict:
    """Run (or reuse) a backtest.

    Parameters
    ----------
    spec : RunSpec
        The run; ``spec.mode`` must be 'backtest'.
    url : str, optional
        Database URL (default ``ATS_DATABASE_URL``).
    walk_forward : int, optional
        Number of walk-forward folds (1..12).
    progress : bool
        Show a progress bar.
    commit_every : int
        Steps per committed batch.
    lock : bool
        Take the heavy-run lock (default). False when the caller already holds it for a group of backtests
        (a parameter sweep's cells, ``ats.engine.sweep``).

    Returns
    -------
    dict
        Its summary with ``backtest_id`` and ``run_id``.

    Raises
    ------
    BusyError
        When another heavy run holds the lock.
    UsageError
        On a spec of another mode or a bad walk-forward count.
    AtsError
        On missing candles or configuration.
    """
    if spec.mode != "backtest":
        raise UsageError("run_backtest needs a RunSpec with mode 'backtest'")
    if walk_forward is not None and not (1 <= walk_forward <= 12):
        raise UsageError("--walk-forward must be between 1 and 12 folds")
    url = url or database_url()
    # lock=False: the caller holds the heavy-run lock for a group of backtests (a parameter sweep's cells)
    with (heavy_lock(url, what=f"backtest {spec.run_id}", account_id=spec.account_id) if lock
          else contextlib.nullcontext()):
        conn = connect(url, application_name=f"ats-backtest:{spec.run_id}"[:60])
        try:
            spec = resolve(conn, spec)
            existing = conn.execute("SELECT * FROM backtest_runs WHERE run_id=%s", (spec.run_id,)).fetchone()
            if existing is not None and existing["status"] == "completed" and (
                    existing["walk_forward"] == walk_forward):
                return {**existing["summary"], "backtest_id": existing["backtest_id"], "run_id": spec.run_id,
                        "state": "reused"}
            res = run_replay(spec, url=url, progress=progress, commit_every=commit_every, lock=False,
                             progress_desc=f"backtest {spec.run_id}", consensus=consensus)
            bid = _record(conn, spec, res, walk_forward)
            summary = _summary_from(res)
            if walk_forward:
                summary["oos"] = _walk_forward(conn, spec, bid, walk_forward, progress)
            conn.execute("UPDATE backtest_runs SET status='completed', finished_at=now(), summary=%s "
                         "WHERE backtest_id=%s", (Jsonb(summary), bid))
            conn.commit()
            return {**summary, "backtest_id": bid, "run_id": spec.run_id, "state": "new"}
        except Exception:
            conn.rollback()
            conn.execute("UPDATE backtest_runs SET status='failed', finished_at=now() WHERE run_id=%s "
                         "AND status='running'", (spec.run_id,))
            conn.commit()
            raise
        finally:
            conn.close()


def _summary_from(res: dict) -> dict:
    return {k: res.get(k) for k in ("return_pct", "max_drawdown_pct", "sharpe", "trades", "wins", "win_rate",
                                    "fees_usd", "start_equity_usd", "end_equity_usd", "signals", "orders", "fills",
                                    "orders_rejected_or_cancelled", "open_positions",
                                    "blocked_by_gate", "breaker_trips", "by_strategy")} | {
        "blocked_by_reason": res.get("blocked_by_gate")}


def _record(conn: psycopg.Connection, spec: RunSpec, res: dict, walk_forward: int | None) -> int:
    """(Re)write the backtest_* rows of the engine run ``spec.run_id``; returns backtest_id."""
    rid = spec.run_id
    row = conn.execute("SELECT backtest_id FROM backtest_runs WHERE run_id=%s", (rid,)).fetchone()
    if row is None:
        bid = conn.execute(
            """INSERT INTO backtest_runs (run_id, strategies, symbols, timeframe, start_time, end_time, walk_forward)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING backtest_id""",
            (rid, list(spec.strategies), list(spec.symbols), spec.timeframe, _dt(spec.start), _dt(spec.end),
             walk_forward)).fetchone()["backtest_id"]
    else:
        bid = row["backtest_id"]
        for t in ("backtest_trades", "backtest_blocked_signals", "backtest_equity_curve"):
            conn.execute(f"DELETE FROM {t} WHERE backtest_id=%s", (bid,))
        conn.execute("UPDATE backtest_runs SET status='running', walk_forward=%s WHERE backtest_id=%s",
                     (walk_forward, bid))
    conn.execute(
        """INSERT INTO backtest_trades (backtest_id, fold, in_sample, strategy_name, symbol, side, entry_time, exit_time,
                                        entry_price, exit_price, qty, pnl_usd, pnl_pct, fees_usd, exit_reason)
           SELECT %s, NULL, NULL, strategy_name, symbol, side, opened_at, closed_at, avg_entry_price, avg_exit_price,
                  entry_qty, CASE WHEN status='closed' THEN realized_pnl_usd END,
                  CASE WHEN status='closed' AND avg_entry_price > 0
                       THEN (realized_pnl_usd / (avg_entry_price * entry_qty) * 100)::float8 END,
                  fees_usd, close_reason
             FROM positions WHERE run_id=%s ORDER BY opened_at, position_id""", (bid, rid))
    conn.execute(
        """INSERT INTO backtest_blocked_signals (backtest_id, strategy_name, symbol, ts, gate, reason, context)
           SELECT %s, strategy_name, symbol, ts, gate, reason, context FROM blocked_signals WHERE run_id=%s
            ORDER BY ts, blocked_id""", (bid, rid))
    conn.execute(
        """INSERT INTO backtest_equity_curve (backtest_id, ts, equity_usd, drawdown_pct)
           SELECT %s, ts, equity_usd,
                  ((max(equity_usd) OVER (ORDER BY ts) - equity_usd) / max(equity_usd) OVER (ORDER BY ts) * 100)::float8
             FROM portfolio_hourly_snapshots WHERE run_id=%s ORDER BY ts""", (bid, rid))
    conn.commit()
    return bid


def _memory_run(conn, spec: RunSpec, overrides: dict) -> tuple[list[int], list[float], list, MemorySink]:
    """Run ``spec`` with param ``overrides`` into a MemorySink; returns (ts, equity, closed positions, sink)."""
    sp = replace(spec, param_overrides=overrides)
    feed = ReplayFeed.load(conn, sp.symbols, sp.timeframe, sp.start, sp.end)
    sink = MemorySink(sp.run_id, sp.account_id)
    eng = Engine(conn, sp, sink=sink, feed=feed, commit_every=10 ** 9)
    eng.run()
    conn.commit()  # the engine only read (settings, configurations); end that transaction
    snaps = sink.rows["portfolio_hourly_snapshots"]
    ts = [r[2] for r in snaps]
    eq = [r[5] for r in snaps]
    closed = [p for p in sink.positions.values() if p.status == "closed"]
    return ts, eq, closed, sink


def _tp_sl_overrides(conn, spec: RunSpec, at: int, scale: float) -> dict:
    from .config import GateCache

    gc = GateCache(conn, account_id=spec.account_id)
    out = {}
    for name in spec.strategies:
        cfg = gc.get(name, at)
        if cfg is None:
            continue
        out[name] = {k: float(cfg.params.get(k) or 0) * scale for k in ("tp_pct", "sl_pct")}
    return out


def _walk_forward(conn: psycopg.Connection, spec: RunSpec, bid: int, folds: int, progress: bool) -> dict:
    seg = (spec.end - spec.start) // (folds + 1)
    if seg < 86400:
        raise UsageError(f"window too short for {folds} walk-forward folds (segments under one day)")
    fold_rows = []
    oos_returns: list[float] = []
    chain = [1.0]
    chain_ts = [spec.start + seg]
    oos_pnls: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=folds * (len(WF_SCALES) + 1), desc="walk-forward", unit="run")
    for k in range(1, folds + 1):
        is_start, is_end = spec.start, spec.start + k * seg
        oos_end = spec.end if k == folds else spec.start + (k + 1) * seg
        best = None
        for sc in WF_SCALES:
            ov = _tp_sl_overrides(conn, spec, is_start, sc)
            sp = replace(spec, start=is_start, end=is_end, tag=f"{spec.tag}|wf{k}is{sc}")
            ts, eq, closed, _ = _memory_run(conn, sp, ov)
            m = equity_metrics(ts, eq)
            score = m["sharpe"] if m["sharpe"] is not None else float("-inf")
            if best is None or score > best[0]:
                best = (score, sc, ov, m, closed)
            if bar is not None:
                bar.update(1)
        score, sc, ov, ism, is_closed = best
        sp = replace(spec, start=is_end, end=oos_end, tag=f"{spec.tag}|wf{k}oos")
        ts, eq, closed, _ = _memory_run(conn, sp, ov)
        if bar is not None:
            bar.update(1)
        om = equity_metrics(ts, eq)
        tm = trade_metrics([p.realized_usd for p in closed])
        for ins, plist in ((True, is_closed), (False, closed)):
            for p in plist:
                conn.execute(
                    """INSERT INTO backtest_trades (backtest_id, fold, in_sample, strategy_name, symbol, side, entry_time,
                              exit_time, entry_price, exit_price, qty, pnl_usd, pnl_pct, fees_usd, exit_reason)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    (bid, k, ins, p.strategy, p.symbol, p.side, to_dt(p.opened_at), to_dt(p.closed_at),
                     _dec(p.avg_entry), _dec(p.avg_exit), _dec(p.entry_qty), _dec(p.realized_usd),
                     p.realized_usd / (p.avg_entry * p.entry_qty) * 100 if p.entry_qty else None,
                     _dec(p.fees_usd), p.close_reason))
        conn.commit()
        oos_pnls += [p.realized_usd for p in closed]
        for a, b in zip(eq[:-1], eq[1:]):
            oos_returns.append(b / a - 1.0)
        for t, a, b in zip(ts[1:], eq[:-1], eq[1:]):
            chain.append(chain[-1] * (b / a))
            chain_ts.append(t)
        fold_rows.append({"fold": k, "in_sample": [_dt(is_start).isoformat(), _dt(is_end).isoformat()],
                          "out_of_sample": [_dt(is_end).isoformat(), _dt(oos_end).isoformat()],
                          "chosen_tp_sl_scale": sc, "is_sharpe": ism["sharpe"], "is_return_pct": ism["return_pct"],
                          "oos_return_pct": om["return_pct"], "oos_max_drawdown_pct": om["max_drawdown_pct"],
                          "oos_sharpe": om["sharpe"], "oos_trades": tm["trades"], "oos_win_rate": tm["win_rate"]})
    if bar is not None:
        bar.close()
    conn.commit()
    cm = equity_metrics(chain_ts, chain)
    tm = trade_metrics(oos_pnls)
    return {"folds": fold_rows, "scales": list(WF_SCALES), "return_pct": cm["return_pct"],
            "max_drawdown_pct": round(max(drawdown_series(chain)), 4), "sharpe": cm["sharpe"],
            "trades": tm["trades"], "win_rate": tm["win_rate"]}


def compare(conn: psycopg.Connection, backtest_ids: list[int], notes: str | None = None) -> dict:
    """Store a ``backtest_comparisons`` row with each backtest's headline metrics. Commits.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    backtest_ids : list of int
        Backtests to compare.
    notes : str, optional
        Free text stored with the row.

    Returns
    -------
    dict
        {comparison_id, metric_table: {backtest id: {return_pct, max_drawdown_pct, sharpe, trades, win_rate, run_id,
        oos_return_pct?}}} (JSON-ready).

    Raises
    ------
    UsageError
        When an id is not in ``backtest_runs``.
    """
    rows = conn.execute("SELECT backtest_id, run_id, summary FROM backtest_runs WHERE backtest_id = ANY(%s)",
                        (backtest_ids,)).fetchall()
    found = {r["backtest_id"]: r for r in rows}
    missing = [b for b in backtest_ids if b not in found]
    if missing:
        raise UsageError(f"unknown backtest id(s): {missing}")
    table = {}
    for b in backtest_ids:
        s = found[b]["summary"] or {}
        table[str(b)] = {k: s.get(k) for k in ("return_pct", "max_drawdown_pct", "sharpe", "trades", "win_rate")}
        table[str(b)]["run_id"] = found[b]["run_id"]
        if s.get("oos"):
            table[str(b)]["oos_return_pct"] = s["oos"].get("return_pct")
    cid = conn.execute("INSERT INTO backtest_comparisons (backtest_ids, metric_table, notes) VALUES (%s, %s, %s) "
                       "RETURNING comparison_id", (backtest_ids, Jsonb(table), notes)).fetchone()["comparison_id"]
    conn.commit()
    return {"comparison_id": cid, "metric_table": table}
