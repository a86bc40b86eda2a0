"""`ats health-check`: post-trade health and strategy-adherence audit.

For every position of the run the audit asks: did this trade obey the configuration in force at its time
(``ats.db.config_store.strategy_as_of`` at the entry signal's bar, or at the exit for exit rules) *as the run knew
it* -- as known at ``known_at_for(run started_at, trade time)``, so a change recorded after the run but
back-dated before its trades does not turn an obedient trade into a violation. The same audit against every change
recorded so far (hindsight) lists, separately and without failing the check, the trades such a later back-dated
change would make violations: the ``retroactive`` findings.

Rules (each violation names the rule, the position and the figures):

- ``buy_gate``      an entry needs a configuration with ``buy_enabled`` on at the entry signal's time.
- ``sell_gate``     a signal-driven exit (close_reason ``signal``) needs ``sell_enabled`` on at the exit
                    (TP / SL / trailing / max-hold exits are risk exits and always allowed).
- ``size``          every opening / adding order's notional (qty x decision price, USD) <= ``trade_amount_usd`` x
                    (1 + SIZE_TOLERANCE) (the target notional before risk caps and Kelly sizing, which only shrink).
- ``max_adds``      adding orders on one position <= ``max_adds``.
- ``tp_sl``         the initial TP / SL (position_targets reason ``initial``) = entry price x (1 +/- tp_pct/100,
                    sl_pct/100), long or short mirrored, within TARGET_TOLERANCE (relative), measured from the
                    opening fill price (before adds move the average) or the signal price; a percentage of 0
                    means "off" (no target expected).
- ``cooldown``      a new entry of the same strategy and symbol no sooner than ``cooldown_min`` minutes after
                    the previous exit.
- ``max_hold``      closed_at - opened_at (or reference time - opened_at when still open) <= max hold + one bar
                    of the signal's timeframe (an exit is decided at a bar close and filled at the next open);
                    0 = off.
- ``breaker``       no entry while a circuit breaker covering the symbol was tripped (system_events windows).

Parameter names (aliases accepted): tp_pct / take_profit_pct; sl_pct / stop_loss_pct; trade_amount_usd /
trade_amount; cooldown_min / cooldown_minutes; max_hold_hours / max_hold_minutes / max_hold_bars. A rule whose
parameter is absent from the configuration is reported as not checked, never as passed.

The report also carries :func:`ats.forensics.queries.health_summary` (breaker states, feed freshness,
coverage, error counts, last successful runs).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from .. import paths
from ..timeutil import TIMEFRAME_SECONDS, parse_ts, utcnow
from .config_as_of import ConfigAsOf
from .queries import breaker_windows, health_summary, resolve_run
from .sqlfmt import QueryLog, dumps, fnum, iso, jsonable, md_table

SIZE_TOLERANCE = 0.05      # fraction above trade_amount_usd tolerated (slippage between decision and fill)
TARGET_TOLERANCE = 0.002   # relative difference tolerated between configured and recorded TP / SL prices

ALIASES = {
    "tp_pct": ("tp_pct", "take_profit_pct"),
    "sl_pct": ("sl_pct", "stop_loss_pct"),
    "trade_amount_usd": ("trade_amount_usd", "trade_amount"),
    "cooldown_min": ("cooldown_min", "cooldown_minutes"),
}
RULES = ("buy_gate", "sell_gate", "size", "max_adds", "tp_sl", "cooldown", "max_hold", "breaker")


def _param(params: dict | None, key: str) -> float | None:
    for k in ALIASES.get(key, (key,)):
        v = (params or {}).get(k)
        if v is not None and v != "":
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


def _max_hold_minutes(params: dict | None, timeframe: str | None) -> float | None:
    p = params or {}
    if p.get("max_hold_hours") is not None:
        return float(p["max_hold_hours"]) * 60.0
    if p.get("max_hold_minutes") is not None:
        return float(p["max_hold_minutes"])
    if p.get("max_hold_min") is not None:
        return float(p["max_hold_min"])
    if p.get("max_hold_bars") is not None and timeframe in TIMEFRAME_SECONDS:
        return float(p["max_hold_bars"]) * TIMEFRAME_SECONDS[timeframe] / 60.0
    return None


def audit_adherence(conn: psycopg.Connection, run_id: str | None = None, since: Any = None,
                    until: Any = None) -> dict:
    """Check every position of the run opened in [since, until] against the configuration in force at its time.

    Returns ``{run, checked_positions, violations: [{rule, position_id, strategy_name, symbol, ts, detail}],
    by_rule: {rule: n}, not_checked: {rule: n}, retroactive: [...], passed: bool, queries}``. The configuration
    is the one known then (``known_at_for(run started_at, trade time)``); ``passed`` is False when any rule was
    broken against it. ``retroactive``: violations only a later back-dated change creates (same shape plus
    ``changed_valid_from`` / ``changed_recorded_at``); they never fail the check. The rules, in the order they are checked per position: buy gate, size, max adds, TP/SL,
    cooldown, max hold, sell gate, breakers (one ``_check_*`` function each).
    """
    q = QueryLog(conn)
    run = resolve_run(conn, run_id)
    if run is None:
        return jsonable({"run": None, "checked_positions": 0, "violations": [], "by_rule": {}, "not_checked": {},
                         "retroactive": [], "passed": True, "queries": []})
    since_dt = parse_ts(since, what="since") if since else None
    until_dt = parse_ts(until, what="until") if until else None
    p = {"run_id": run["run_id"], "since": since_dt, "until": until_dt}
    positions = _audited_positions(q, p, since_dt, until_dt)
    events = q.all("breaker_events", """
        SELECT event_id, ts, event_type, symbol, payload FROM system_events
         WHERE event_type IN ('breaker_tripped', 'breaker_reset')
           AND (payload->>'run_id' IS NULL OR payload->>'run_id' = %(run_id)s)
           AND (account_id IS NULL OR account_id = (SELECT account_id FROM engine_runs WHERE run_id = %(run_id)s))
         ORDER BY ts, event_id""", p)
    q.entries.append({"name": "config_as_of", "rows": 0,
                      "sql": "SELECT * FROM strategy_configurations_history WHERE account_id = '<account>' AND "
                             "strategy_name = '<strategy>' AND valid_from <= '<signal ts>'::timestamptz "
                             "AND recorded_at <= greatest('<signal ts>'::timestamptz, '<run started_at>'::timestamptz) "
                             "ORDER BY valid_from DESC, history_id DESC LIMIT 1  -- per position, as known then "
                             "(ats.db.config_store.strategy_as_of + known_at_for); the retroactive pass drops the "
                             "recorded_at condition"})
    ref = run.get("last_bar_time") if run["mode"] != "live" else utcnow()
    ref = ref or utcnow()
    windows = breaker_windows(events)
    a = _Audit(cfg=ConfigAsOf(conn, run["account_id"], run["started_at"]), windows=windows, ref=ref)
    hind = _Audit(cfg=ConfigAsOf(conn, run["account_id"]), windows=windows, ref=ref)
    for pos in positions:
        _audit_position(a, pos)
        _audit_position(hind, pos)
    retro = _retroactive(conn, run["account_id"], a.violations, hind.violations)
    by_rule = Counter(v["rule"] for v in a.violations)
    return jsonable({"run": run, "since": since_dt, "until": until_dt, "reference_time": ref,
                     "checked_positions": len(positions), "violations": a.violations,
                     "by_rule": {r: by_rule.get(r, 0) for r in RULES}, "not_checked": dict(a.not_checked),
                     "retroactive": retro, "passed": not a.violations, "queries": q.entries})


def _vkey(v: dict) -> tuple:
    return (v["rule"], v["position_id"], v["ts"], v["detail"].get("order_id"), v["detail"].get("target"))


def _retroactive(conn: psycopg.Connection, account_id: str, known: list[dict], hindsight: list[dict]) -> list[dict]:
    """Violations that only a change recorded after the decision creates: each with the configuration version
    (``valid_from``, ``recorded_at``) that was back-dated over the trade."""
    seen = {_vkey(v) for v in known}
    out = []
    for v in hindsight:
        if _vkey(v) in seen:
            continue
        ver = conn.execute(
            """SELECT valid_from, recorded_at FROM strategy_configurations_history
                WHERE account_id = %s AND strategy_name = %s AND valid_from <= %s
                ORDER BY valid_from DESC, history_id DESC LIMIT 1""",
            (account_id, v["strategy_name"], v["ts"])).fetchone()
        out.append({**v, "changed_valid_from": ver["valid_from"] if ver else None,
                    "changed_recorded_at": ver["recorded_at"] if ver else None})
    return out


@dataclass
class _Audit:
    """State of one adherence audit: config lookups, breaker windows, the reference time for open positions,
    and what was found so far."""

    cfg: ConfigAsOf
    windows: list[dict]
    ref: datetime
    violations: list[dict] = field(default_factory=list)
    not_checked: Counter = field(default_factory=Counter)
    last_exit: dict[tuple, datetime] = field(default_factory=dict)

    def bad(self, rule: str, pos: dict, at: datetime | None, **detail) -> None:
        """Record a broken ``rule`` for position ``pos`` at time ``at``."""
        self.violations.append({"rule": rule, "position_id": pos["position_id"],
                                "strategy_name": pos["strategy_name"], "symbol": pos["symbol"], "ts": at,
                                "detail": detail})


def _audited_positions(q: QueryLog, p: dict, since_dt: datetime | None, until_dt: datetime | None) -> list[dict]:
    w = (" AND p.opened_at >= %(since)s" if since_dt else "") + (" AND p.opened_at <= %(until)s" if until_dt else "")
    return q.all("positions_with_entry", f"""
        SELECT p.position_id, p.strategy_name, p.symbol, p.side, p.status, p.entry_qty, p.avg_entry_price,
               p.opened_at, p.closed_at, p.close_reason, p.entry_signal_id,
               s.ts AS signal_ts, s.price AS signal_price, s.timeframe,
               (SELECT coalesce(json_agg(json_build_object('order_id', o.order_id, 'intent', o.intent,
                        'notional_usd', coalesce(o.notional_usd, o.qty * o.decision_price), 'status', o.status)
                        ORDER BY o.submitted_at, o.order_id), '[]'::json)
                  FROM order_executions o WHERE o.position_id = p.position_id AND o.intent IN ('open', 'add')
                   AND o.status <> 'rejected') AS entry_orders,
               (SELECT o.avg_fill_price FROM order_executions o WHERE o.position_id = p.position_id
                  AND o.intent = 'open' ORDER BY o.submitted_at, o.order_id LIMIT 1) AS first_fill_price,
               (SELECT json_build_object('tp_price', t.tp_price, 'sl_price', t.sl_price) FROM position_targets t
                 WHERE t.position_id = p.position_id ORDER BY t.ts, t.target_id LIMIT 1) AS initial_targets
          FROM positions p LEFT JOIN signals s ON s.signal_id = p.entry_signal_id
         WHERE p.run_id = %(run_id)s{w}
         ORDER BY p.opened_at, p.position_id""", p)


def _audit_position(a: _Audit, pos: dict) -> None:
    entry_t = pos["signal_ts"] or pos["opened_at"]
    c = a.cfg(pos["strategy_name"], entry_t)
    params = (c or {}).get("params") or {}
    _check_buy_gate(a, pos, c, entry_t)
    eorders = _entry_orders(pos)
    _check_size(a, pos, params, eorders, entry_t)
    _check_max_adds(a, pos, params, eorders, entry_t)
    _check_tp_sl(a, pos, params)
    _check_cooldown(a, pos, params)
    _check_max_hold(a, pos, params)
    _check_sell_gate(a, pos)
    _check_breakers(a, pos, entry_t)


def _check_buy_gate(a: _Audit, pos: dict, c: dict | None, entry_t: datetime) -> None:
    if c is None or not c.get("buy_enabled"):
        a.bad("buy_gate", pos, entry_t, config_valid_from=(c or {}).get("valid_from"),
              buy_enabled=(c or {}).get("buy_enabled"),
              message=f"entry at {iso(entry_t)} while the buy gate was "
                      f"{'absent' if c is None else 'off'} for {pos['strategy_name']}")


def _entry_orders(pos: dict) -> list[dict]:
    eorders = pos["entry_orders"]
    if isinstance(eorders, str):
        eorders = json.loads(eorders)
    if not eorders:  # no order rows (position written without orders): use the position's own figures
        eorders = [{"order_id": None, "intent": "open",
                    "notional_usd": fnum(pos["entry_qty"]) * fnum(pos["avg_entry_price"])}]
    return eorders


def _check_size(a: _Audit, pos: dict, params: dict, eorders: list[dict], entry_t: datetime) -> None:
    """Size, per opening / adding order (position totals grow with adds)."""
    amount = _param(params, "trade_amount_usd")
    if amount is None or amount <= 0:
        a.not_checked["size"] += 1
        return
    for o in eorders:
        notional = float(o["notional_usd"] or 0)
        if notional > amount * (1 + SIZE_TOLERANCE):
            a.bad("size", pos, entry_t, order_id=o["order_id"], intent=o["intent"], entry_notional_usd=notional,
                  trade_amount_usd=amount,
                  message=f"{o['intent']} order notional {notional:.2f} USD > trade_amount_usd {amount:.2f} "
                          f"(+{SIZE_TOLERANCE:.0%})")


def _check_max_adds(a: _Audit, pos: dict, params: dict, eorders: list[dict], entry_t: datetime) -> None:
    adds = sum(1 for o in eorders if o["intent"] == "add")
    max_adds = params.get("max_adds")
    if max_adds is None:
        a.not_checked["max_adds"] += 1
    elif adds > int(max_adds):
        a.bad("max_adds", pos, entry_t, adds=adds, max_adds=int(max_adds),
              message=f"{adds} add(s) on one position > max_adds {int(max_adds)}")


def _check_tp_sl(a: _Audit, pos: dict, params: dict) -> None:
    """The initial TP / SL, set on the opening fill before any add moves the average entry."""
    tp_pct, sl_pct = _param(params, "tp_pct"), _param(params, "sl_pct")
    tg = pos["initial_targets"]
    if isinstance(tg, str):
        tg = json.loads(tg)
    if tg is None or (tp_pct is None and sl_pct is None):
        a.not_checked["tp_sl"] += 1
        return
    sign = 1.0 if pos["side"] == "long" else -1.0
    bases = [fnum(x) for x in (pos["first_fill_price"], pos["signal_price"], pos["avg_entry_price"]) if x]
    for label, pct, got, direction in (("tp", tp_pct, tg.get("tp_price"), sign), ("sl", sl_pct, tg.get("sl_price"), -sign)):
        if pct is None or pct <= 0:  # 0 = off
            continue
        if got is None:
            a.bad("tp_sl", pos, pos["opened_at"], target=label, expected_pct=pct, recorded=None,
                  message=f"no initial {label.upper()} recorded although {label}_pct={pct}")
            continue
        want = [b * (1 + direction * pct / 100.0) for b in bases]
        if min(abs(float(got) - x) / x for x in want) > TARGET_TOLERANCE:
            a.bad("tp_sl", pos, pos["opened_at"], target=label, expected_price=want[0], recorded=float(got),
                  pct=pct, message=f"initial {label.upper()} {float(got):g} != entry {bases[0]:g} x "
                                   f"(1 {'+' if direction > 0 else '-'} {pct}%) = {want[0]:g}")


def _check_cooldown(a: _Audit, pos: dict, params: dict) -> None:
    cd = _param(params, "cooldown_min")
    key = (pos["strategy_name"], pos["symbol"])
    prev = a.last_exit.get(key)
    if cd is None:
        a.not_checked["cooldown"] += 1
    elif prev is not None and pos["opened_at"] < prev + timedelta(minutes=cd):
        gap = (pos["opened_at"] - prev).total_seconds() / 60.0
        a.bad("cooldown", pos, pos["opened_at"], previous_exit=prev, gap_minutes=gap, cooldown_min=cd,
              message=f"re-entry {gap:.0f} min after the previous exit (cooldown {cd:.0f} min)")
    if pos["closed_at"] is not None:
        a.last_exit[key] = max(pos["closed_at"], a.last_exit.get(key, pos["closed_at"]))


def _check_max_hold(a: _Audit, pos: dict, params: dict) -> None:
    mh = _max_hold_minutes(params, pos["timeframe"])
    if mh is not None and mh <= 0:  # 0 = off
        return
    if mh is None:
        a.not_checked["max_hold"] += 1
        return
    bar = TIMEFRAME_SECONDS.get(pos["timeframe"] or "1h", 3600) / 60.0
    end = pos["closed_at"] or a.ref
    held = (end - pos["opened_at"]).total_seconds() / 60.0
    if held > mh + bar:
        a.bad("max_hold", pos, end, held_hours=held / 60, max_hold_hours=mh / 60, still_open=pos["closed_at"] is None,
              message=f"held {held / 60:.1f} h > max hold {mh / 60:.1f} h (+1 bar)"
                      + (" and still open" if pos["closed_at"] is None else ""))


def _check_sell_gate(a: _Audit, pos: dict) -> None:
    """Signal exits need the sell gate on at the exit."""
    if pos["closed_at"] is not None and pos["close_reason"] == "signal":
        xc = a.cfg(pos["strategy_name"], pos["closed_at"])
        if xc is None or not xc.get("sell_enabled"):
            a.bad("sell_gate", pos, pos["closed_at"], message="signal exit while the sell gate was off")


def _check_breakers(a: _Audit, pos: dict, entry_t: datetime) -> None:
    tripped = [wd["breaker"] for wd in a.windows if wd["scope"] in ("*", pos["symbol"])
               and wd["tripped_at"] <= entry_t and (wd["reset_at"] is None or entry_t < wd["reset_at"])]
    if tripped:
        a.bad("breaker", pos, entry_t, breakers=tripped, message=f"entry while {', '.join(tripped)} tripped")


def health_check(conn: psycopg.Connection, run_id: str | None = None, since: Any = None, until: Any = None) -> dict:
    """Adherence audit plus system health: ``{audit: audit_adherence(...), health: health_summary(...), passed,
    findings: [str]}`` (findings: non-fatal observations such as stale feeds, tripped breakers, errors)."""
    audit = audit_adherence(conn, run_id, since, until)
    rid = (audit.get("run") or {}).get("run_id")
    health = health_summary(conn, rid)
    findings = []
    if health["breakers"]["tripped"]:
        findings.append("breakers tripped now: " + ", ".join(f"{b['breaker']} ({b['scope']})"
                                                                for b in health["breakers"]["tripped"]))
    if health["stale_feeds"]:
        findings.append(f"{len(health['stale_feeds'])} stale feed(s): {', '.join(health['stale_feeds'][:10])}")
    if health["errors"]["total"]:
        findings.append(f"{health['errors']['total']} error event(s) in the last 24 h: {health['errors']['by_component']}")
    cov = health.get("coverage") or {}
    bad_cov = [f"{r.get('symbol')} {r.get('timeframe')} ({r.get('status')})" for r in cov.get("rows") or []
               if isinstance(r, dict) and r.get("status") in ("red", "amber")]
    if bad_cov:
        findings.append(f"{len(bad_cov)} coverage series not green: {', '.join(bad_cov[:10])}")
    if cov.get("error"):
        findings.append(f"coverage unavailable: {cov['error']}")
    return {"audit": audit, "health": health, "passed": audit["passed"], "findings": findings,
            "generated_at": iso(utcnow())}


def render_health(res: dict) -> str:
    """Markdown for a health_check result (violations first; appendix of queries)."""
    a, h = res["audit"], res["health"]
    run = a.get("run") or {}
    L = ["# ATS health check", "",
         f"- Run: `{run.get('run_id', 'none')}` ({run.get('mode', '-')}, {run.get('status', '-')}); "
         f"reference time {h.get('reference_time')}  ",
         f"- Generated: {res['generated_at']}  ",
         f"- Verdict: **{'PASS' if res['passed'] else 'FAIL'}** - {a['checked_positions']} position(s) audited, "
         f"{len(a['violations'])} rule violation(s)", ""]
    qi: dict[str, str] = {}
    queries = [("audit", q) for q in a.get("queries", [])] + [("health", q) for q in h.get("queries", [])]
    for i, (_, q) in enumerate(queries, 1):
        qi.setdefault(q["name"], f"Q{i}")

    def ref(*names):
        got = [qi[n] for n in names if n in qi]
        return f" [{', '.join(got)}]" if got else ""

    L += ["## Strategy adherence", "",
          "Each trade against the configuration in force at its time as the run knew it then "
          "(strategy_configurations_history, recorded_at <= max(trade time, run start))"
          + ref("positions_with_entry", "config_as_of") + ".", ""]
    L.append(md_table(["Rule", "Violations", "Not checked (parameter absent)"],
                      [(r, a["by_rule"].get(r, 0), a["not_checked"].get(r, 0)) for r in RULES]))
    L.append("")
    if a["violations"]:
        L.append("### Violations")
        L.append("")
        L.append(md_table(["Rule", "Position", "Strategy", "Symbol", "Time", "What"],
                          [(v["rule"], v["position_id"], v["strategy_name"], v["symbol"], v["ts"],
                            v["detail"].get("message", json.dumps(v["detail"])[:200])) for v in a["violations"][:300]]))
        L.append("")
    L += _retroactive_md(a.get("retroactive") or [])
    L += ["## Circuit breakers", ""]
    b = h["breakers"]
    L.append(f"Trips: {b['trips']}, resets: {b['resets']}{ref('breaker_event_counts')}; by breaker: "
             f"{', '.join(f'{k} x{v}' for k, v in b['trips_by_breaker'].items()) or 'none'}.")
    L.append("")
    if b["states"]:
        L.append(md_table(["Breaker", "Scope", "State", "Since", "Reason"],
                          [(s["breaker"], s["scope"], s["state"], s["since"], s.get("reason") or "") for s in b["states"]])
                 + "\n\nSource:" + ref("breaker_states"))
        L.append("")
    L += ["## Feed freshness", ""]
    if h["feed_freshness"]:
        L.append(md_table(["Symbol", "Timeframe", "Last candle open", "Age (min)", "Stale"],
                          [(f["symbol"], f["timeframe"], f["last_open_time"], f["age_minutes"], "STALE" if f["stale"] else "ok")
                           for f in h["feed_freshness"]]) + "\n\nSource:" + ref("feed_freshness"))
    else:
        L.append("No candles in the store.")
    L.append("")
    L += ["## Coverage", ""]
    cov = h["coverage"]
    if cov.get("rows") is not None:
        rows = cov["rows"]
        st = Counter(r.get("status") for r in rows if isinstance(r, dict))
        L.append(f"{len(rows)} series from ats.market_data.coverage.coverage as of the reference time: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(st.items(), key=lambda kv: str(kv[0]))) + ".")
        if rows and isinstance(rows[0], dict):
            L.append("")
            L.append(md_table(["Symbol", "TF", "Status", "Completeness", "Missing", "Bars behind", "Reasons"],
                              [(r.get("symbol"), r.get("timeframe"), r.get("status"),
                                r.get("completeness"), r.get("missing"), (r.get("freshness") or {}).get("behind"),
                                "; ".join(r.get("reasons") or [])) for r in rows[:60]]))
    else:
        L.append(cov.get("error") or "not available")
    L.append("")
    L += ["## Errors and anomalies", "",
          f"Error events ({h['errors']['window']}): {h['errors']['total']}{ref('error_counts')}; warnings: {h['warnings']}.", ""]
    if h["errors"]["recent"]:
        L.append(md_table(["Time", "Component", "Type", "Severity", "Symbol", "Payload"],
                          [(e["ts"], e["component"], e["event_type"], e["severity"], e.get("symbol") or "",
                            json.dumps(e["payload"])[:160]) for e in h["errors"]["recent"][:20]]) + "\n\nSource:" + ref("recent_errors"))
        L.append("")
    if h["anomalies"].get("available"):
        L.append(f"Feed anomalies in the 24 h before the reference time: {h['anomalies'].get('last_24h_by_kind', h['anomalies'])}"
                 + ref("feed_anomalies_24h"))
        L.append("")
    L += ["## Last runs", ""]
    L.append(md_table(["Run", "Mode", "Status", "Started", "Finished", "Last bar", "Bars"],
                      [(r["run_id"], r["mode"], r["status"], r["started_at"], r["finished_at"], r["last_bar_time"],
                        r["bars_processed"]) for r in h["last_runs"]]) + "\n\nSource:" + ref("last_runs"))
    L.append("")
    L.append("Last successful run per mode: " + (", ".join(f"{m}: `{r['run_id']}` ({r['finished_at']})"
                                                         for m, r in h["last_successful"].items()) or "none")
             + ref("last_successful_runs"))
    L.append("")
    if res["findings"]:
        L += ["## Findings (not rule violations)", ""] + [f"- {f}" for f in res["findings"]] + [""]
    L += ["## Appendix: queries", ""]
    for i, (_, q) in enumerate(queries, 1):
        L += [f"**Q{i} `{q['name']}`**", "", "```sql", q["sql"], "```", ""]
    return "\n".join(L)


def _retroactive_md(retro: list[dict]) -> list[str]:
    L = ["## Retroactive findings (not violations)", ""]
    if not retro:
        return L + ["No configuration change recorded after a trade, back-dated over it, would make it a violation.", ""]
    L += [f"{len(retro)} trade check(s) obeyed the configuration the run knew, but break a rule under a change "
          "recorded later and back-dated over them. They do not fail the check; they say the history was "
          "edited after the fact.", ""]
    L.append(md_table(["Rule", "Position", "Strategy", "Symbol", "Time", "Changed version valid from",
                       "Recorded at", "What (under the later change)"],
                      [(v["rule"], v["position_id"], v["strategy_name"], v["symbol"], v["ts"],
                        v.get("changed_valid_from"), v.get("changed_recorded_at"),
                        v["detail"].get("message", json.dumps(v["detail"])[:200])) for v in retro[:300]]))
    return L + [""]


def write_health_check(conn: psycopg.Connection, run_id: str | None = None, since: Any = None, until: Any = None,
                       out_dir: str | Path | None = None) -> dict:
    """Run :func:`health_check` and write ``reports/health/<UTC date>_health-check.md`` + ``.json``.

    Returns ``{"paths": [...], "md_path", "json_path", "passed", "violations": [...], "retroactive": [...],
    "findings": [...]}``.
    """
    res = health_check(conn, run_id, since, until)
    d = Path(out_dir) if out_dir is not None else paths.reports_dir() / "health"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{utcnow():%Y-%m-%d}_health-check"
    md, js = d / f"{stem}.md", d / f"{stem}.json"
    md.write_text(render_health(res) + f"\n_JSON twin: [{js.name}]({js.name})_\n", encoding="utf-8")
    js.write_text(dumps(res) + "\n", encoding="utf-8")
    return {"paths": [str(md), str(js)], "md_path": str(md), "json_path": str(js), "passed": res["passed"],
            "violations": res["audit"]["violations"], "retroactive": res["audit"].get("retroactive", []),
            "findings": res["findings"]}
