"""Forensic reads of the engine's audit trail (migration 0003): one symbol's lifecycle, system health, and
blocked signals. These are the deterministic cores behind `ats investigate`, `ats health-check`, the MCP tools
``investigate_symbol`` / ``health_summary`` / ``blocked_signals`` and the investigate agent.

All three functions only read (SELECT) and return JSON-serialisable dicts: numbers as float (USD amounts are
USD, percentages are percent), timestamps as ISO-8601 UTC strings. Each result carries ``queries``: the SQL
statements (parameters inlined) that reproduce every figure, for report appendices.

Run selection: ``run_id=None`` picks the most recent engine run (replay/live preferred over backtests) that
touched the symbol (investigate) or of any kind (health). P&L per trade is ``positions.realized_pnl_usd`` of
closed positions (net of fees, written by the engine); it is reconciled against
``portfolio_hourly_snapshots`` — never against balances and never by summing ``net_pnl_daily_usd`` (a running
cumulative since 00:00 UTC, see the CLAUDE.md anti-patterns).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ..errors import AtsError
from ..timeutil import UTC, parse_ts, utcnow
from .sqlfmt import QueryLog, fnum, iso, jsonable, table_exists

# Absolute tolerance for P&L reconciliation: rounding of numeric sums plus float conversion (USD).
RECONCILE_TOLERANCE_USD = 0.01
# Keys a snapshot's per-symbol positions entry may use for the symbol's cumulative realized P&L (USD).
_REALIZED_KEYS = ("realized_pnl_usd", "realized_usd", "realized")


# ---------------------------------------------------------------------------------------------------------
# helpers

def _ts(v: Any, what: str) -> datetime | None:
    return None if v is None or v == "" else parse_ts(v, what=what)


def _conn_ok(conn: psycopg.Connection) -> None:
    if conn.row_factory is None or conn.row_factory.__name__ != "dict_row":  # pragma: no cover - defensive
        from psycopg.rows import dict_row

        conn.row_factory = dict_row


def resolve_run(conn: psycopg.Connection, run_id: str | None = None, *, symbol: str | None = None,
                account_id: str | None = None) -> dict | None:
    """The engine_runs row to investigate: ``run_id`` if given (AtsError when unknown), else the latest run
    (replay/live before backtest, then newest started_at) of ``account_id`` -- default: the process's bound account
    (``ATS_ACCOUNT`` / ``--account``, else ``default``) -- that has signals or positions for ``symbol`` (any of
    its runs when ``symbol`` is None). None when there is no such run."""
    _conn_ok(conn)
    if account_id is None:
        from ..paths import bound_account

        account_id = bound_account()
    if run_id:
        row = conn.execute("SELECT * FROM engine_runs WHERE run_id = %s", (run_id,)).fetchone()
        if row is None:
            raise AtsError(f"engine run {run_id!r} not found in engine_runs")
        return dict(row)
    conds, params = [], {}
    if symbol:
        conds.append("(EXISTS (SELECT 1 FROM signals s WHERE s.run_id = r.run_id AND s.symbol = %(symbol)s)"
                     " OR EXISTS (SELECT 1 FROM positions p WHERE p.run_id = r.run_id AND p.symbol = %(symbol)s)"
                     " OR EXISTS (SELECT 1 FROM blocked_signals b WHERE b.run_id = r.run_id AND b.symbol = %(symbol)s))")
        params["symbol"] = symbol
    if account_id:
        conds.append("r.account_id = %(account_id)s")
        params["account_id"] = account_id
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    row = conn.execute(f"SELECT r.* FROM engine_runs r {where} "
                       "ORDER BY (r.mode = 'backtest'), r.started_at DESC, r.run_id DESC LIMIT 1", params).fetchone()
    return dict(row) if row else None


def _breaker_name(payload: dict | None) -> str | None:
    p = payload or {}
    return p.get("breaker") or p.get("name")


def breaker_windows(events: list[dict], until: datetime | None = None) -> list[dict]:
    """Turn breaker_tripped / breaker_reset system_events (ordered by ts) into windows
    ``{breaker, scope, tripped_at, reset_at|None, cause}``. A trip while already tripped extends the window."""
    open_: dict[tuple, dict] = {}
    out: list[dict] = []
    for e in sorted(events, key=lambda r: (r["ts"], r.get("event_id", 0))):
        if e["event_type"] not in ("breaker_tripped", "breaker_reset"):
            continue
        payload = e.get("payload") or {}
        name = _breaker_name(payload)
        if not name:
            continue
        scope = payload.get("scope") or e.get("symbol") or "*"
        key = (name, scope)
        if e["event_type"] == "breaker_tripped":
            if key not in open_:
                open_[key] = {"breaker": name, "scope": scope, "tripped_at": e["ts"], "reset_at": None,
                              "cause": payload.get("cause") or payload.get("reason"), "trip_event_id": e.get("event_id")}
        else:
            w = open_.pop(key, None)
            if w is not None:
                w["reset_at"] = e["ts"]
                out.append(w)
    out.extend(open_.values())
    out.sort(key=lambda w: w["tripped_at"])
    return out


def _in_window(ts: datetime, w: dict) -> bool:
    return w["tripped_at"] <= ts and (w["reset_at"] is None or ts < w["reset_at"])


def _snapshot_symbol_entry(positions: Any, symbol: str) -> dict | None:
    if isinstance(positions, dict):
        v = positions.get(symbol)
        return v if isinstance(v, dict) else None
    if isinstance(positions, list):
        for e in positions:
            if isinstance(e, dict) and e.get("symbol") == symbol:
                return e
    return None


def _entry_realized(entry: dict | None) -> float | None:
    if not entry:
        return None
    for k in _REALIZED_KEYS:
        if entry.get(k) is not None:
            return float(entry[k])
    return None


# ---------------------------------------------------------------------------------------------------------
# investigate_symbol

def investigate_symbol(conn: psycopg.Connection, symbol: str, since: Any = None, until: Any = None,
                       run_id: str | None = None) -> dict:
    """The full lifecycle of ``symbol`` in one engine run, from the audit tables of migration 0003.

    ``since`` / ``until``: ISO strings or datetimes (UTC), inclusive bounds on the engine clock; None = the whole
    run. Returns a JSON-serialisable dict::

        {symbol, since, until, run, account_id, generated_at,
         counts: {signals, accepted, blocked, orders, fills, positions, closed, open, events},
         signals, blocked_signals, orders, fills, positions, position_evaluations, position_targets,
         system_events,                         # raw rows (numbers float, times ISO UTC)
         trades: [{position_id, strategy_name, side, opened_at, closed_at, hold_minutes, entry_price,
                   exit_price, qty, realized_pnl_usd, fees_usd, return_pct, close_reason, entry_signal,
                   entry_config, exit_signal, exit_evaluation, orders, fills, targets, blocked_while_open}],
         pnl: {closed_trades, realized_pnl_usd, fees_usd, wins, losses, open_positions},
         blocked_summary: {by_gate, by_reason, by_strategy, by_day: {YYYY-MM-DD: {gate: n}}, breakers},
         breaker_windows: [{breaker, scope, tripped_at, reset_at, cause}],
         reconciliation: {method, trades_pnl_usd, snapshot_pnl_usd, difference_usd, reconciled, ...},
         timeline: [{ts, kind, text, ref}], anomalies: [{kind, ts, detail}], open_questions: [str],
         queries: [{name, sql, rows}]}

    When no run touched the symbol the dict has ``run: None`` and empty lists. Raises AtsError for an unknown
    ``run_id`` or an unparsable time.

    The reads (:func:`_gather`): the symbol's rows of the window, the events and breakers, the signals, orders
    and fills outside the window that the window's positions reference, the P&L summary and the snapshots of
    the reconciliation -- in dependency order, each level's statements sent together in one round trip (libpq
    pipeline mode), so a call costs at most five round trips whatever the number of positions (the
    configuration in force at every entry and exit is one statement too, :meth:`ConfigAsOf.prefetch`). Then,
    in Python: trades, P&L summary check, blocked summary, reconciliation, timeline, anomalies, open questions.
    The appendix lists each statement as executed, in the order of those steps.
    """
    _conn_ok(conn)
    symbol = symbol.strip().upper()
    since_dt, until_dt = _ts(since, "since"), _ts(until, "until")
    if since_dt and until_dt and until_dt < since_dt:
        raise AtsError(f"investigate {symbol}: until {iso(until_dt)} is before since {iso(since_dt)}")
    q = QueryLog(conn)
    run = resolve_run(conn, run_id, symbol=symbol)
    out: dict[str, Any] = {"symbol": symbol, "since": iso(since_dt), "until": iso(until_dt), "run": None,
                           "account_id": None, "generated_at": iso(utcnow())}
    if run is None:
        return jsonable(_no_run(out, symbol))
    out["run"] = run
    out["account_id"] = run["account_id"]
    sc = _Scope(conn, q, run, symbol, since_dt, until_dt,
                {"run_id": run["run_id"], "symbol": symbol, "since": since_dt, "until": until_dt},
                {"run_id": run["run_id"], "symbol": symbol, "since": since_dt, "until": until_dt})
    g = _gather(sc)
    rows, events, bwins = g.rows, g.events, g.bwins
    trades = _trades(sc, rows, bwins)
    pnl = _pnl_summary(sc, trades, g.pnl_row)
    blocked = rows.blocked
    summary, by_gate, by_day = _blocked_summary(sc, blocked)
    recon = _reconcile(sc, g, trades)
    timeline = _timeline(rows.signals, blocked, rows.all_orders, rows.all_fills, rows.positions, rows.targets,
                         rows.evaluations, events)
    anomalies = _anomalies(g.feed, trades, rows.all_orders, rows.evaluations, recon)
    q.entries.sort(key=lambda e: _APPENDIX_ORDER.get(e["name"], len(_APPENDIX_ORDER)))
    questions = _open_questions(symbol, trades, blocked, by_gate, by_day, recon, anomalies, rows.positions)
    positions = rows.positions
    out.update(
        counts={"signals": len(rows.signals), "accepted": sum(1 for s in rows.signals if s["status"] == "accepted"),
                "blocked": len(blocked), "orders": len(rows.orders), "fills": len(rows.fills),
                "positions": len(positions), "closed": sum(1 for x in positions if x["status"] == "closed"),
                "open": sum(1 for x in positions if x["status"] == "open"), "events": len(events)},
        signals=rows.signals, blocked_signals=blocked, orders=rows.orders, fills=rows.fills, positions=positions,
        position_evaluations=rows.evaluations, position_targets=rows.targets, system_events=events, trades=trades,
        pnl=pnl, blocked_summary=summary, breaker_windows=bwins, reconciliation=recon, timeline=timeline,
        anomalies=anomalies, open_questions=questions, queries=q.entries,
    )
    return jsonable(out)


_EMPTY_LISTS = ("signals", "blocked_signals", "orders", "fills", "positions", "position_evaluations",
                "position_targets", "system_events", "trades", "breaker_windows", "timeline", "anomalies")

_SIGNAL_COLS = ("signal_id, strategy_name, timeframe, ts, side, intent, position_side, price, strength, regime, "
                "status, context")
_ORDER_COLS = """order_id, client_order_id, signal_id, position_id, strategy_name, side, position_side, intent,
               order_type, qty, notional_usd, decision_price, status, reject_reason, filled_qty, avg_fill_price,
               broker, submitted_at, updated_at, context"""
_FILL_COLS = "fill_id, order_id, client_order_id, fill_seq, side, qty, price, fee_usd, liquidity, slippage_bps, ts"

# The appendix lists the queries in the order of the steps that use them, however they were batched.
_APPENDIX_ORDER = {n: i for i, n in enumerate((
    "signals", "blocked_signals", "orders", "fills", "positions", "position_evaluations", "position_targets",
    "system_events", "breaker_events", "referenced_signals", "position_orders", "position_fills", "pnl_summary",
    "blocked_by_day_gate", "snapshot_end", "snapshot_start", "trades_in_snapshot_interval",
    "snapshot_symbol_realized_last_known", "snapshot_symbol_pnl_by_deltas", "feed_anomalies"))}


@dataclass
class _Scope:
    """What one investigation reads: the connection, its query log, the run, the symbol and the window."""

    conn: psycopg.Connection
    q: QueryLog
    run: dict
    symbol: str
    since_dt: datetime | None
    until_dt: datetime | None
    p: dict  # the bound parameters shared by every query (grows as steps add ids)
    rp: dict  # the reconciliation's parameters (run_id, symbol, since, until; s0 / s1 once known)

    def win(self, col: str) -> str:
        """`` AND col >= since AND col <= until`` for the bounds that are set ('' for the whole run)."""
        parts = []
        if self.since_dt is not None:
            parts.append(f"{col} >= %(since)s")
        if self.until_dt is not None:
            parts.append(f"{col} <= %(until)s")
        return (" AND " + " AND ".join(parts)) if parts else ""

    def pos_win(self) -> str:
        """Positions overlapping the window: opened before its end, not closed before its start."""
        w = ""
        if self.until_dt is not None:
            w += " AND opened_at <= %(until)s"
        if self.since_dt is not None:
            w += " AND (closed_at IS NULL OR closed_at >= %(since)s)"
        return w


@dataclass
class _Rows:
    """The symbol's audit rows of the window, plus the rows outside it that its positions reference."""

    signals: list[dict]
    blocked: list[dict]
    orders: list[dict]
    fills: list[dict]
    positions: list[dict]
    evaluations: list[dict]
    targets: list[dict]
    sig_by_id: dict = field(default_factory=dict)
    all_orders: list[dict] = field(default_factory=list)
    all_fills: list[dict] = field(default_factory=list)


def _no_run(out: dict, symbol: str) -> dict:
    for k in _EMPTY_LISTS:
        out[k] = []
    out.update(counts={}, pnl={"closed_trades": 0, "realized_pnl_usd": 0.0, "fees_usd": 0.0, "wins": 0,
                               "losses": 0, "open_positions": 0},
               blocked_summary={"by_gate": {}, "by_reason": {}, "by_strategy": {}, "by_day": {}, "breakers": []},
               reconciliation={"method": "none", "reconciled": None, "note": "no engine run touched this symbol"},
               open_questions=[f"No engine run has any signal, blocked signal or position for {symbol}: "
                               "is it on the watchlist / in the run's symbols?"],
               queries=[])
    return out


def _audit_stmts(sc: _Scope) -> list[tuple]:
    """The window's rows of the symbol: signals, blocked signals, orders, fills, positions (round trip 1)."""
    p, win = sc.p, sc.win
    return [
        ("signals", "signals", f"""
        SELECT {_SIGNAL_COLS}
          FROM signals WHERE run_id = %(run_id)s AND symbol = %(symbol)s{win('ts')}
         ORDER BY ts, signal_id""", p, True),
        ("blocked_signals", "blocked_signals", f"""
        SELECT blocked_id, signal_id, strategy_name, ts, gate, reason, context
          FROM blocked_signals WHERE run_id = %(run_id)s AND symbol = %(symbol)s{win('ts')}
         ORDER BY ts, blocked_id""", p, True),
        ("orders", "orders", f"""
        SELECT {_ORDER_COLS}
          FROM order_executions WHERE run_id = %(run_id)s AND symbol = %(symbol)s{win('submitted_at')}
         ORDER BY submitted_at, order_id""", p, True),
        ("fills", "fills", f"""
        SELECT {_FILL_COLS}
          FROM fills WHERE run_id = %(run_id)s AND symbol = %(symbol)s{win('ts')}
         ORDER BY ts, fill_id""", p, True),
        ("positions", "positions", f"""
        SELECT position_id, strategy_name, side, status, qty, entry_qty, avg_entry_price, avg_exit_price,
               realized_pnl_usd, fees_usd, opened_at, closed_at, close_reason, entry_signal_id, context
          FROM positions WHERE run_id = %(run_id)s AND symbol = %(symbol)s{sc.pos_win()}
         ORDER BY opened_at, position_id""", p, True),
    ]


def _span_stmt(sc: _Scope) -> tuple:
    """The run's time span on the engine clock (only needed when the window is open on one side)."""
    return ("run_span", "run_span", """
        SELECT least(s.first_ts, b.first_ts, h.first_ts) AS first_ts,
               greatest(s.last_ts, b.last_ts, h.last_ts) AS last_ts
          FROM (SELECT min(ts) AS first_ts, max(ts) AS last_ts FROM signals WHERE run_id = %(run_id)s) s,
               (SELECT min(ts) AS first_ts, max(ts) AS last_ts FROM blocked_signals WHERE run_id = %(run_id)s) b,
               (SELECT min(ts) AS first_ts, max(ts) AS last_ts FROM portfolio_hourly_snapshots
                 WHERE run_id = %(run_id)s) h""", sc.p, False)


def _event_stmts(sc: _Scope, span: dict | None) -> list[tuple]:
    """The symbol's events plus market-wide breaker / engine events (scope '*'), restricted to this run when the
    payload names one; the window defaults to the run's span on the engine clock (``span``: the run_span row).
    Breaker events are read up to the window's end: a trip before the window still counts."""
    p, run = sc.p, sc.run
    span = span or {}
    p["ev_since"] = sc.since_dt or span.get("first_ts") or run.get("started_at")
    p["ev_until"] = sc.until_dt or span.get("last_ts") or run.get("last_bar_time") or utcnow()
    if p["ev_until"] and run.get("last_bar_time") and sc.until_dt is None:
        p["ev_until"] = max(p["ev_until"], run["last_bar_time"])
    return [
        ("system_events", "system_events", """
        SELECT event_id, ts, component, event_type, severity, symbol, payload
          FROM system_events
         WHERE ts >= %(ev_since)s AND ts <= %(ev_until)s
           AND (symbol = %(symbol)s
                OR (symbol IS NULL AND (component IN ('risk', 'engine', 'market_data', 'broker')
                                        OR event_type LIKE 'breaker%%')))
           AND (payload->>'run_id' IS NULL OR payload->>'run_id' = %(run_id)s)
           AND (account_id IS NULL OR account_id = (SELECT account_id FROM engine_runs WHERE run_id = %(run_id)s))
         ORDER BY ts, event_id""", p, True),
        ("breaker_events", "breaker_events", """
        SELECT event_id, ts, event_type, symbol, payload FROM system_events
         WHERE event_type IN ('breaker_tripped', 'breaker_reset') AND ts <= %(ev_until)s
           AND (payload->>'run_id' IS NULL OR payload->>'run_id' = %(run_id)s)
           AND (account_id IS NULL OR account_id = (SELECT account_id FROM engine_runs WHERE run_id = %(run_id)s))
         ORDER BY ts, event_id""", p, True),
    ]


def _breaker_wins(sc: _Scope, breaker_events: list[dict]) -> list[dict]:
    """The breaker windows of the symbol (scope '*' or the symbol) that overlap the event window."""
    p = sc.p
    return [w for w in breaker_windows(breaker_events)
            if (w["scope"] in ("*", sc.symbol)) and (p["ev_since"] is None or w["reset_at"] is None
                                                      or w["reset_at"] >= p["ev_since"])]


def _pnl_stmt(sc: _Scope) -> tuple:
    """P&L of the positions closed in the window, from one query (printed in the report appendix)."""
    closed_win = sc.win("closed_at")
    return ("pnl_summary", "pnl_summary", f"""
        SELECT count(*) FILTER (WHERE status = 'closed'{closed_win}) AS closed_trades,
               coalesce(sum(realized_pnl_usd) FILTER (WHERE status = 'closed'{closed_win}), 0) AS realized_pnl_usd,
               coalesce(sum(fees_usd) FILTER (WHERE status = 'closed'{closed_win}), 0) AS fees_usd,
               count(*) FILTER (WHERE status = 'closed'{closed_win} AND realized_pnl_usd > 0) AS wins,
               count(*) FILTER (WHERE status = 'closed'{closed_win} AND realized_pnl_usd <= 0) AS losses,
               count(*) FILTER (WHERE status = 'open') AS open_positions
          FROM positions WHERE run_id = %(run_id)s AND symbol = %(symbol)s{sc.pos_win()}""", sc.p, True)


def _snapshot_stmts(sc: _Scope) -> list[tuple]:
    """The snapshots bounding the reconciliation interval: the last at or before ``until`` (and ``since``).
    The start snapshot is recorded only when an end snapshot exists (see :func:`_gather`)."""
    rp = sc.rp
    out = [("snapshot_end", "snapshot_end", """
        SELECT ts, realized_pnl_usd, positions FROM portfolio_hourly_snapshots
         WHERE run_id = %(run_id)s""" + (" AND ts <= %(until)s" if sc.until_dt else "") + """
         ORDER BY ts DESC LIMIT 1""", rp, True)]
    if sc.since_dt is not None:
        out.append(("snapshot_start", "snapshot_start", """
            SELECT ts, realized_pnl_usd, positions FROM portfolio_hourly_snapshots
             WHERE run_id = %(run_id)s AND ts <= %(since)s ORDER BY ts DESC LIMIT 1""", rp, False))
    return out


def _last_known_stmt(key: str, run_id: str, symbol: str, at: datetime) -> tuple:
    """The last snapshot at or before ``at`` whose positions JSON names ``symbol`` (a flat symbol drops out)."""
    return (key, "snapshot_symbol_realized_last_known", """
        SELECT ts, positions FROM portfolio_hourly_snapshots
         WHERE run_id = %(run_id)s AND ts <= %(at)s AND positions::text LIKE %(pat)s
         ORDER BY ts DESC LIMIT 1""", {"run_id": run_id, "at": at, "pat": f'%"{symbol}"%'}, True)


def _reconcile_stmts(sc: _Scope, end: dict, start: dict | None) -> list[tuple]:
    """Round trip 2 of the reconciliation: closed trades per symbol in the snapshot interval, and the symbol's
    snapshot P&L (the positions JSON's last known values, or the snapshot deltas)."""
    rp, symbol, run_id = sc.rp, sc.symbol, sc.run["run_id"]
    rp["s0"] = start["ts"] if start else None
    rp["s1"] = end["ts"]
    s0_cond = "closed_at >= %(s0)s AND " if start else ""
    out = [("trades_in_snapshot_interval", "trades_in_snapshot_interval", f"""
        SELECT symbol, count(*) AS trades, sum(realized_pnl_usd) AS realized_pnl_usd
          FROM positions WHERE run_id = %(run_id)s AND status = 'closed' AND {s0_cond}closed_at < %(s1)s
         GROUP BY symbol ORDER BY symbol""", rp, True)]
    if _has_json(end):
        if _entry_realized(_snapshot_symbol_entry(end["positions"], symbol)) is None:
            out.append(_last_known_stmt("last_known_end", run_id, symbol, end["ts"]))
        if start is not None and _entry_realized(_snapshot_symbol_entry(start["positions"], symbol)) is None:
            out.append(_last_known_stmt("last_known_start", run_id, symbol, start["ts"]))
        return out
    # Each snapshot's interval [prev_ts, ts) is a range on positions_run_closed (run_id, closed_at): only the
    # snapshots of (s0, s1] are joined, and the first snapshot's open lower bound is -infinity (lag's default):
    # an OR with "prev_ts IS NULL" would scan every earlier close for every snapshot, and a coalesce() in the
    # join would not be an index bound under row-level security (not leakproof).
    s0_snaps = "AND ts >= %(s0)s " if start else ""
    s0_snap = "AND sn.ts > %(s0)s " if start else ""
    s0_where = "WHERE sn.ts > %(s0)s" if start else ""
    out.append(("deltas", "snapshot_symbol_pnl_by_deltas", f"""
        WITH snaps AS (
            SELECT ts, lag(ts, 1, '-infinity'::timestamptz) OVER (ORDER BY ts) AS prev_ts,
                   realized_pnl_usd - coalesce(lag(realized_pnl_usd) OVER (ORDER BY ts), 0) AS delta
              FROM portfolio_hourly_snapshots WHERE run_id = %(run_id)s {s0_snaps}AND ts <= %(s1)s),
        closes AS (
            SELECT sn.ts,
                   sum(p.realized_pnl_usd) FILTER (WHERE p.symbol = %(symbol)s) AS sym,
                   coalesce(sum(p.realized_pnl_usd) FILTER (WHERE p.symbol <> %(symbol)s), 0) AS other
              FROM snaps sn JOIN positions p
                ON p.run_id = %(run_id)s AND p.status = 'closed' AND p.closed_at < sn.ts AND p.closed_at >= sn.prev_ts
             {s0_where}
             GROUP BY sn.ts)
        SELECT coalesce(sum(sn.delta - c.other), 0) AS snapshot_pnl_usd, count(*) AS intervals
          FROM snaps sn JOIN closes c ON c.ts = sn.ts
         WHERE c.sym IS NOT NULL {s0_snap}AND sn.ts <= %(s1)s""", rp, True))
    return out


def _feed_stmt(sc: _Scope, signals: list[dict]) -> tuple | None:
    """Market-data anomalies for the symbol (feed_anomalies, migration 0002) in the window (the signals' span
    when the window is open); None when there is no bound."""
    lo = sc.since_dt or (min((s["ts"] for s in signals), default=None))
    hi = sc.until_dt or (max((s["ts"] for s in signals), default=None))
    if lo is None or hi is None:
        return None
    return ("feed_anomalies", "feed_anomalies", """
                    SELECT * FROM feed_anomalies WHERE symbol = %(symbol)s AND open_time >= %(lo)s
                       AND open_time <= %(hi)s ORDER BY open_time LIMIT 200""",
            {"symbol": sc.symbol, "lo": lo, "hi": hi}, True)


def _run(q: QueryLog, stmts: list[tuple]) -> dict[str, list[dict]]:
    """``q.batch`` over ``[(key, name, sql, params, record)]``: one round trip; rows by key."""
    rows = q.batch([(n, s, p, r) for _, n, s, p, r in stmts])
    return {k: r for (k, *_), r in zip(stmts, rows)}


def _run_feed(q: QueryLog, stmts: list[tuple], feed: tuple | None) -> dict[str, list[dict]]:
    """:func:`_run` of ``stmts`` plus the feed_anomalies statement ``feed`` (None: none). As before, a
    feed_anomalies table that is missing or cannot be read gives no feed anomalies (and no appendix entry)
    rather than an error: the aborted batch is rolled back and run again without it."""
    if feed is None:
        return _run(q, stmts)
    try:
        return _run(q, stmts + [feed])
    except psycopg.Error:
        q.conn.rollback()
        out = _run(q, stmts)
        out["feed_anomalies"] = []
        return out


@dataclass
class _Gathered:
    """Everything an investigation reads from the database, fetched in at most five round trips."""

    rows: _Rows
    events: list[dict]
    bwins: list[dict]
    pnl_row: dict
    snap_end: dict | None
    snap_start: dict | None
    recon: dict[str, list[dict]]
    feed: list[dict]


def _gather(sc: _Scope) -> _Gathered:
    """Read the investigation's rows in dependency order, each level's statements in one round trip (pipeline):

    1. the window's signals, blocked signals, orders, fills, positions; the P&L summary; the bounding snapshots;
       the events and breaker events (when the window is closed; else the run's span first);
    2. the positions' evaluations, targets and orders, the signals they reference, the reconciliation's
       trades and snapshot P&L, the feed anomalies (and the events of an open window);
    3. the fills of the positions' orders and the signals of orders outside the window;
    4. (in :func:`_trades`) the configuration in force at every entry and exit, in one statement.

    Each statement is the one printed in the appendix (the appendix keeps the steps' order, :data:`_APPENDIX_ORDER`).
    """
    q, p = sc.q, sc.p
    need_span = sc.since_dt is None or sc.until_dt is None
    l1 = _audit_stmts(sc) + [_pnl_stmt(sc)] + _snapshot_stmts(sc)
    feed = None
    if need_span:  # the feed anomalies' bounds default to the signals' span: round trip 2
        l1.append(_span_stmt(sc))
    else:  # a closed window bounds the events and the feed anomalies itself: round trip 1
        l1 += _event_stmts(sc, None)
        feed = _feed_stmt(sc, [])
    r1 = _run_feed(q, l1, feed)
    signals, positions, orders = r1["signals"], r1["positions"], r1["orders"]
    end = r1["snapshot_end"][0] if r1["snapshot_end"] else None
    start = None
    if end is not None and sc.since_dt is not None:
        start = r1["snapshot_start"][0] if r1["snapshot_start"] else None
        name, sql, params = l1[[k for k, *_ in l1].index("snapshot_start")][1:4]
        q.record(name, sql, params, len(r1["snapshot_start"]))

    pids = [r["position_id"] for r in positions]
    p["position_ids"] = pids
    sig_by_id = {s["signal_id"]: s for s in signals}
    missing = [r["entry_signal_id"] for r in positions if r["entry_signal_id"] and r["entry_signal_id"] not in sig_by_id]
    missing += [o["signal_id"] for o in orders if o["signal_id"] and o["signal_id"] not in sig_by_id]
    l2: list[tuple] = []
    if need_span:
        l2 += _event_stmts(sc, r1["run_span"][0] if r1["run_span"] else None)
    if pids:
        l2 += [("position_evaluations", "position_evaluations", """
        SELECT evaluation_id, position_id, ts, price, pnl_pct, tp_price, sl_price, trailing_stop, hold_minutes,
               decision, reason, context
          FROM position_evaluations WHERE position_id = ANY(%(position_ids)s)
         ORDER BY ts, evaluation_id""", p, True),
               ("position_targets", "position_targets", """
        SELECT target_id, position_id, ts, tp_price, sl_price, trailing_stop, reason
          FROM position_targets WHERE position_id = ANY(%(position_ids)s)
         ORDER BY ts, target_id""", p, True)]
    if missing:
        p["extra_signal_ids"] = sorted(set(missing))
        l2.append(("referenced_signals", "referenced_signals", f"""
                SELECT {_SIGNAL_COLS} FROM signals WHERE signal_id = ANY(%(extra_signal_ids)s)""", p, True))
    if pids:
        l2.append(("position_orders", "position_orders", f"""
            SELECT {_ORDER_COLS}
              FROM order_executions WHERE position_id = ANY(%(position_ids)s) ORDER BY submitted_at, order_id""", p,
                   True))
    if end is not None:
        l2 += _reconcile_stmts(sc, end, start)
    if "feed_anomalies" in r1:
        r2 = _run(q, l2)
        r2["feed_anomalies"] = r1["feed_anomalies"]
    else:
        r2 = _run_feed(q, l2, _feed_stmt(sc, signals))
    events = r1.get("system_events", r2.get("system_events"))
    breaker_events = r1.get("breaker_events", r2.get("breaker_events"))

    for s in r2.get("referenced_signals", []):
        sig_by_id[s["signal_id"]] = s
    rows = _Rows(signals, r1["blocked_signals"], orders, r1["fills"], positions, r2.get("position_evaluations", []),
                 r2.get("position_targets", []), sig_by_id)
    if not pids:
        rows.all_orders, rows.all_fills = rows.orders, rows.fills
    else:
        pos_orders = r2["position_orders"]
        known = {o["order_id"] for o in orders}
        rows.all_orders = orders + [o for o in pos_orders if o["order_id"] not in known]
        p["order_ids"] = [o["order_id"] for o in rows.all_orders]
        outside = sorted({o["signal_id"] for o in pos_orders if o["signal_id"] and o["signal_id"] not in sig_by_id})
        l3: list[tuple] = []
        if p["order_ids"]:
            l3.append(("position_fills", "position_fills", f"""
            SELECT {_FILL_COLS}
              FROM fills WHERE order_id = ANY(%(order_ids)s) ORDER BY ts, fill_id""", p, True))
        if outside:  # the signals of the positions' orders outside the window: one statement, not one per order
            l3.append(("outside_signals", "outside_signals", f"SELECT {_SIGNAL_COLS} FROM signals "
                       "WHERE signal_id = ANY(%(ids)s)", {"ids": outside}, False))
        r3 = _run(q, l3)
        rows.all_fills = r3.get("position_fills", [])
        for s in r3.get("outside_signals", []):
            sig_by_id[s["signal_id"]] = s
    recon = {k: v for k, v in r2.items() if k in ("trades_in_snapshot_interval", "last_known_end",
                                                 "last_known_start", "deltas")}
    return _Gathered(rows, events, _breaker_wins(sc, breaker_events), r1["pnl_summary"][0], end, start, recon,
                     r2.get("feed_anomalies", []))


def _sig_brief(s: dict | None) -> dict | None:
    if not s:
        return None
    return {k: s[k] for k in ("signal_id", "strategy_name", "ts", "side", "intent", "price", "strength",
                              "regime", "status", "context")}


def _group(items: list[dict], key: str) -> dict[Any, list]:
    out: dict[Any, list] = defaultdict(list)
    for it in items:
        if it[key] is not None:
            out[it[key]].append(it)
    return out


def _trades(sc: _Scope, rows: _Rows, bwins: list[dict]) -> list[dict]:
    """One trade per position, with its entry/exit signals, the configuration in force at entry and exit, its
    orders, fills and targets, and the breakers active at its entry."""
    from .config_as_of import ConfigAsOf

    config_at = ConfigAsOf(sc.conn, sc.run["account_id"])
    evals_by_pos = _group(rows.evaluations, "position_id")
    targets_by_pos = _group(rows.targets, "position_id")
    orders_by_pos = _group(rows.all_orders, "position_id")
    fills_by_order = _group(rows.all_fills, "order_id")
    pairs = []  # every (strategy, time) _trade will ask for, looked up in one statement
    for pos in rows.positions:
        entry_sig = _entry_signal(pos, rows.sig_by_id, orders_by_pos.get(pos["position_id"], []))
        pairs.append((pos["strategy_name"], entry_sig["ts"] if entry_sig else pos["opened_at"]))
        if pos["closed_at"]:
            pairs.append((pos["strategy_name"], pos["closed_at"]))
    config_at.prefetch(pairs)
    return [_trade(pos, rows, config_at, orders_by_pos.get(pos["position_id"], []),
                   evals_by_pos.get(pos["position_id"], []), targets_by_pos.get(pos["position_id"], []),
                   fills_by_order, bwins)
            for pos in rows.positions]


def _entry_signal(pos: dict, sig_by_id: dict, pord: list[dict]) -> dict | None:
    """The position's entry signal: its ``entry_signal_id``, else the signal of its first open order."""
    entry_sig = sig_by_id.get(pos["entry_signal_id"]) if pos["entry_signal_id"] else None
    if entry_sig is None:
        first_open = next((o for o in pord if o["intent"] == "open"), None)
        if first_open and first_open["signal_id"]:
            entry_sig = sig_by_id.get(first_open["signal_id"])
    return entry_sig


def _trade(pos: dict, rows: _Rows, config_at, pord: list[dict], pevals: list[dict], ptargets: list[dict],
           fills_by_order: dict, bwins: list[dict]) -> dict:
    sig_by_id = rows.sig_by_id
    entry_sig = _entry_signal(pos, sig_by_id, pord)
    exit_sig = None
    for o in pord:
        if o["intent"] == "close" and o["signal_id"] and o["signal_id"] in sig_by_id:
            exit_sig = sig_by_id[o["signal_id"]]
    exit_eval = next((e for e in reversed(pevals) if str(e["decision"]).startswith("exit_")
                      and e["decision"] != "exit_blocked"), None)
    hold = None
    if pos["closed_at"] is not None:
        hold = (pos["closed_at"] - pos["opened_at"]).total_seconds() / 60.0
    entry_cfg = config_at(pos["strategy_name"], entry_sig["ts"] if entry_sig else pos["opened_at"])
    exit_cfg = config_at(pos["strategy_name"], pos["closed_at"]) if pos["closed_at"] else None
    blocked_while_open = [b for b in rows.blocked if b["ts"] >= pos["opened_at"]
                          and (pos["closed_at"] is None or b["ts"] <= pos["closed_at"])]
    entry_notional = fnum(pos["entry_qty"]) * fnum(pos["avg_entry_price"]) if pos["entry_qty"] else None
    ret_pct = None
    if pos["status"] == "closed" and entry_notional:
        ret_pct = 100.0 * fnum(pos["realized_pnl_usd"]) / entry_notional
    return {
        "position_id": pos["position_id"], "strategy_name": pos["strategy_name"], "side": pos["side"],
        "status": pos["status"], "opened_at": pos["opened_at"], "closed_at": pos["closed_at"],
        "hold_minutes": hold, "entry_price": pos["avg_entry_price"], "exit_price": pos["avg_exit_price"],
        "qty": pos["entry_qty"], "entry_notional_usd": entry_notional,
        "realized_pnl_usd": pos["realized_pnl_usd"], "fees_usd": pos["fees_usd"], "return_pct": ret_pct,
        "close_reason": pos["close_reason"],
        "entry_signal": _sig_brief(entry_sig),
        "entry_config": _cfg_brief(entry_cfg),
        "exit_signal": _sig_brief(exit_sig),
        "exit_config": _cfg_brief(exit_cfg),
        "exit_evaluation": exit_eval,
        "evaluations": len(pevals),
        "orders": pord,
        "fills": [f for o in pord for f in fills_by_order.get(o["order_id"], [])],
        "targets": ptargets,
        "breakers_at_entry": [w["breaker"] for w in bwins if _in_window(pos["opened_at"], w)],
        "blocked_while_open": len(blocked_while_open),
    }


def _closed_in_window(sc: _Scope, t: dict) -> bool:
    if t["status"] != "closed" or t["closed_at"] is None:
        return False
    if sc.since_dt is not None and t["closed_at"] < sc.since_dt:
        return False
    if sc.until_dt is not None and t["closed_at"] > sc.until_dt:
        return False
    return True


def _pnl_summary(sc: _Scope, trades: list[dict], srow: dict) -> dict:
    """P&L of the positions closed in the window, from one query (``srow``, the pnl_summary row printed in the
    report appendix); the per-trade rows must agree with it (AtsError otherwise: a bug)."""
    closed = [t for t in trades if _closed_in_window(sc, t)]
    pnl = {k: (fnum(v) if k.endswith("_usd") else int(v)) for k, v in srow.items()}
    check = sum(fnum(t["realized_pnl_usd"]) for t in closed)
    if abs(check - pnl["realized_pnl_usd"]) > 1e-6 or len(closed) != pnl["closed_trades"]:  # pragma: no cover
        raise AtsError(f"investigate {sc.symbol}: per-trade P&L ({check}) disagrees with the summary query "
                       f"({pnl['realized_pnl_usd']}); report a bug in ats.forensics.queries")
    return pnl


def _blocked_summary(sc: _Scope, blocked: list[dict]) -> tuple[dict, Counter, dict[str, Counter]]:
    """Blocked signals counted by gate, reason, strategy and UTC day; the breakers among the gates."""
    by_gate = Counter(b["gate"] for b in blocked)
    by_reason = Counter(f"{b['gate']}: {b['reason']}" for b in blocked)
    by_strategy = Counter(b["strategy_name"] for b in blocked)
    by_day: dict[str, Counter] = defaultdict(Counter)
    for b in blocked:
        by_day[b["ts"].astimezone(UTC).date().isoformat()][b["gate"]] += 1
    breakers = sorted({g.split(":", 1)[1] for g in by_gate if g.startswith("breaker:")})
    sc.q.entries.append({"name": "blocked_by_day_gate", "rows": sum(len(v) for v in by_day.values()),
                         "sql": _render("""SELECT (ts AT TIME ZONE 'UTC')::date AS day, gate, count(*) FROM blocked_signals
                                         WHERE run_id = %(run_id)s AND symbol = %(symbol)s{w}
                                         GROUP BY 1, 2 ORDER BY 1, 2""".replace("{w}", sc.win("ts")), sc.p)})
    summary = {"by_gate": dict(by_gate.most_common()), "by_reason": dict(by_reason.most_common()),
               "by_strategy": dict(by_strategy.most_common()),
               "by_day": {d: dict(c.most_common()) for d, c in sorted(by_day.items())},
               "breakers": breakers}
    return summary, by_gate, by_day


def _render(sql: str, params: dict) -> str:
    from .sqlfmt import render_sql

    return render_sql(sql, {k: v for k, v in params.items() if f"%({k})s" in sql})


def _cfg_brief(cfg: dict | None) -> dict | None:
    if cfg is None:
        return None
    return {"watchlist_enabled": cfg.get("watchlist_enabled"), "buy_enabled": cfg.get("buy_enabled"),
            "sell_enabled": cfg.get("sell_enabled"), "params": cfg.get("params"), "valid_from": cfg.get("valid_from")}


def _has_json(end: dict) -> bool:
    """Whether a snapshot's positions JSON carries a per-symbol cumulative realized figure."""
    return any(_entry_realized(e if isinstance(e, dict) else None) is not None
               for e in (end["positions"] if isinstance(end["positions"], list)
                         else list((end["positions"] or {}).values())))


def _last_known_value(rows: list[dict] | None, symbol: str) -> float | None:
    """The symbol's realized figure in the snapshot a snapshot_symbol_realized_last_known query returned."""
    if not rows:
        return None
    return _entry_realized(_snapshot_symbol_entry(rows[0]["positions"], symbol))


def _reconcile(sc: _Scope, g: _Gathered, trades: list[dict]) -> dict:
    """Per-trade realized P&L of ``symbol`` vs the snapshots' realized P&L over the same snapshot interval.

    The snapshot interval is (S0, S1]: S1 = last snapshot at or before ``until`` (latest when None), S0 = last
    snapshot at or before ``since`` (run start, realized 0, when None). A snapshot at S reflects every fill
    strictly before S (the engine snapshots at a bar's close, before the fills at the next bar's open, which
    carry that same timestamp), so the trades counted are the closed positions with S0 <= closed_at < S1. Snapshot P&L for the symbol comes from the snapshot ``positions`` JSON when it carries
    a per-symbol cumulative realized figure (method ``positions_json``); otherwise from the hourly deltas of
    ``realized_pnl_usd`` over the intervals in which the symbol closed trades, minus other symbols' closes in
    the same intervals (method ``snapshot_deltas``). The portfolio-wide total is reconciled too.

    The statements ran in :func:`_gather` (:func:`_snapshot_stmts`, :func:`_reconcile_stmts`).
    """
    symbol = sc.symbol
    end, start = g.snap_end, g.snap_start
    if end is None:
        return {"method": "none", "reconciled": None, "trades_pnl_usd": None, "snapshot_pnl_usd": None,
                "difference_usd": None, "note": "no portfolio_hourly_snapshots rows for this run/window"}
    per_symbol = g.recon["trades_in_snapshot_interval"]
    sym_row = next((r for r in per_symbol if r["symbol"] == symbol), None)
    trades_pnl = fnum(sym_row["realized_pnl_usd"]) if sym_row else 0.0
    counted_ids = [t["position_id"] for t in trades if t["status"] == "closed" and t["closed_at"] is not None
                   and (start is None or t["closed_at"] >= start["ts"]) and t["closed_at"] < end["ts"]]
    after_last = [t["position_id"] for t in trades if t["status"] == "closed" and t["closed_at"] is not None
                  and t["closed_at"] >= end["ts"]]
    all_pnl = sum(fnum(r["realized_pnl_usd"]) for r in per_symbol)
    snap_total = fnum(end["realized_pnl_usd"]) - (fnum(start["realized_pnl_usd"]) if start else 0.0)

    method = "snapshot_deltas"
    snap_sym = None
    e_end = _entry_realized(_snapshot_symbol_entry(end["positions"], symbol))
    if _has_json(end):
        method = "positions_json"
        # the symbol may have dropped out of the JSON when flat: carry its last known value forward
        if e_end is None:
            e_end = _last_known_value(g.recon.get("last_known_end"), symbol)
        e_start = 0.0
        if start is not None:
            e_start = _entry_realized(_snapshot_symbol_entry(start["positions"], symbol))
            if e_start is None:
                e_start = _last_known_value(g.recon.get("last_known_start"), symbol) or 0.0
        snap_sym = (e_end or 0.0) - e_start
    else:
        row = g.recon["deltas"][0] if g.recon.get("deltas") else None
        snap_sym = fnum(row["snapshot_pnl_usd"]) if row else 0.0
    diff = trades_pnl - snap_sym
    total_diff = all_pnl - snap_total
    return {
        "method": method,
        "snapshot_interval": {"start": iso(start["ts"]) if start else None, "end": iso(end["ts"])},
        "trades_counted": counted_ids,
        "trades_pnl_usd": trades_pnl,
        "snapshot_pnl_usd": snap_sym,
        "difference_usd": diff,
        "tolerance_usd": RECONCILE_TOLERANCE_USD,
        "reconciled": abs(diff) <= RECONCILE_TOLERANCE_USD,
        "trades_after_last_snapshot": after_last,
        "total": {"snapshot_realized_usd": snap_total, "all_symbols_trades_usd": all_pnl,
                  "difference_usd": total_diff, "reconciled": abs(total_diff) <= RECONCILE_TOLERANCE_USD},
    }


def _timeline(signals, blocked, orders, fills, positions, targets, evaluations, events) -> list[dict]:
    tl: list[dict] = []
    for s in signals:
        if s["status"] == "accepted":
            tl.append({"ts": s["ts"], "kind": "signal",
                       "text": f"{s['strategy_name']} {s['side']} {s['intent']} {s['position_side']} @ {fnum(s['price']):g}"
                               f" (regime {s['regime'] or 'n/a'})", "ref": f"signal:{s['signal_id']}"})
    # blocked signals aggregated per (UTC day, strategy, gate) so months of replay stay readable
    agg: dict[tuple, list] = defaultdict(list)
    for b in blocked:
        agg[(b["ts"].astimezone(UTC).date(), b["strategy_name"], b["gate"])].append(b)
    for (day, strat, gate), rows in agg.items():
        first = rows[0]
        tl.append({"ts": first["ts"], "kind": "blocked",
                   "text": f"{len(rows)} {strat} signal(s) blocked by {gate} on {day.isoformat()} "
                           f"(first: {first['reason']})", "ref": f"blocked:{first['blocked_id']}"})
    for o in orders:
        extra = f" rejected: {o['reject_reason']}" if o["status"] == "rejected" else ""
        tl.append({"ts": o["submitted_at"], "kind": "order",
                   "text": f"order {o['order_id']} {o['side']} {o['intent']} {fnum(o['qty']):g} ({o['status']}){extra}",
                   "ref": f"order:{o['order_id']}"})
    for f in fills:
        tl.append({"ts": f["ts"], "kind": "fill",
                   "text": f"fill {f['side']} {fnum(f['qty']):g} @ {fnum(f['price']):g} fee {fnum(f['fee_usd']):.4f} USD"
                           f" slippage {f['slippage_bps']:.1f} bps", "ref": f"fill:{f['fill_id']}"})
    for ps in positions:
        tl.append({"ts": ps["opened_at"], "kind": "position_open",
                   "text": f"position {ps['position_id']} {ps['side']} opened by {ps['strategy_name']} "
                           f"@ {fnum(ps['avg_entry_price']):g}", "ref": f"position:{ps['position_id']}"})
        if ps["closed_at"] is not None:
            tl.append({"ts": ps["closed_at"], "kind": "position_close",
                       "text": f"position {ps['position_id']} closed ({ps['close_reason']}) @ "
                               f"{fnum(ps['avg_exit_price'] or 0):g}, realized {fnum(ps['realized_pnl_usd']):+.2f} USD",
                       "ref": f"position:{ps['position_id']}"})
    for t in targets:
        tl.append({"ts": t["ts"], "kind": "target",
                   "text": f"targets of position {t['position_id']} ({t['reason']}): TP {fnum(t['tp_price'])} "
                           f"SL {fnum(t['sl_price'])} trail {fnum(t['trailing_stop'])}", "ref": f"target:{t['target_id']}"})
    for e in evaluations:
        if e["decision"] != "hold":
            tl.append({"ts": e["ts"], "kind": "evaluation",
                       "text": f"position {e['position_id']} evaluation: {e['decision']} ({e['reason'] or ''})",
                       "ref": f"evaluation:{e['evaluation_id']}"})
    for e in events:
        pl = e["payload"] or {}
        name = _breaker_name(pl)
        text = f"{e['component']}/{e['event_type']} [{e['severity']}]"
        if name:
            text += f" {name}"
        cause = pl.get("cause") or pl.get("reason") or pl.get("message")
        if cause:
            text += f": {cause}"
        tl.append({"ts": e["ts"], "kind": "event", "text": text, "ref": f"event:{e['event_id']}"})
    order = {"event": 0, "signal": 1, "blocked": 2, "evaluation": 3, "order": 4, "fill": 5, "position_open": 6,
             "target": 7, "position_close": 8}
    tl.sort(key=lambda r: (r["ts"], order.get(r["kind"], 9), r["ref"]))
    return tl


def _anomalies(feed_rows: list[dict], trades, orders, evaluations, recon) -> list[dict]:
    """Checks a reviewer would otherwise do by hand; each anomaly names what and where. ``feed_rows``: the
    feed_anomalies rows of the window (read in :func:`_gather`)."""
    out: list[dict] = []
    tol = 1e-6
    for t in trades:
        fl = t["fills"]
        open_side = "buy" if t["side"] == "long" else "sell"
        opened = sum(fnum(f["qty"]) for f in fl if f["side"] == open_side)
        closed_q = sum(fnum(f["qty"]) for f in fl if f["side"] != open_side)
        if fl and abs(opened - fnum(t["qty"])) > tol * max(1.0, opened):
            out.append({"kind": "entry_qty_mismatch", "ts": t["opened_at"],
                        "detail": {"position_id": t["position_id"], "entry_qty": t["qty"], "filled_open_qty": opened}})
        if t["status"] == "closed" and fl:
            if abs(closed_q - opened) > tol * max(1.0, opened):
                out.append({"kind": "close_qty_mismatch", "ts": t["closed_at"],
                            "detail": {"position_id": t["position_id"], "opened_qty": opened, "closed_qty": closed_q}})
            else:
                sign = 1.0 if t["side"] == "long" else -1.0
                gross = sign * (sum(fnum(f["qty"]) * fnum(f["price"]) for f in fl if f["side"] != open_side)
                                - sum(fnum(f["qty"]) * fnum(f["price"]) for f in fl if f["side"] == open_side))
                fees = sum(fnum(f["fee_usd"]) for f in fl)
                net = gross - fees
                if abs(net - fnum(t["realized_pnl_usd"])) > max(0.01, 1e-6 * abs(net)):
                    out.append({"kind": "pnl_mismatch_vs_fills", "ts": t["closed_at"],
                                "detail": {"position_id": t["position_id"], "realized_pnl_usd": t["realized_pnl_usd"],
                                           "from_fills_usd": net, "gross_usd": gross, "fees_usd": fees}})
        if t["status"] == "closed" and not fl:
            out.append({"kind": "closed_without_fills", "ts": t["closed_at"], "detail": {"position_id": t["position_id"]}})
        if t["breakers_at_entry"]:
            out.append({"kind": "entry_while_breaker_tripped", "ts": t["opened_at"],
                        "detail": {"position_id": t["position_id"], "breakers": t["breakers_at_entry"]}})
        es = t["entry_signal"]
        if es and t["fills"]:
            first_fill = min(f["ts"] for f in t["fills"])
            if first_fill < es["ts"]:  # fills at the next bar's open (== the signal bar's close) are fine
                out.append({"kind": "fill_before_signal", "ts": first_fill,
                            "detail": {"position_id": t["position_id"], "signal_ts": es["ts"], "fill_ts": first_fill}})
        if t["status"] == "open" and t["evaluations"] == 0:
            out.append({"kind": "open_position_never_evaluated", "ts": t["opened_at"],
                        "detail": {"position_id": t["position_id"]}})
    for o in orders:
        if o["status"] == "rejected":
            out.append({"kind": "order_rejected", "ts": o["submitted_at"],
                        "detail": {"order_id": o["order_id"], "reason": o["reject_reason"], "intent": o["intent"]}})
    for e in evaluations:
        if e["decision"] == "exit_blocked":
            out.append({"kind": "exit_blocked", "ts": e["ts"],
                        "detail": {"position_id": e["position_id"], "reason": e["reason"]}})
    if recon.get("reconciled") is False:
        out.append({"kind": "pnl_not_reconciled", "ts": None,
                    "detail": {k: recon.get(k) for k in ("method", "trades_pnl_usd", "snapshot_pnl_usd", "difference_usd")}})
    if recon.get("total", {}).get("reconciled") is False:
        out.append({"kind": "portfolio_pnl_not_reconciled", "ts": None, "detail": recon["total"]})
    # market-data anomalies for the symbol (feed_anomalies, migration 0002) in the window
    for r in feed_rows:
        out.append({"kind": f"feed_{r.get('kind', 'anomaly')}", "ts": r.get("open_time"),
                    "detail": {k: v for k, v in r.items() if k not in ("symbol",)}})
    out.sort(key=lambda a: (a["ts"] is None, a["ts"] or datetime.min.replace(tzinfo=UTC)))
    return out


def _open_questions(symbol, trades, blocked, by_gate, by_day, recon, anomalies, positions) -> list[str]:
    qs: list[str] = []
    closed = [t for t in trades if t["status"] == "closed"]
    if closed:
        worst = min(closed, key=lambda t: fnum(t["realized_pnl_usd"]))
        if fnum(worst["realized_pnl_usd"]) < 0:
            qs.append(f"Position {worst['position_id']} ({worst['strategy_name']}) lost "
                      f"{fnum(worst['realized_pnl_usd']):.2f} USD, exit '{worst['close_reason']}': was the entry "
                      f"signal sound, and was the stop where the configuration said?")
    sl = [t for t in closed if t["close_reason"] == "sl"]
    if len(closed) >= 4 and len(sl) / len(closed) >= 0.5:
        qs.append(f"{len(sl)} of {len(closed)} closed trades hit the stop loss: is sl_pct too tight for "
                  f"{symbol}'s volatility?")
    for gate, n in by_gate.items():
        if gate.startswith("breaker:"):
            days = sorted(d for d, c in by_day.items() if gate in c)
            qs.append(f"{n} signal(s) blocked by {gate} ({', '.join(days[:5])}{' ...' if len(days) > 5 else ''}): "
                      f"would they have won or lost? Compare the blocked entries' next 24 h.")
    if by_gate.get("cooldown", 0) > 10:
        qs.append(f"{by_gate['cooldown']} signals blocked by cooldown: is the cooldown longer than the signal's edge?")
    if recon.get("reconciled") is False:
        qs.append(f"Trade P&L and snapshot P&L differ by {recon['difference_usd']:.4f} USD ({recon['method']}): which "
                  f"fill, fee or close is missing from one side?")
    if recon.get("trades_after_last_snapshot"):
        qs.append(f"Positions {recon['trades_after_last_snapshot']} closed after the last snapshot: not yet in "
                  f"snapshot P&L.")
    kinds = Counter(a["kind"] for a in anomalies)
    for k, n in kinds.items():
        if k not in ("pnl_not_reconciled",):
            qs.append(f"{n} anomaly(ies) of kind '{k}': see the Anomalies section.")
    still_open = [x for x in positions if x["status"] == "open"]
    if still_open:
        qs.append(f"{len(still_open)} position(s) still open at the end of the window: will they hit TP, SL or max hold?")
    if not trades and not blocked:
        qs.append(f"No trades and no blocked signals for {symbol} in this window: did any strategy evaluate it?")
    return qs


# ---------------------------------------------------------------------------------------------------------
# blocked_signals

def blocked_signals(conn: psycopg.Connection, since: Any, strategy: str | None = None, until: Any = None,
                    limit: int = 1000, *, symbol: str | None = None, run_id: str | None = None) -> dict:
    """Blocked signals since ``since`` (ISO string / datetime, UTC, engine clock) up to ``until`` (inclusive;
    None = no upper bound), optionally for one ``strategy`` / ``symbol`` / ``run_id`` (all runs when None).

    Returns ``{since, until, strategy, symbol, run_id, total, truncated, rows: [...newest first, at most
    limit], by_gate: {gate: n}, by_reason: {"gate: reason": n}, by_strategy: {...}, by_symbol: {...},
    by_day: {YYYY-MM-DD: {gate: n}}, queries}``. Counts cover every matching row, not only the ``limit``
    returned. Raises AtsError on an unparsable time or a non-positive limit.
    """
    _conn_ok(conn)
    since_dt = _ts(since, "since")
    if since_dt is None:
        raise AtsError("blocked_signals: 'since' is required (ISO-8601 UTC)")
    until_dt = _ts(until, "until")
    if int(limit) <= 0:
        raise AtsError(f"blocked_signals: limit must be positive, got {limit}")
    q = QueryLog(conn)
    conds = ["ts >= %(since)s"]
    p: dict[str, Any] = {"since": since_dt, "limit": int(limit)}
    if until_dt is not None:
        conds.append("ts <= %(until)s")
        p["until"] = until_dt
    for col, val in (("strategy_name", strategy), ("symbol", symbol.upper() if symbol else None), ("run_id", run_id)):
        if val:
            conds.append(f"{col} = %({col})s")
            p[col] = val
    where = " AND ".join(conds)
    rows = q.all("blocked_rows", f"""
        SELECT blocked_id, signal_id, run_id, account_id, strategy_name, symbol, ts, gate, reason, context
          FROM blocked_signals WHERE {where} ORDER BY ts DESC, blocked_id DESC LIMIT %(limit)s""", p)
    counts = q.all("blocked_counts", f"""
        SELECT gate, reason, strategy_name, symbol, (ts AT TIME ZONE 'UTC')::date AS day, count(*) AS n
          FROM blocked_signals WHERE {where} GROUP BY 1, 2, 3, 4, 5""", p)
    by_gate, by_reason, by_strategy, by_symbol = Counter(), Counter(), Counter(), Counter()
    by_day: dict[str, Counter] = defaultdict(Counter)
    for c in counts:
        n = int(c["n"])
        by_gate[c["gate"]] += n
        by_reason[f"{c['gate']}: {c['reason']}"] += n
        by_strategy[c["strategy_name"]] += n
        by_symbol[c["symbol"]] += n
        by_day[c["day"].isoformat()][c["gate"]] += n
    total = sum(by_gate.values())
    return jsonable({
        "since": since_dt, "until": until_dt, "strategy": strategy, "symbol": p.get("symbol"), "run_id": run_id,
        "total": total, "truncated": total > len(rows), "rows": rows,
        "by_gate": dict(by_gate.most_common()), "by_reason": dict(by_reason.most_common()),
        "by_strategy": dict(by_strategy.most_common()), "by_symbol": dict(by_symbol.most_common()),
        "by_day": {d: dict(c.most_common()) for d, c in sorted(by_day.items())}, "queries": q.entries,
    })


# ---------------------------------------------------------------------------------------------------------
# health_summary

# A feed is stale when its newest candle is older than this many candle lengths before the reference time.
STALE_BARS = 3


def health_summary(conn: psycopg.Connection, run_id: str | None = None) -> dict:
    """System health at a glance, for one engine run (``run_id=None``: the latest run, replay/live first).

    Returns ``{run, reference_time, last_runs: [...10 newest], last_successful: {mode: run},
    breakers: {states: [...], tripped: [...], trips: n, resets: n, trips_by_breaker: {...}},
    feed_freshness: [{symbol, timeframe, last_open_time, age_minutes, stale}], stale_feeds: ["SYMBOL tf"],
    coverage: {available, rows|error},
    errors: {total, by_component: {...}, by_type: {...}, recent: [...20]}, warnings: n, anomalies: {...},
    snapshot: {latest snapshot row}, queries}``.

    ``reference_time`` is the run's last processed bar for replays/backtests (engine clock) and wall-clock now
    for live runs or when there is no run. Feed freshness: a (symbol, timeframe) is stale when its newest
    candle opened more than ``STALE_BARS`` candle lengths before the reference time.
    """
    _conn_ok(conn)
    from ..timeutil import TIMEFRAME_SECONDS

    q = QueryLog(conn)
    run = resolve_run(conn, run_id)
    if run is not None and run["mode"] != "live" and run.get("last_bar_time"):
        ref = run["last_bar_time"]
    else:
        ref = utcnow()
    p: dict[str, Any] = {"run_id": run["run_id"] if run else None, "ref": ref,
                         "account_id": run["account_id"] if run else "default"}
    last_runs = q.all("last_runs", """
        SELECT run_id, account_id, mode, status, started_at, finished_at, last_bar_time, bars_processed
          FROM engine_runs ORDER BY started_at DESC LIMIT 10""", p)
    last_ok = q.all("last_successful_runs", """
        SELECT DISTINCT ON (mode) mode, run_id, finished_at, last_bar_time, bars_processed
          FROM engine_runs WHERE status = 'completed' ORDER BY mode, finished_at DESC NULLS LAST""", p)
    states = q.all("breaker_states", """
        SELECT breaker, scope, state, since, reason, context FROM breaker_states
         WHERE run_id = %(run_id)s ORDER BY breaker, scope""", p) if run else []
    trips = q.all("breaker_event_counts", """
        SELECT event_type, coalesce(payload->>'breaker', payload->>'name') AS breaker, count(*) AS n
          FROM system_events WHERE event_type IN ('breaker_tripped', 'breaker_reset')
           AND (payload->>'run_id' IS NULL OR payload->>'run_id' = %(run_id)s)
           AND (account_id IS NULL OR account_id = %(account_id)s)
         GROUP BY 1, 2 ORDER BY 2, 1""", p)
    trips_by = Counter()
    n_trips = n_resets = 0
    for r in trips:
        if r["event_type"] == "breaker_tripped":
            trips_by[r["breaker"] or "?"] += int(r["n"])
            n_trips += int(r["n"])
        else:
            n_resets += int(r["n"])
    # a loose index scan over the candles primary key (symbol, timeframe, open_time, source): one index probe per
    # series instead of a full-table GROUP BY, so it stays fast (and under the read-only role's timeout)
    fresh = q.all("feed_freshness", """
        WITH RECURSIVE k AS (
            (SELECT symbol, timeframe FROM candles ORDER BY symbol, timeframe LIMIT 1)
            UNION ALL
            SELECT n.symbol, n.timeframe FROM k, LATERAL (
                SELECT c.symbol, c.timeframe FROM candles c WHERE (c.symbol, c.timeframe) > (k.symbol, k.timeframe)
                 ORDER BY c.symbol, c.timeframe LIMIT 1) n)
        SELECT k.symbol, k.timeframe,
               (SELECT max(c.open_time) FROM candles c WHERE c.symbol = k.symbol AND c.timeframe = k.timeframe)
                   AS last_open_time
          FROM k ORDER BY k.symbol, k.timeframe""", p)
    feed = []
    for r in fresh:
        tf_s = TIMEFRAME_SECONDS.get(r["timeframe"], 3600)
        # a candle is complete when its close (open + tf) is <= reference; stale when newer ones are missing
        age = (ref - r["last_open_time"]).total_seconds() - tf_s
        feed.append({"symbol": r["symbol"], "timeframe": r["timeframe"], "last_open_time": r["last_open_time"],
                     "age_minutes": round(age / 60.0, 1),
                     "stale": age > STALE_BARS * tf_s})
    cov: dict[str, Any]
    try:
        from ..market_data.coverage import coverage as _coverage  # owned by the market-data helper
    except ImportError:
        cov = {"available": False, "error": "ats.market_data.coverage is not installed"}
    else:
        try:
            with conn.transaction():
                rows = _coverage(conn, as_of=ref)
            cov = {"available": True, "rows": rows}
        except Exception as exc:  # noqa: BLE001 - a coverage failure is itself a health finding
            cov = {"available": True, "error": f"{type(exc).__name__}: {exc}"}
    ev_window = "AND ts >= %(ref)s - interval '24 hours' AND ts <= %(ref)s" if run else ""
    err_rows = q.all("error_counts", f"""
        SELECT component, event_type, severity, count(*) AS n FROM system_events
         WHERE severity IN ('warning', 'error', 'critical') {ev_window}
           AND (account_id IS NULL OR account_id = %(account_id)s)
         GROUP BY 1, 2, 3 ORDER BY n DESC""", p)
    by_comp, by_type = Counter(), Counter()
    n_err = n_warn = 0
    for r in err_rows:
        if r["severity"] == "warning":
            n_warn += int(r["n"])
            continue
        n_err += int(r["n"])
        by_comp[r["component"]] += int(r["n"])
        by_type[r["event_type"]] += int(r["n"])
    recent = q.all("recent_errors", f"""
        SELECT event_id, ts, component, event_type, severity, symbol, payload FROM system_events
         WHERE severity IN ('error', 'critical') AND (account_id IS NULL OR account_id = %(account_id)s)
         ORDER BY ts DESC, event_id DESC LIMIT 20""", p)
    anomalies: dict[str, Any] = {"available": False}
    if table_exists(conn, "feed_anomalies"):
        try:
            with conn.transaction():
                rows = q.all("feed_anomalies_24h", """
                    SELECT kind, count(*) AS n FROM feed_anomalies
                     WHERE open_time >= %(ref)s - interval '24 hours' AND open_time <= %(ref)s
                     GROUP BY kind ORDER BY kind""", p)
            anomalies = {"available": True, "last_24h_by_kind": {r["kind"]: int(r["n"]) for r in rows}}
        except psycopg.Error as exc:
            anomalies = {"available": True, "error": str(exc).splitlines()[0]}
    snap = q.one("latest_snapshot", """
        SELECT ts, cash_usd, positions_value_usd, equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd,
               open_positions FROM portfolio_hourly_snapshots WHERE run_id = %(run_id)s
         ORDER BY ts DESC LIMIT 1""", p) if run else None
    return jsonable({
        "run": run, "reference_time": ref, "last_runs": last_runs,
        "last_successful": {r["mode"]: r for r in last_ok},
        "breakers": {"states": states, "tripped": [s for s in states if s["state"] == "tripped"],
                     "trips": n_trips, "resets": n_resets, "trips_by_breaker": dict(trips_by.most_common())},
        "feed_freshness": feed, "stale_feeds": [f"{f['symbol']} {f['timeframe']}" for f in feed if f["stale"]],
        "coverage": cov,
        "errors": {"total": n_err, "by_component": dict(by_comp), "by_type": dict(by_type), "recent": recent,
                   "window": "24h before reference_time" if run else "all time"},
        "warnings": n_warn, "anomalies": anomalies, "snapshot": snap, "queries": q.entries,
    })
