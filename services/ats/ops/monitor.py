"""Live monitor, the checks: one poll of an account's live session -> one JSON line of facts and deviations.

A poll reads the database in ONE read-only, repeatable-read transaction (a consistent snapshot: the live loop
commits each bar's rows and its checkpoint together) and runs eight checks; each returns what it expected, what
it observed and its deviations ``{check, kind, severity, id, message, evidence: [rows]}`` (``id`` is stable
across polls, so a report can say when a deviation was first and last seen). Severities are those of
``system_events``: info < warning < error < critical.

=================  ==========================================================================================
check              expected (source tables)
=================  ==========================================================================================
``loop``           a ``live_sessions`` row whose pid is alive on this host unless STOPPED; a STOPPED loop stopped
                   because ``--until`` / ``--max-bars`` was reached; its ``engine_runs`` row not failed
``breakers``       no breaker tripped (``breaker_states`` of the run; transitions = ``system_events``
                   breaker_tripped / breaker_reset since the last poll); the trading state of ``live_sessions``.
                   A trip is the system protecting itself: warning account-wide, info for one symbol
``positions``      every open position (``positions``): each opening / adding order (``order_executions``)
                   <= ``trade_amount_usd`` x (1 + SIZE_TOLERANCE), adds <= ``max_adds``, TP and SL present when
                   ``tp_pct`` / ``sl_pct`` > 0 in ``positions.context``, the latest ``position_targets`` row and
                   the run's checkpoint, held <= ``max_hold_hours`` + one bar (on the loop's last bar); the
                   database's open positions = the checkpoint's
``feed``           per symbol of the run, the next candle of the venue's source is overdue by no more than
                   STALE_FRAC of a bar (venue clock; not judged while the loop is STARTING or STOPPED);
                   ``feed_anomaly`` events
``latency``        decision (``signals.ts``) -> order submitted and -> first fill (``fills.ts``) within
                   LATE_FRAC of a bar; no order still ``submitted`` two bars after it was sent
``reconciliation`` the latest ``reconciliation_mismatch`` / ``reconciliation_ok`` event of the run is not a
                   mismatch (a paper broker has nothing at a venue: not applicable)
``errors``         no ``system_events`` of severity error / critical since the last poll
``strategies``     per strategy of the run, what it did since the last poll (signals, blocks by gate, entries,
                   exits) within its gates as of each decision (``strategy_configurations_history``): no entry
                   with the buy gate off or while a breaker covering the symbol was tripped, no signal with the
                   watchlist gate off, no exit with the sell gate off, no buy_gate block with the gate on
=================  ==========================================================================================

"Since the last poll" is a cursor of ids (``system_events.event_id``, ``signals.signal_id``,
``order_executions.order_id``, ``fills.fill_id``, ``blocked_signals.blocked_id``) carried from one line to the
next; a first poll starts at the run's start. Rows committed out of id order by another writer between two
polls can be missed by the cursor (the live loop itself commits in order).

Times: ``ts`` columns are the engine / venue clock (simulated time in a rehearsal), ``recorded_at`` and the
line's ``ts`` the wall clock, all UTC. Money in USD, latencies in seconds.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import psycopg

from ..errors import AtsError
from ..forensics.health import SIZE_TOLERANCE
from ..forensics.queries import breaker_windows
from ..jsonutil import jsonable
from ..procutil import pid_alive
from ..timeutil import TIMEFRAME_SECONDS

SEVERITIES = ("info", "warning", "error", "critical")
CHECKS = ("loop", "breakers", "positions", "feed", "latency", "reconciliation", "errors", "strategies")
CURSOR_KEYS = ("event_id", "signal_id", "order_id", "fill_id", "blocked_id")
LIVE_MODES = ("live", "paper-live")
STALE_FRAC = 0.5       # the next candle is overdue by more than this fraction of a bar: the feed is stale
LATE_FRAC = 0.25       # decision -> order / fill later than this fraction of a bar (the loop's late_frac)
STUCK_BARS = 2         # an order still 'submitted' this many bars after it was sent
ROW_LIMIT = 500        # rows per table and poll (the newest are kept when more arrived)
#: the loop's own words for a normal stop (ats.live.loop.LiveLoop.run)
NORMAL_STOPS = ("until reached", "max bars reached")


@dataclass
class Deviation:
    """One thing the monitor saw that the configuration or the loop's contract does not allow.

    ``id`` = ``<check>:<kind>:<subject>``, the same in every poll that sees the same thing; ``evidence`` = the
    database rows behind it (JSON-safe), each naming its table in ``_table``.
    """

    check: str
    kind: str
    severity: str
    subject: str
    message: str
    evidence: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """``{check, kind, severity, id, message, evidence}`` (evidence JSON-safe)."""
        return {"check": self.check, "kind": self.kind, "severity": self.severity,
                "id": f"{self.check}:{self.kind}:{self.subject}", "message": self.message,
                "evidence": jsonable(self.evidence)}


@dataclass
class CheckResult:
    """What one check expected (one sentence), observed (JSON-able dict) and found wrong."""

    expected: str
    observed: dict
    deviations: list = field(default_factory=list)


@dataclass
class _Poll:
    """The state one poll's checks share (one snapshot)."""

    conn: psycopg.Connection
    account: str
    cursor: dict
    wall: datetime
    session: dict | None = None
    run: dict | None = None
    tf: str = "1h"
    tf_s: int = 3600
    symbols: tuple = ()
    strategies: tuple = ()
    ref: datetime | None = None            # the loop's last decided bar close (engine clock)
    venue_now: datetime | None = None
    clock_source: str = "wall"
    orders: list = field(default_factory=list)  # orders of the run since the cursor (latency + strategies)
    new_cursor: dict = field(default_factory=dict)
    _cfg: dict = field(default_factory=dict)

    def all(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        return self.conn.execute(sql, params).fetchone()

    def config(self, strategy: str, at: datetime) -> dict | None:
        """The configuration of ``strategy`` in force at ``at`` as the run knew it, params overlaid on the
        strategy's defaults as the engine does (``ats.engine.config.GateCache``); None when not configured."""
        key = (strategy, at)
        if key not in self._cfg:
            from ..db import config_store as cs

            known = cs.known_at_for(self.run["started_at"], at) if self.run else None
            row = cs.strategy_as_of(self.conn, strategy, at, account_id=self.account, as_known_at=known)
            if row is not None:
                row = dict(row)
                row["params"] = _strategy_params(strategy, row.get("params"))
            self._cfg[key] = row
        return self._cfg[key]


def _strategy_params(strategy: str, stored: dict | None) -> dict:
    from ..strategies import get_strategy

    try:
        return get_strategy(strategy).params(stored)
    except AtsError:  # a strategy this checkout does not know: judge on what is stored
        return dict(stored or {})


# ---------------------------------------------------------------------------------------------------- entry

def poll(conn: psycopg.Connection, account: str, *, cursor: dict | None = None,
         venue_clock: Callable[[dict], int | None] | None = None) -> dict:
    """Run every check once for ``account`` and return the monitor line.

    Parameters
    ----------
    conn : psycopg.Connection
        An **autocommit** connection (dict rows); the poll opens its own read-only repeatable-read transaction.
    account : str
        The account whose live session is watched (``live_sessions.account_id``).
    cursor : dict, optional
        The previous line's ``cursor`` (``run_id`` and the ids of :data:`CURSOR_KEYS`): "since the last poll".
        None, or a cursor of another run: since the run's start.
    venue_clock : callable, optional
        ``f(session_row) -> UTC ms or None``; default :func:`venue_now_ms` (the venue's public server time,
        Bybit; None elsewhere, then the wall clock is used).

    Returns
    -------
    dict
        ``{ts (wall, ISO UTC), account, run_id, mode, broker, clock: {wall, venue, source, last_bar},
        cursor, checks: {name: {expected, observed, deviations: n}}, deviations: [Deviation.as_dict()] (most
        severe first), counts: {severity: n}, duration_ms}``. The ``latency`` check loads the orders since the
        cursor that ``strategies`` judges, so the checks run in :data:`CHECKS` order.

    Raises
    ------
    AtsError
        ``conn`` is not in autocommit mode (the snapshot must be the poll's own transaction).
    """
    if not conn.autocommit:
        raise AtsError("monitor poll: pass an autocommit connection (the poll opens its own read-only snapshot)")
    t0 = time.perf_counter()
    p = _Poll(conn=conn, account=account, cursor=dict(cursor or {}), wall=datetime.now(timezone.utc))
    results: dict[str, CheckResult] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _load_session(p, venue_clock or venue_now_ms)
        for name in CHECKS:
            results[name] = _run_check(p, name)
        _advance_cursor(p)
    devs = [d.as_dict() for r in results.values() for d in r.deviations]
    devs.sort(key=lambda d: (-SEVERITIES.index(d["severity"]), d["id"]))
    counts = {s: sum(d["severity"] == s for d in devs) for s in SEVERITIES}
    return jsonable({
        "ts": p.wall, "account": account, "run_id": p.run["run_id"] if p.run else None,
        "mode": p.run["mode"] if p.run else None, "broker": p.session["broker"] if p.session else None,
        "clock": {"wall": p.wall, "venue": p.venue_now, "source": p.clock_source, "last_bar": p.ref},
        "cursor": p.new_cursor,
        "checks": {n: {"expected": r.expected, "observed": r.observed, "deviations": len(r.deviations)}
                   for n, r in results.items()},
        "deviations": devs, "counts": counts, "duration_ms": _elapsed_ms(t0)})


def _run_check(p: _Poll, name: str) -> CheckResult:
    """One check inside a savepoint: a failing query becomes an error deviation of that check, never a lost poll."""
    fn = _CHECK_FUNCS[name]
    try:
        with p.conn.transaction():
            return fn(p)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CheckResult("the check runs", {"failed": first},
                           [Deviation(name, "check_failed", "error", name, f"check {name} failed: {first}")])


def venue_now_ms(session: dict) -> int | None:
    """The venue's clock for a session row: Bybit's public ``/v5/market/time`` at ``session['endpoint']`` (paper and
    bybit brokers; 2 s timeout, no retry); None for other brokers or when the venue does not answer."""
    if not session or session.get("broker") not in ("paper", "bybit") or not session.get("endpoint"):
        return None
    try:
        from pybit.unified_trading import HTTP

        http = HTTP(timeout=2, force_retry=False, max_retries=1)
        http.endpoint = session["endpoint"].rstrip("/")  # pybit builds each URL from .endpoint at call time
        r = http.get_server_time()
        return int(r["result"]["timeNano"]) // 1_000_000
    except Exception:  # noqa: BLE001 - any failure means "no venue clock": the wall clock is used and said so
        return None


def _load_session(p: _Poll, venue_clock) -> None:
    p.session = p.one(
        """SELECT account_id, run_id, broker, endpoint, pid, host, state, reason, last_bar_time, started_at,
                  updated_at FROM live_sessions WHERE account_id = %s""", (p.account,))
    if p.session is not None:
        p.run = p.one(_RUN_SQL + " WHERE run_id = %s", (p.session["run_id"],))
    else:
        p.run = p.one(_RUN_SQL + " WHERE account_id = %s AND mode IN ('live', 'paper-live') "
                                 "ORDER BY started_at DESC LIMIT 1", (p.account,))
    if p.run is not None:
        prm = p.run["params"] or {}
        p.tf = prm.get("timeframe") or "1h"
        p.tf_s = TIMEFRAME_SECONDS.get(p.tf, 3600)
        p.symbols = tuple(prm.get("symbols") or ())
        p.strategies = tuple(prm.get("strategies") or ())
        p.ref = (p.session or {}).get("last_bar_time") or p.run["last_bar_time"]
    ms = venue_clock(p.session) if p.session else None
    if ms is not None:
        p.venue_now, p.clock_source = datetime.fromtimestamp(ms / 1000, tz=timezone.utc), "venue"
    else:
        p.venue_now = p.wall
    if p.run is not None and p.cursor.get("run_id") != p.run["run_id"]:
        p.cursor = {}  # a new run: "since the last poll" starts at its start


_RUN_SQL = """SELECT run_id, account_id, mode, status, params, started_at, finished_at, last_bar_time, bars_processed,
                     checkpoint->'portfolio'->'positions' AS ckpt_positions
                FROM engine_runs"""


def _advance_cursor(p: _Poll) -> None:
    rid = p.run["run_id"] if p.run else None
    row = p.one(
        """SELECT (SELECT coalesce(max(event_id), 0) FROM system_events) AS event_id,
                  (SELECT coalesce(max(signal_id), 0) FROM signals WHERE run_id = %(r)s) AS signal_id,
                  (SELECT coalesce(max(order_id), 0) FROM order_executions WHERE run_id = %(r)s) AS order_id,
                  (SELECT coalesce(max(fill_id), 0) FROM fills WHERE run_id = %(r)s) AS fill_id,
                  (SELECT coalesce(max(blocked_id), 0) FROM blocked_signals WHERE run_id = %(r)s) AS blocked_id""",
        {"r": rid})
    p.new_cursor = {"run_id": rid, **{k: max(int(row[k]), int(p.cursor.get(k) or 0)) for k in CURSOR_KEYS}}


def _since(p: _Poll, key: str) -> int:
    return int(p.cursor.get(key) or 0)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(timezone.utc).isoformat() if ts else None


# ---------------------------------------------------------------------------------------------------- loop

def _check_loop(p: _Poll) -> CheckResult:
    exp = ("a live_sessions row; its pid alive on this host unless STOPPED; a STOPPED loop stopped at --until / "
           "--max-bars; its engine run not failed")
    s, run = p.session, p.run
    if s is None:
        d = Deviation("loop", "no_session", "warning", p.account,
                      f"no live_sessions row for account {p.account}: no live loop has run"
                      + (f" (latest live run {run['run_id']})" if run else ""),
                      [_row("engine_runs", _run_brief(run))] if run else [])
        return CheckResult(exp, {"session": None, "run": _run_brief(run)}, [d])
    alive = pid_alive(s["pid"]) if s["host"] == socket.gethostname() else None
    obs = {"pid": s["pid"], "host": s["host"], "alive": alive, "state": s["state"], "reason": s["reason"],
           "last_bar": s["last_bar_time"], "updated_at": s["updated_at"], "run": _run_brief(run)}
    devs = []
    ev = [_row("live_sessions", s)] + ([_row("engine_runs", _run_brief(run))] if run else [])
    if alive is False and s["state"] != "STOPPED":
        devs.append(Deviation("loop", "loop_dead", "critical", f"pid{s['pid']}",
                              f"live loop pid {s['pid']} is gone but live_sessions says {s['state']} (killed? "
                              "positions are unattended)", ev))
    if s["state"] == "STOPPED" and (s["reason"] or "") not in NORMAL_STOPS:
        devs.append(Deviation("loop", "loop_stopped_abnormally", "error", s["run_id"],
                              f"live loop stopped: {s['reason'] or 'no reason recorded'}", ev))
    if run is not None and run["status"] in ("failed", "interrupted"):
        devs.append(Deviation("loop", "run_" + run["status"], "error", run["run_id"],
                              f"engine run {run['run_id']} is {run['status']}", ev))
    if s["state"] != "STOPPED" and s["updated_at"] is not None:
        silent = (p.wall - s["updated_at"]).total_seconds()
        obs["silent_s"] = round(silent, 1)
        if silent > 2 * p.tf_s + 60:
            devs.append(Deviation("loop", "loop_stalled", "warning", s["run_id"],
                                  f"live_sessions not updated for {silent:.0f} s (> 2 bars of {p.tf} + 60 s)", ev))
    return CheckResult(exp, obs, devs)


def _run_brief(run: dict | None) -> dict | None:
    if run is None:
        return None
    return {k: run[k] for k in ("run_id", "mode", "status", "started_at", "finished_at", "last_bar_time",
                                "bars_processed")}


def _row(table: str, row: dict | None) -> dict:
    return {"_table": table, **(row or {})}


# ---------------------------------------------------------------------------------------------------- breakers

def _check_breakers(p: _Poll) -> CheckResult:
    exp = "no breaker tripped (breaker_states of the run); trading state ACTIVE"
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    states = p.all("""SELECT breaker, scope, state, since, reason, context FROM breaker_states
                       WHERE run_id = %s ORDER BY breaker, scope""", (p.run["run_id"],))
    moves = p.all("""SELECT event_id, ts, event_type, severity, symbol, payload FROM system_events
                      WHERE event_type IN ('breaker_tripped', 'breaker_reset', 'trading_state')
                        AND payload->>'run_id' = %s AND event_id > %s ORDER BY event_id DESC LIMIT %s""",
                  (p.run["run_id"], _since(p, "event_id"), ROW_LIMIT))
    tripped = [s for s in states if s["state"] == "tripped"]
    devs = []
    for s in tripped:
        glob = s["scope"] == "*"
        devs.append(Deviation("breakers", "tripped", "warning" if glob else "info", f"{s['breaker']}:{s['scope']}",
                              f"breaker {s['breaker']} tripped ({'account-wide' if glob else s['scope']}) since "
                              f"{_iso(s['since'])}: {s['reason']}; new entries "
                              f"{'halted' if glob else 'halted for ' + s['scope']}",
                              [_row("breaker_states", s)]))
    obs = {"trading_state": (p.session or {}).get("state"), "tripped": [f"{s['breaker']}:{s['scope']}" for s in tripped],
           "states": len(states),
           "transitions": [{"event_id": e["event_id"], "ts": e["ts"], "event_type": e["event_type"],
                            "breaker": (e["payload"] or {}).get("breaker"), "scope": (e["payload"] or {}).get("scope"),
                            "new": (e["payload"] or {}).get("new")} for e in reversed(moves)]}
    return CheckResult(exp, obs, devs)


# ---------------------------------------------------------------------------------------------------- positions

_POSITIONS_SQL = """
SELECT p.position_id, p.strategy_name, p.symbol, p.side, p.status, p.qty, p.entry_qty, p.avg_entry_price, p.opened_at,
       p.context->'tp_price' AS tp_price, p.context->'sl_price' AS sl_price,
       p.context->'trailing_stop' AS trailing_stop, s.ts AS signal_ts,
       (SELECT row_to_json(t) FROM (SELECT target_id, ts, tp_price, sl_price, trailing_stop, reason
                                      FROM position_targets t WHERE t.position_id = p.position_id
                                     ORDER BY t.ts DESC, t.target_id DESC LIMIT 1) t) AS last_target,
       (SELECT coalesce(json_agg(json_build_object('order_id', o.order_id, 'client_order_id', o.client_order_id,
                                                   'intent', o.intent, 'status', o.status, 'submitted_at', o.submitted_at,
                                                   'notional_usd', coalesce(o.notional_usd, o.qty * o.decision_price))
                                 ORDER BY o.submitted_at, o.order_id), '[]'::json)
          FROM order_executions o WHERE o.position_id = p.position_id AND o.intent IN ('open', 'add')
           AND o.status <> 'rejected') AS entry_orders
  FROM positions p LEFT JOIN signals s ON s.signal_id = p.entry_signal_id
 WHERE p.run_id = %s AND p.status = 'open'
 ORDER BY p.opened_at, p.position_id"""


def _check_positions(p: _Poll) -> CheckResult:
    exp = (f"each open position: entry orders <= trade_amount_usd (+{SIZE_TOLERANCE:.0%}), adds <= max_adds, TP and "
           "SL set when tp_pct / sl_pct > 0 (positions.context, latest position_targets and checkpoint), held <= "
           "max_hold_hours + 1 bar; open positions in the database = the checkpoint's")
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    rows = p.all(_POSITIONS_SQL, (p.run["run_id"],))
    ckpt = {int(c["position_id"]): c for c in (p.run["ckpt_positions"] or [])}
    devs: list[Deviation] = []
    seen = []
    for pos in rows:
        seen.append(_position_observed(p, pos))
        devs += _position_deviations(p, pos, ckpt.get(int(pos["position_id"])), p.run["ckpt_positions"] is not None)
    db_ids = {int(r["position_id"]) for r in rows}
    for pid, c in ckpt.items():
        if pid not in db_ids:
            devs.append(Deviation("positions", "state_mismatch", "error", f"position{pid}",
                                  f"the checkpoint holds position {pid} ({c.get('strategy')} {c.get('symbol')}) that "
                                  "the positions table does not show open",
                                  [_row("engine_runs.checkpoint", _ckpt_brief(c))]))
    return CheckResult(exp, {"open": len(rows), "positions": seen, "checkpoint_positions": len(ckpt)}, devs)


def _position_observed(p: _Poll, pos: dict) -> dict:
    held = (p.ref - pos["opened_at"]).total_seconds() / 3600 if p.ref else None
    return {"position_id": pos["position_id"], "strategy": pos["strategy_name"], "symbol": pos["symbol"],
            "side": pos["side"], "qty": pos["qty"],
            "notional_usd": round(float(pos["entry_qty"]) * float(pos["avg_entry_price"]), 2),
            "tp_price": pos["tp_price"], "sl_price": pos["sl_price"],
            "held_hours": round(held, 2) if held is not None else None}


def _position_deviations(p: _Poll, pos: dict, ck: dict | None, have_ckpt: bool) -> list[Deviation]:
    pid, name = int(pos["position_id"]), pos["strategy_name"]
    label = f"open {pos['side']} position {pid} ({name} {pos['symbol']})"
    entry_t = pos["signal_ts"] or pos["opened_at"]
    cfg = p.config(name, entry_t)
    params = (cfg or {}).get("params") or {}
    brief = {k: pos[k] for k in ("position_id", "strategy_name", "symbol", "side", "status", "qty", "entry_qty",
                                 "avg_entry_price", "opened_at", "tp_price", "sl_price", "trailing_stop")}
    cfg_row = _row("strategy_configurations_history", {
        "strategy_name": name, "valid_from": (cfg or {}).get("valid_from"),
        **{k: params.get(k) for k in ("trade_amount_usd", "max_adds", "tp_pct", "sl_pct", "max_hold_hours")}})
    ev = [_row("positions", brief), _row("position_targets", pos["last_target"]),
          _row("engine_runs.checkpoint", _ckpt_brief(ck) if ck else {"position": "absent"}), cfg_row]
    devs = []
    if have_ckpt and ck is None:
        devs.append(Deviation("positions", "state_mismatch", "error", f"position{pid}",
                              f"{label} is not in the run's checkpoint (the engine does not know it)", ev))
    for target, sev in (("sl", "critical"), ("tp", "error")):
        pct = _num(params.get(f"{target}_pct"))
        if pct is None or pct <= 0:
            continue
        sources = {"positions.context": pos[f"{target}_price"],
                   "position_targets": (pos["last_target"] or {}).get(f"{target}_price")}
        if ck is not None:
            sources["checkpoint"] = ck.get(f"{target}_price")
        missing = [k for k, v in sources.items() if v is None]
        if missing:
            word = "stop loss" if target == "sl" else "take profit"
            devs.append(Deviation("positions", f"{target}_missing", sev, f"position{pid}",
                                  f"{label} has no {word} in {', '.join(missing)} although {target}_pct={pct:g}",
                                  ev))
    devs += _size_deviations(pos, params, label, ev)
    mh = _num(params.get("max_hold_hours"))
    if mh and mh > 0 and p.ref is not None:
        held_h = (p.ref - pos["opened_at"]).total_seconds() / 3600
        if held_h > mh + p.tf_s / 3600:
            devs.append(Deviation("positions", "max_hold_exceeded", "error", f"position{pid}",
                                  f"{label} held {held_h:.1f} h at the last bar > max_hold_hours {mh:g} + 1 bar", ev))
    return devs


def _size_deviations(pos: dict, params: dict, label: str, ev: list) -> list[Deviation]:
    out = []
    orders = pos["entry_orders"] or []
    amount = _num(params.get("trade_amount_usd"))
    for o in orders:
        n = _num(o.get("notional_usd")) or 0.0
        if amount and n > amount * (1 + SIZE_TOLERANCE):
            out.append(Deviation("positions", "size_exceeds", "error", f"order{o['order_id']}",
                                 f"{label}: {o['intent']} order {o['client_order_id']} notional {n:.2f} USD > "
                                 f"trade_amount_usd {amount:.2f} (+{SIZE_TOLERANCE:.0%})",
                                 ev + [_row("order_executions", o)]))
    adds = sum(1 for o in orders if o.get("intent") == "add")
    mx = _num(params.get("max_adds"))
    if mx is not None and adds > mx:
        out.append(Deviation("positions", "adds_exceed", "error", f"position{pos['position_id']}",
                             f"{label}: {adds} add(s) > max_adds {mx:g}",
                             ev + [_row("order_executions", o) for o in orders]))
    return out


def _ckpt_brief(c: dict) -> dict:
    return {k: c.get(k) for k in ("position_id", "strategy", "symbol", "side", "qty", "avg_entry", "opened_at",
                                  "tp_price", "sl_price", "trail_stop", "adds")}


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------- feed

def _venue_source(broker: str | None) -> str:
    """The candle source the live loop stores for a broker (``ats.live.loop.make_broker``)."""
    return "alpaca" if broker == "alpaca" else "bybit"


def _check_feed(p: _Poll) -> CheckResult:
    exp = (f"per symbol, the next candle is not overdue by more than {STALE_FRAC:g} bar on the venue clock; no "
           "feed_anomaly events")
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    src = _venue_source((p.session or {}).get("broker"))
    stopped = p.session is None or p.session["state"] in ("STOPPED", "STARTING")  # no bar is due from the loop
    per = []
    devs = []
    for sym in p.symbols:
        r = p.one("""SELECT max(open_time) AS last_open FROM candles WHERE symbol = %s AND timeframe = %s
                      AND source = %s""", (sym, p.tf, src))
        last = r["last_open"] if r else None
        item = {"symbol": sym, "timeframe": p.tf, "source": src, "last_open_time": last}
        if last is not None:
            age = (p.venue_now - (last + timedelta(seconds=p.tf_s))).total_seconds()
            item.update(age_s=round(age, 1), overdue_bars=round(age / p.tf_s - 1, 3))
        per.append(item)
        if stopped:
            continue
        if last is None or item["overdue_bars"] > STALE_FRAC:
            devs.append(Deviation("feed", "stale", "warning", sym,
                                  f"{sym} {p.tf}: " + ("no candle stored from " + src if last is None else
                                                       f"newest candle opened {_iso(last)}, next close overdue by "
                                                       f"{item['overdue_bars']:.2f} bar on the {p.clock_source} clock"),
                                  [_row("candles", item)]))
    anomalies = p.all("""SELECT event_id, ts, severity, symbol, payload FROM system_events
                          WHERE event_type = 'feed_anomaly' AND (account_id = %s OR account_id IS NULL)
                            AND payload->>'run_id' = %s AND event_id > %s ORDER BY event_id DESC LIMIT %s""",
                      (p.account, p.run["run_id"], _since(p, "event_id"), ROW_LIMIT))
    for e in reversed(anomalies):
        kind = (e["payload"] or {}).get("kind", "anomaly")
        devs.append(Deviation("feed", f"anomaly_{kind}", "warning", f"event{e['event_id']}",
                              f"feed anomaly ({kind}) for {e['symbol']} bar {(e['payload'] or {}).get('open_time')}",
                              [_row("system_events", e)]))
    obs = {"clock": p.clock_source, "venue_now": p.venue_now, "loop_running": not stopped, "symbols": per,
           "anomalies_since_last_poll": len(anomalies)}
    return CheckResult(exp, obs, devs)


# ---------------------------------------------------------------------------------------------------- latency

def _check_latency(p: _Poll) -> CheckResult:
    exp = (f"decision -> order submitted and -> first fill within {LATE_FRAC:g} bar (venue clock); no order still "
           f"'submitted' {STUCK_BARS} bars after it was sent")
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    rid = p.run["run_id"]
    p.orders = p.all("""SELECT o.order_id, o.client_order_id, o.strategy_name, o.symbol, o.side, o.intent, o.status,
                               o.qty, o.notional_usd, o.submitted_at, s.ts AS decision_ts, s.status AS signal_status
                          FROM order_executions o LEFT JOIN signals s ON s.signal_id = o.signal_id
                         WHERE o.run_id = %s AND o.order_id > %s ORDER BY o.order_id DESC LIMIT %s""",
                     (rid, _since(p, "order_id"), ROW_LIMIT))[::-1]
    fills = p.all("""SELECT f.fill_id, f.client_order_id, f.symbol, f.side, f.qty, f.price, f.ts AS fill_ts,
                            o.submitted_at, s.ts AS decision_ts
                       FROM fills f JOIN order_executions o ON o.order_id = f.order_id
                       LEFT JOIN signals s ON s.signal_id = o.signal_id
                      WHERE f.run_id = %s AND f.fill_id > %s ORDER BY f.fill_id DESC LIMIT %s""",
                  (rid, _since(p, "fill_id"), ROW_LIMIT))[::-1]
    late = LATE_FRAC * p.tf_s
    devs = []
    sent = []
    for o in p.orders:
        if o["decision_ts"] is None:
            continue
        lat = (o["submitted_at"] - o["decision_ts"]).total_seconds()
        sent.append(lat)
        if lat > late:
            devs.append(Deviation("latency", "order_late", "warning", f"order{o['order_id']}",
                                  f"order {o['client_order_id']} submitted {lat:.0f} s after its decision "
                                  f"(> {LATE_FRAC:g} bar)", [_row("order_executions", o)]))
    filled = []
    for f in fills:
        if f["decision_ts"] is None:
            continue
        lat = (f["fill_ts"] - f["decision_ts"]).total_seconds()
        filled.append(lat)
        if lat > late:
            devs.append(Deviation("latency", "fill_late", "warning", f"fill{f['fill_id']}",
                                  f"fill of {f['client_order_id']} {lat:.0f} s after its decision (> {LATE_FRAC:g} bar)",
                                  [_row("fills", f)]))
    stuck = []
    if p.ref is not None:
        stuck = p.all("""SELECT order_id, client_order_id, strategy_name, symbol, side, intent, status, submitted_at
                           FROM order_executions WHERE run_id = %s AND status = 'submitted' AND submitted_at < %s
                          ORDER BY order_id LIMIT %s""",
                      (rid, p.ref - timedelta(seconds=STUCK_BARS * p.tf_s), ROW_LIMIT))
    for o in stuck:
        devs.append(Deviation("latency", "order_stuck", "warning", f"order{o['order_id']}",
                              f"order {o['client_order_id']} still submitted at the last bar {_iso(p.ref)} "
                              f"({STUCK_BARS}+ bars after it was sent)", [_row("order_executions", o)]))
    obs = {"orders_since_last_poll": len(p.orders), "fills_since_last_poll": len(fills),
           "decision_to_submit_s": _stats(sent), "decision_to_fill_s": _stats(filled), "stuck_orders": len(stuck),
           "note": "wall-clock bar-close -> order-sent latency is measured by the loop (LiveStats.latencies_ms) "
                   "but not stored; these figures are on the engine / venue clock"}
    return CheckResult(exp, obs, devs)


def _stats(xs: list[float]) -> dict | None:
    if not xs:
        return None
    s = sorted(xs)
    return {"n": len(s), "p50": round(s[len(s) // 2], 3), "max": round(s[-1], 3)}


# ---------------------------------------------------------------------------------------------------- reconciliation

def _check_reconciliation(p: _Poll) -> CheckResult:
    exp = "the latest reconciliation event of the run is not a mismatch (venue and database agree)"
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    if (p.session or {}).get("broker") == "paper" or p.run["mode"] == "paper-live":
        return CheckResult(exp, {"applicable": False,
                                 "why": "paper broker: nothing is held at a venue, the loop does not reconcile"})
    evs = p.all("""SELECT event_id, ts, recorded_at, event_type, severity, payload FROM system_events
                    WHERE account_id = %s AND component = 'live'
                      AND event_type IN ('reconciliation_mismatch', 'reconciliation_ok') AND payload->>'run_id' = %s
                    ORDER BY event_id DESC LIMIT 50""", (p.account, p.run["run_id"]))
    new = [e for e in evs if e["event_id"] > _since(p, "event_id") and e["event_type"] == "reconciliation_mismatch"]
    last = evs[0] if evs else None
    devs = []
    if last is not None and last["event_type"] == "reconciliation_mismatch":
        diffs = (last["payload"] or {}).get("diffs") or []
        devs.append(Deviation("reconciliation", "mismatch", "error", f"event{last['event_id']}",
                              f"venue and database disagree since {_iso(last['ts'])}: {len(diffs)} difference(s) "
                              "(the reconciliation breaker halts entries until a clean reconciliation)",
                              [_row("system_events", last)]))
    obs = {"applicable": True, "status": "no mismatch recorded" if last is None else last["event_type"],
           "last_event_id": last["event_id"] if last else None, "last_ts": last["ts"] if last else None,
           "mismatches_since_last_poll": len(new),
           "mismatches_total": sum(e["event_type"] == "reconciliation_mismatch" for e in evs)}
    return CheckResult(exp, obs, devs)


# ---------------------------------------------------------------------------------------------------- errors

def _check_errors(p: _Poll) -> CheckResult:
    exp = "no system_events of severity error or critical since the last poll"
    first = p.run["started_at"] if (p.run is not None and not p.cursor) else None
    if p.run is None and not p.cursor:
        first = p.wall - timedelta(hours=1)
    rows = p.all("""SELECT event_id, ts, recorded_at, component, event_type, severity, symbol, payload
                      FROM system_events
                     WHERE (account_id = %(a)s OR account_id IS NULL) AND severity IN ('error', 'critical')
                       AND event_id > %(e)s AND (%(f)s::timestamptz IS NULL OR recorded_at >= %(f)s::timestamptz)
                       AND event_type <> 'reconciliation_mismatch'
                     ORDER BY event_id DESC LIMIT %(n)s""",
                 {"a": p.account, "e": _since(p, "event_id"), "f": first, "n": ROW_LIMIT})[::-1]
    devs = [Deviation("errors", e["event_type"], e["severity"], f"event{e['event_id']}",
                      f"{e['severity']} event {e['component']}/{e['event_type']}"
                      + (f" {e['symbol']}" if e["symbol"] else "") + f" at {_iso(e['ts'])}",
                      [_row("system_events", e)]) for e in rows]
    return CheckResult(exp, {"since_event_id": _since(p, "event_id"), "errors": len(rows),
                             "by_type": _count(rows, "event_type")}, devs)


def _count(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return out


# ---------------------------------------------------------------------------------------------------- strategies

def _check_strategies(p: _Poll) -> CheckResult:
    exp = ("per strategy, since the last poll: entries only with the buy gate on and no breaker covering the symbol, "
           "signals only with the watchlist gate on, exits only with the sell gate on, no buy_gate block with the "
           "gate on")
    if p.run is None:
        return CheckResult(exp, {"applicable": False, "why": "no live run"})
    rid = p.run["run_id"]
    sigs = p.all("""SELECT signal_id, strategy_name, symbol, ts, side, intent, position_side, status FROM signals
                     WHERE run_id = %s AND signal_id > %s ORDER BY signal_id DESC LIMIT %s""",
                 (rid, _since(p, "signal_id"), 4 * ROW_LIMIT))[::-1]
    blocked = p.all("""SELECT blocked_id, signal_id, strategy_name, symbol, ts, gate, reason FROM blocked_signals
                        WHERE run_id = %s AND blocked_id > %s ORDER BY blocked_id DESC LIMIT %s""",
                    (rid, _since(p, "blocked_id"), 4 * ROW_LIMIT))[::-1]
    windows = breaker_windows(p.all("""SELECT event_id, ts, event_type, symbol, payload FROM system_events
                                        WHERE event_type IN ('breaker_tripped', 'breaker_reset')
                                          AND payload->>'run_id' = %s ORDER BY ts, event_id""", (rid,)))
    names = sorted(set(p.strategies) | {s["strategy_name"] for s in sigs} | {o["strategy_name"] for o in p.orders}
                   | {b["strategy_name"] for b in blocked})
    at = p.ref or p.wall
    per = {}
    for n in names:
        c = p.config(n, at)
        per[n] = {"gates": None if c is None else {g: c[f"{g}_enabled"] for g in ("watchlist", "buy", "sell")},
                  "signals": 0, "entry_signals": 0, "exit_signals": 0, "accepted": 0, "blocked": {},
                  "entries": 0, "exits": 0}
    for s in sigs:
        d = per[s["strategy_name"]]
        d["signals"] += 1
        d["entry_signals" if s["intent"] != "close" else "exit_signals"] += 1
        d["accepted"] += s["status"] == "accepted"
    for b in blocked:
        g = per[b["strategy_name"]]["blocked"]
        g[b["gate"]] = g.get(b["gate"], 0) + 1
    for o in p.orders:
        per[o["strategy_name"]]["entries" if o["intent"] != "close" else "exits"] += 1
    devs = _gate_deviations(p, sigs, blocked, windows)
    return CheckResult(exp, {"strategies": per, "signals_since_last_poll": len(sigs),
                             "blocked_since_last_poll": len(blocked)}, devs)


def _gate_deviations(p: _Poll, sigs: list[dict], blocked: list[dict], windows: list[dict]) -> list[Deviation]:
    devs = []
    for s in sigs:
        if s["intent"] == "close":
            continue
        c = p.config(s["strategy_name"], s["ts"])
        if c is not None and not c["watchlist_enabled"]:
            devs.append(Deviation("strategies", "signal_with_watchlist_off", "error", f"signal{s['signal_id']}",
                                  f"{s['strategy_name']} signalled {s['intent']} {s['symbol']} at {_iso(s['ts'])} "
                                  "with its watchlist gate off", [_row("signals", s), _cfg_row(c)]))
    for o in p.orders:
        if o["decision_ts"] is None:
            continue
        c = p.config(o["strategy_name"], o["decision_ts"])
        ev = [_row("order_executions", o)] + ([_cfg_row(c)] if c else [])
        if o["intent"] != "close":
            if c is None or not c["buy_enabled"]:
                devs.append(Deviation("strategies", "entry_with_buy_gate_off", "critical", f"order{o['order_id']}",
                                      f"{o['strategy_name']} entered {o['symbol']} ({o['intent']} "
                                      f"{o['client_order_id']}) at {_iso(o['decision_ts'])} with its buy gate "
                                      f"{'absent' if c is None else 'off'}", ev))
            cover = [w for w in windows if w["scope"] in ("*", o["symbol"]) and w["tripped_at"] <= o["decision_ts"]
                     and (w["reset_at"] is None or o["decision_ts"] < w["reset_at"])]
            if cover:
                devs.append(Deviation("strategies", "entry_while_breaker_tripped", "critical", f"order{o['order_id']}",
                                      f"{o['strategy_name']} entered {o['symbol']} at {_iso(o['decision_ts'])} while "
                                      + ", ".join(f"{w['breaker']}:{w['scope']}" for w in cover) + " tripped",
                                      ev + [_row("breaker_window", w) for w in cover]))
        elif c is not None and not c["sell_enabled"]:
            devs.append(Deviation("strategies", "exit_with_sell_gate_off", "error", f"order{o['order_id']}",
                                  f"{o['strategy_name']} exited {o['symbol']} ({o['client_order_id']}) at "
                                  f"{_iso(o['decision_ts'])} with its sell gate off", ev))
    for b in blocked:
        if b["gate"] != "buy_gate":
            continue
        c = p.config(b["strategy_name"], b["ts"])
        if c is not None and c["buy_enabled"]:
            devs.append(Deviation("strategies", "buy_gate_block_with_gate_on", "warning", f"blocked{b['blocked_id']}",
                                  f"{b['strategy_name']} {b['symbol']} at {_iso(b['ts'])} blocked by buy_gate although "
                                  "the configuration in force has buy_enabled on", [_row("blocked_signals", b),
                                                                                    _cfg_row(c)]))
    return devs


def _cfg_row(c: dict) -> dict:
    return _row("strategy_configurations_history", {k: c.get(k) for k in ("strategy_name", "watchlist_enabled",
                                                                        "buy_enabled", "sell_enabled", "valid_from")})


_CHECK_FUNCS = {"loop": _check_loop, "breakers": _check_breakers, "positions": _check_positions,
                "feed": _check_feed, "latency": _check_latency, "reconciliation": _check_reconciliation,
                "errors": _check_errors, "strategies": _check_strategies}


def _elapsed_ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)
