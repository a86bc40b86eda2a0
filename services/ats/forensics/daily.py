"""`ats report daily`: yesterday's P&L and what happened, written to ``reports/daily/`` and sent as a short message.

Every figure comes from the authoritative table for it and reconciles with the others:

- P&L of the day = equity of the last snapshot at or before the day's end (next 00:00 UTC) minus equity of the
  last snapshot at or before its start (00:00 UTC), inside ONE run (the account's latest run with snapshots) --
  the CLAUDE.md "equity difference" query, so consecutive daily reports add up to the multi-day change exactly.
- Positions at the day's end: open positions of that run (quantity x the last close at or before the end), value
  as % of that equity, against ``portfolio.target_allocations`` ({symbol: percent}); a drift beyond
  ``portfolio.drift_tolerance_pct`` (percentage points) is flagged.
- Trades closed that day (``positions.realized_pnl_usd``, net of fees), blocked signals by gate, breaker trips by
  breaker, feed anomalies by kind.

Money is USD; times UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from ..db.config_store import setting_as_of
from ..portfolio.pnl import latest_run


@dataclass(frozen=True)
class DailyWindow:
    """The UTC day reported on: ``[start, end)``."""

    day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=timezone.utc)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)


def _equity_at(conn, run_id: str, ts: datetime):
    r = conn.execute("SELECT ts, equity_usd FROM portfolio_hourly_snapshots WHERE run_id=%s AND ts <= %s "
                     "ORDER BY ts DESC LIMIT 1", (run_id, ts)).fetchone()
    return (r["ts"], float(r["equity_usd"])) if r else (None, None)


def _positions(conn, run_id: str, end: datetime, equity: float | None) -> list[dict]:
    rows = conn.execute(
        """SELECT p.symbol, p.side, sum(p.qty)::float8 AS qty,
                  (SELECT c.close::float8 FROM candles c WHERE c.symbol = p.symbol AND c.open_time < %(end)s
                    ORDER BY c.open_time DESC LIMIT 1) AS price
             FROM positions p
            WHERE p.run_id = %(run)s AND p.opened_at < %(end)s AND (p.closed_at IS NULL OR p.closed_at >= %(end)s)
            GROUP BY p.symbol, p.side ORDER BY p.symbol, p.side""", {"run": run_id, "end": end}).fetchall()
    out = []
    for r in rows:
        sign = 1.0 if r["side"] == "long" else -1.0
        value = sign * r["qty"] * (r["price"] or 0.0)
        out.append({"symbol": r["symbol"], "side": r["side"], "qty": r["qty"], "price": r["price"],
                    "value_usd": round(value, 2),
                    "allocation_pct": round(100.0 * value / equity, 2) if equity else None})
    return out


def _drift(positions: list[dict], targets: dict, tolerance: float) -> list[dict]:
    held = {}
    for p in positions:
        held[p["symbol"]] = held.get(p["symbol"], 0.0) + (p["allocation_pct"] or 0.0)
    out = []
    for sym in sorted(set(held) | set(targets)):
        actual, target = round(held.get(sym, 0.0), 2), float(targets.get(sym, 0.0))
        out.append({"symbol": sym, "actual_pct": actual, "target_pct": target,
                    "drift_pct": round(actual - target, 2), "flagged": abs(actual - target) > tolerance})
    return out


def daily_summary(conn, day: date, *, account_id: str = "default", run_id: str | None = None) -> dict:
    """The figures of the daily report for UTC day ``day``.

    Returns
    -------
    dict
        ``day, account_id, run_id, equity_start_usd, equity_end_usd, pnl_usd, pnl_pct, positions [...],
        allocation_drift [...], trades {count, wins, losses, realized_pnl_usd, fees_usd, list}, blocked_by_gate
        {gate: n}, breaker_trips {breaker: n}, anomalies {kind: n}``; ``run_id`` None when the account has no run.
    """
    w = DailyWindow(day)
    run = run_id or latest_run(conn, account_id)
    doc: dict = {"day": day.isoformat(), "account_id": account_id, "run_id": run}
    if run is None:
        return {**doc, "positions": [], "allocation_drift": [], "trades": {"count": 0, "list": []},
                "blocked_by_gate": {}, "breaker_trips": {}, "anomalies": {}, "pnl_usd": None}
    t0, e0 = _equity_at(conn, run, w.start)
    t1, e1 = _equity_at(conn, run, w.end)
    pnl = None if e0 is None or e1 is None else round(e1 - e0, 2)
    doc.update(equity_start_ts=t0.isoformat() if t0 else None, equity_start_usd=e0,
               equity_end_ts=t1.isoformat() if t1 else None, equity_end_usd=e1, pnl_usd=pnl,
               pnl_pct=None if pnl is None or not e0 else round(100.0 * pnl / e0, 3))
    doc["positions"] = _positions(conn, run, w.end, e1)
    targets = setting_as_of(conn, "portfolio.target_allocations", w.end, default={}, account_id=account_id) or {}
    tol = float(setting_as_of(conn, "portfolio.drift_tolerance_pct", w.end, default=5.0, account_id=account_id))
    doc["allocation_drift"] = _drift(doc["positions"], targets, tol) if targets else []
    doc["drift_tolerance_pct"] = tol
    trades = conn.execute(
        """SELECT position_id, strategy_name, symbol, side, realized_pnl_usd::float8 AS pnl, fees_usd::float8 AS fees,
                  opened_at, closed_at, close_reason
             FROM positions WHERE run_id=%s AND status='closed' AND closed_at >= %s AND closed_at < %s
            ORDER BY closed_at, position_id""", (run, w.start, w.end)).fetchall()
    doc["trades"] = {
        "count": len(trades), "wins": sum(1 for t in trades if t["pnl"] > 0),
        "losses": sum(1 for t in trades if t["pnl"] <= 0),
        "realized_pnl_usd": round(sum(t["pnl"] for t in trades), 2),
        "fees_usd": round(sum(t["fees"] for t in trades), 2),
        "list": [{**t, "opened_at": t["opened_at"].isoformat(), "closed_at": t["closed_at"].isoformat()}
                 for t in trades]}
    doc["blocked_by_gate"] = {r["gate"]: r["n"] for r in conn.execute(
        "SELECT gate, count(*) AS n FROM blocked_signals WHERE run_id=%s AND ts >= %s AND ts < %s "
        "GROUP BY gate ORDER BY n DESC, gate", (run, w.start, w.end))}
    doc["breaker_trips"] = {r["b"]: r["n"] for r in conn.execute(
        "SELECT payload->>'breaker' AS b, count(*) AS n FROM system_events WHERE component='risk' AND "
        "event_type='breaker_tripped' AND payload->>'run_id'=%s AND ts >= %s AND ts < %s GROUP BY 1 ORDER BY 2 DESC, 1",
        (run, w.start, w.end))}
    doc["anomalies"] = {r["kind"]: r["n"] for r in conn.execute(
        "SELECT kind, count(*) AS n FROM feed_anomalies WHERE open_time >= %s AND open_time < %s "
        "GROUP BY kind ORDER BY n DESC, kind", (w.start, w.end))}
    return doc


def render_daily(doc: dict) -> str:
    """Markdown of :func:`daily_summary` (with the query that reproduces the P&L)."""
    lines = [f"# Daily summary {doc['day']} (account {doc['account_id']})", ""]
    if doc["run_id"] is None:
        return "\n".join(lines + ["No run with portfolio snapshots for this account yet.", ""])
    pnl = doc["pnl_usd"]
    lines += [f"Run `{doc['run_id']}`. P&L from `portfolio_hourly_snapshots` (equity difference inside the run):",
              "",
              f"- equity {doc['equity_start_usd']:,.2f} USD ({doc['equity_start_ts']}) -> "
              f"{doc['equity_end_usd']:,.2f} USD ({doc['equity_end_ts']})" if pnl is not None else "- no snapshot",
              f"- **P&L {pnl:+,.2f} USD ({doc['pnl_pct']:+.3f} %)**" if pnl is not None else "", ""]
    tr = doc["trades"]
    lines += [f"## Trades closed ({tr['count']})", ""]
    if tr["count"]:
        lines += [f"{tr['wins']} won, {tr['losses']} lost or flat; realized {tr['realized_pnl_usd']:+,.2f} USD net of "
                  f"{tr['fees_usd']:,.2f} USD fees (realized only: the day's P&L above also moves with open "
                  "positions' marks).", "", "| position | strategy | symbol | side | P&L USD | reason |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {t['position_id']} | {t['strategy_name']} | {t['symbol']} | {t['side']} | {t['pnl']:+,.2f} | "
                  f"{t['close_reason'] or ''} |" for t in tr["list"]]
    else:
        lines.append("No trade closed this day.")
    lines += ["", f"## Positions at the day's end ({len(doc['positions'])})", ""]
    lines += [f"- {p['symbol']} {p['side']} {p['qty']:g} @ {p['price']} = {p['value_usd']:,.2f} USD "
              f"({p['allocation_pct']} % of equity)" for p in doc["positions"]] or ["None open."]
    if doc["allocation_drift"]:
        lines += ["", f"Target allocations (tolerance {doc['drift_tolerance_pct']} points):", ""]
        lines += [f"- {d['symbol']}: {d['actual_pct']} % vs target {d['target_pct']} % "
                  f"({d['drift_pct']:+} points){' **DRIFT**' if d['flagged'] else ''}" for d in doc["allocation_drift"]]
    for title, key in (("Blocked signals by gate", "blocked_by_gate"), ("Breaker trips", "breaker_trips"),
                       ("Feed anomalies", "anomalies")):
        items = doc[key]
        lines += ["", f"## {title} ({sum(items.values())})", ""]
        lines += [f"- {k}: {v}" for k, v in items.items()] or ["None."]
    lines += ["", "## Appendix: the P&L query", "", "```sql",
              "SELECT (SELECT equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(run)s AND ts <= %(end)s",
              "          ORDER BY ts DESC LIMIT 1)",
              "     - (SELECT equity_usd FROM portfolio_hourly_snapshots WHERE run_id = %(run)s AND ts <= %(start)s",
              "          ORDER BY ts DESC LIMIT 1) AS pnl_usd;",
              f"-- run = '{doc['run_id']}', start = '{doc['day']} 00:00+00', end = next day 00:00+00", "```", ""]
    return "\n".join(lines)


def short_message(doc: dict) -> tuple[str, str]:
    """(title, body) of the message sent for the daily summary: the numbers only."""
    title = f"ATS [{doc['account_id']}] daily {doc['day']}"
    if doc["run_id"] is None or doc["pnl_usd"] is None:
        return title, "no portfolio snapshot for this day"
    tr = doc["trades"]
    flagged = [d["symbol"] for d in doc["allocation_drift"] if d["flagged"]]
    body = (f"P&L {doc['pnl_usd']:+,.2f} USD ({doc['pnl_pct']:+.2f} %), equity {doc['equity_end_usd']:,.2f} USD; "
            f"{tr['count']} trades closed ({tr['realized_pnl_usd']:+,.2f} USD realized); "
            f"{len(doc['positions'])} open; blocked {sum(doc['blocked_by_gate'].values())}; "
            f"breaker trips {sum(doc['breaker_trips'].values())}; anomalies {sum(doc['anomalies'].values())}"
            + (f"; allocation drift: {', '.join(flagged)}" if flagged else ""))
    return title, body


def write_daily(conn, day: date, *, account_id: str = "default", out_dir: Path | None = None) -> tuple[Path, Path, dict]:
    """Write ``reports/daily/<day>_summary.md`` + ``.json`` (account reports nest under reports/accounts/<id>/).

    Returns (markdown path, json path, the figures).
    """
    from .. import paths

    doc = daily_summary(conn, day, account_id=account_id)
    d = Path(out_dir) if out_dir else paths.account_path("reports", account_id) / "daily"
    d.mkdir(parents=True, exist_ok=True)
    md, js = d / f"{day.isoformat()}_summary.md", d / f"{day.isoformat()}_summary.json"
    md.write_text(render_daily(doc), encoding="utf-8")
    js.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return md, js, doc
