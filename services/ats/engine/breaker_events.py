"""The circuit breakers' audit rows: every trip/reset as a ``system_events`` row (component 'risk', event_type
'breaker_tripped' / 'breaker_reset', payload breaker, scope, cause, run_id and the breaker's context) plus the
``breaker_states`` upsert, and every trading-state change as event_type 'trading_state' (payload old, new,
scope, by, cause, run_id)."""

from __future__ import annotations

from ..risk import breakers as brk


def record(eng) -> None:
    """Write the board's pending transitions (``breaker_tripped`` / ``breaker_reset`` events and
    ``breaker_states``) and trading-state changes (``trading_state`` events) to the sink."""
    for tr in eng.board.drain():
        _record_transition(eng, tr)
    for ch in eng.board.drain_state_changes():
        eng.sink.add("system_events", (ch.ts, eng.account, "risk", "trading_state",
                                       "info" if ch.new is brk.TradingState.ACTIVE else "warning",
                                       None if ch.scope == "*" else ch.scope,
                                       {"old": ch.old.value, "new": ch.new.value, "scope": ch.scope,
                                        "by": ch.breaker, "cause": ch.cause, "run_id": eng.run_id}))


def _record_transition(eng, tr) -> None:
    ctx = dict(tr.context)
    payload = {"breaker": tr.breaker, "scope": tr.scope, "cause": tr.cause, "run_id": eng.run_id, **ctx}
    eng.sink.add("system_events", (tr.ts, eng.account, "risk", "breaker_tripped" if tr.tripped else "breaker_reset",
                                   "warning" if tr.tripped else "info", None if tr.scope == "*" else tr.scope, payload))
    eng.sink.breaker_state(tr.breaker, tr.scope, {"state": "tripped" if tr.tripped else "ok", "since": tr.ts,
                                                  "reason": tr.cause, "context": ctx})
    if tr.tripped:
        bt = eng.stats["breaker_trips"]
        bt[tr.breaker] = bt.get(tr.breaker, 0) + 1
