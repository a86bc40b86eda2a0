"""Periodic reports: `ats report 24h`, `ats report weekly`, `ats report watchlist` (markdown + JSON twin each).

Anti-patterns encoded here (CLAUDE.md): portfolio P&L comes from ``portfolio_hourly_snapshots`` only, as the
difference of equity (or cumulative realized P&L) between two snapshots. Never ``SUM`` balances, and never sum
``net_pnl_daily_usd`` across hours: it is a running cumulative since 00:00 UTC, so a day's figure is its LAST
snapshot's value (``DISTINCT ON (day) ... ORDER BY day, ts DESC``), not the sum of its hourly rows.

One boundary rule everywhere (as in :mod:`ats.forensics.daily`): the portfolio state at a boundary is the last
snapshot at or before it. A window's figure and its per-day parts use the same rule, so the parts add up to the
whole; each report ends with a "Reconciliation" section (:func:`reconcile_weekly`, :func:`reconcile_24h`) that
says so line by line, and a figure that does not reconcile is printed as such, never hidden.

Every figure is reproducible by a query printed in the report's appendix.
"""

from __future__ import annotations

import concurrent.futures as cf
import statistics
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from .. import paths
from ..db import connect, database_url
from ..errors import AtsError
from ..timeutil import utcnow
from .queries import blocked_signals, resolve_run
from .investigate import write_investigation
from .sqlfmt import QueryLog, dumps, fnum, iso, jsonable, md_table, money, usd


def _appendix(queries: list[dict]) -> list[str]:
    L = ["## Appendix: queries", "", "Every figure above comes from these read-only statements (parameters inlined).", ""]
    for i, q in enumerate(queries, 1):
        L += [f"**Q{i} `{q['name']}`**", "", "```sql", q["sql"], "```", ""]
    return L


def _qref(queries: list[dict]):
    idx: dict[str, int] = {}
    for i, q in enumerate(queries, 1):
        idx.setdefault(q["name"], i)

    def ref(*names: str) -> str:
        got = [f"Q{idx[n]}" for n in names if n in idx]
        return f" [{', '.join(got)}]" if got else ""
    return ref


def _default_as_of(conn: psycopg.Connection, run: dict | None) -> datetime:
    """Replays/backtests: the run's last processed bar (engine clock); live or no run: now."""
    if run is not None and run["mode"] != "live":
        if run.get("last_bar_time"):
            return run["last_bar_time"]
        row = conn.execute("SELECT max(ts) AS t FROM portfolio_hourly_snapshots WHERE run_id = %s",
                           (run["run_id"],)).fetchone()
        if row and row["t"]:
            return row["t"]
    return utcnow()


# ---------------------------------------------------------------------------------------------------------
# 24 h

LABEL_TEXT = {"worst": "worst (a loss)", "best": "best (a win)", "median": "median", "lowest": "lowest P&L",
              "highest": "highest P&L", "only": "only trade"}


def _rank_label(side: str, pnl: float) -> str:
    """``worst`` only for a loss and ``best`` only for a win; otherwise the neutral rank ``lowest`` / ``highest``."""
    if side == "low":
        return "worst" if pnl < 0 else "lowest"
    return "best" if pnl > 0 else "highest"


def pick_trades(trades: list[dict]) -> list[tuple[str, dict]]:
    """Choose up to 5 representative closed trades by realized P&L (ties by position_id): the 2 lowest, the
    median, the 2 highest.

    Labels claim only what the data supports: a low-ranked trade is ``worst`` when it lost money and ``lowest``
    otherwise; a high-ranked one ``best`` when it made money and ``highest`` otherwise; ``median`` for the middle
    one of an odd count; ``only`` when there is a single trade. Fewer than 5 trades: all of them (lower half low,
    upper half high).

    Parameters
    ----------
    trades : list of dict
        Closed positions with ``position_id`` and ``realized_pnl_usd`` (USD, net of fees).

    Returns
    -------
    list of (str, dict)
        ``[(label, trade)]``: lowest first, then the median, then the highest (the very highest first).
    """
    ts = sorted(trades, key=lambda t: (fnum(t["realized_pnl_usd"]), t["position_id"]))
    n = len(ts)
    if n == 1:
        return [("only", ts[0])]
    if n <= 5:
        idx = list(range(n))
    else:
        mid = (n - 1) // 2  # the lower median of the sorted list; indices 0, 1, n-2, n-1 are taken
        idx = [0, 1, mid, n - 1, n - 2]  # best first among the highest, as before
    size = len(idx)
    out = []
    for j, i in enumerate(idx):
        pnl = fnum(ts[i]["realized_pnl_usd"])
        if size % 2 and j == size // 2:
            out.append(("median", ts[i]))
        else:
            out.append((_rank_label("low" if j < size // 2 else "high", pnl), ts[i]))
    return out


def _picks_heading(picked: int, closed: int) -> str:
    if closed == 0:
        return "## Trades investigated (none closed in the window)"
    if picked == closed:
        return f"## The {closed} trade{'s' if closed != 1 else ''} closed in the window (all investigated)"
    return f"## {picked} of the {closed} trades closed in the window (the 2 lowest, the median, the 2 highest P&L)"


def _title_label(label: str) -> str:
    return {"worst": "Worst trade", "best": "Best trade", "median": "Median trade", "lowest": "Lowest-P&L trade",
            "highest": "Highest-P&L trade", "only": "Only trade"}[label]


def _investigate_one(url: str, label: str, rank: int, trade: dict, run_id: str, out_dir: Path) -> dict:
    with connect(url) as conn:
        since = trade["opened_at"] - timedelta(hours=24)
        until = trade["closed_at"] + timedelta(hours=1)
        name = f"{rank}_{label}_{trade['symbol']}_pos{trade['position_id']}"
        res = write_investigation(conn, trade["symbol"], since=since, until=until, out_dir=out_dir, run_id=run_id,
                                  name=name, title=f"{_title_label(label)}: {trade['symbol']} position "
                                                   f"{trade['position_id']} ({trade['strategy_name']})")
    res.update(label=label, rank=rank, position_id=trade["position_id"])
    return res


def report_24h(as_of: datetime | None = None, *, run_id: str | None = None, workers: int = 3,
               url: str | None = None, out_dir: str | Path | None = None) -> dict:
    """Investigate up to 5 trades closed in the 24 h before ``as_of`` (:func:`pick_trades`: the 2 lowest, the
    median, the 2 highest realized P&L) in parallel and write an index whose figures reconcile
    (:func:`reconcile_24h`).

    ``as_of`` defaults to the run's last processed bar for replays (engine clock) and now for live runs.
    Investigations run in a thread pool of ``workers``, each with its own database connection. Output:
    ``reports/daily/<as_of date>_24h/{index.md,index.json,<rank>_<label>_<SYMBOL>_pos<id>.md/.json}``.
    Returns ``{index_path, index_json, report_paths, trades: [...], closed_trades, window: {start, end}, run_id,
    pnl, reconciliation}``. Raises AtsError when there is no engine run.
    """
    url = url or database_url()
    with connect(url) as conn:
        q = QueryLog(conn)
        run = resolve_run(conn, run_id)
        if run is None:
            raise AtsError("report 24h: no engine run in engine_runs (run `ats demo` or a replay first)")
        end = as_of or _default_as_of(conn, run)
        start = end - timedelta(hours=24)
        p = {"run_id": run["run_id"], "start": start, "end": end}
        trades = q.all("closed_trades_24h", """
            SELECT position_id, strategy_name, symbol, side, opened_at, closed_at, close_reason, entry_qty,
                   avg_entry_price, avg_exit_price, realized_pnl_usd, fees_usd
              FROM positions WHERE run_id = %(run_id)s AND status = 'closed'
               AND closed_at > %(start)s AND closed_at <= %(end)s
             ORDER BY realized_pnl_usd, position_id""", p)
        pnl = _snapshot_pnl(q, run["run_id"], start, end)
    picks = pick_trades(trades)
    d = Path(out_dir) if out_dir else paths.reports_dir() / "daily" / f"{end:%Y-%m-%d}_24h"
    d.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    with cf.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futs = [pool.submit(_investigate_one, url, label, i + 1, t, run["run_id"], d) for i, (label, t) in enumerate(picks)]
        for f in futs:
            results.append(f.result())
    results.sort(key=lambda r: r["rank"])
    by_pid = {t["position_id"]: t for t in trades}
    L = [f"# 24 h trade analysis: {iso(start)} .. {iso(end)}", "",
         f"- Run `{run['run_id']}` ({run['mode']}); window (engine clock, UTC) ({iso(start)}, {iso(end)}]  ",
         f"- Generated {iso(utcnow())} by `ats.forensics.periodic.report_24h`  ", ""]
    ref = _qref(q.entries)
    realized_trades = round(sum(fnum(t["realized_pnl_usd"]) for t in trades), 2)
    checks = reconcile_24h(pnl, realized_trades)
    L += ["## Summary", "", md_table(["Figure", "Value", "Query"], [
        ("Closed trades in window", len(trades), ref("closed_trades_24h")),
        ("Realized P&L of those trades (USD, net of fees)", money(realized_trades), ref("closed_trades_24h")),
        ("Equity change from snapshots (USD)", money(pnl["pnl_usd"]), ref("snapshot_window")),
        ("= realized P&L change from snapshots (USD)", money(pnl["realized_change_usd"]), ref("snapshot_window")),
        ("+ unrealized P&L change from snapshots (USD)", money(pnl["unrealized_change_usd"]), ref("snapshot_window")),
    ]), ""]
    L += _reconciliation_md(checks)
    L += [_picks_heading(len(results), len(trades)), ""]
    if not results:
        L.append("No trade closed in this window.")
    else:
        L.append("Labels by rank claim only what the data supports: *worst* is a loss and *best* a win; a "
                 "low-ranked trade that made money is *lowest P&L*, a high-ranked one that lost is *highest P&L*.")
        L.append("")
        L.append(md_table(["#", "Pick", "Symbol", "Position", "Strategy", "Closed", "Exit", "P&L USD", "Report"], [
            (r["rank"], LABEL_TEXT[r["label"]], r["symbol"], r["position_id"],
             by_pid[r["position_id"]]["strategy_name"],
             iso(by_pid[r["position_id"]]["closed_at"]), by_pid[r["position_id"]]["close_reason"],
             money(by_pid[r["position_id"]]["realized_pnl_usd"]),
             f"[{Path(r['md_path']).name}]({Path(r['md_path']).name})") for r in results]))
    L.append("")
    L += _appendix(q.entries)
    idx_md, idx_js = d / "index.md", d / "index.json"
    idx_md.write_text("\n".join(L) + "\n", encoding="utf-8")
    doc = {"run_id": run["run_id"], "window": {"start": start, "end": end}, "closed_trades": len(trades),
           "closed_trades_realized_pnl_usd": realized_trades, "pnl": pnl, "reconciliation": checks, "trades": [{**{k: by_pid[r["position_id"]][k] for k in by_pid[r["position_id"]]},
                                   "label": r["label"], "rank": r["rank"], "report": r["md_path"]} for r in results],
           "queries": q.entries}
    idx_js.write_text(dumps(doc) + "\n", encoding="utf-8")
    return jsonable({"index_path": str(idx_md), "index_json": str(idx_js),
                     "report_paths": [p for r in results for p in r["paths"]], "trades": doc["trades"],
                     "closed_trades": len(trades), "closed_trades_realized_pnl_usd": realized_trades,
                     "window": doc["window"], "run_id": run["run_id"], "pnl": pnl, "reconciliation": checks})


_STATE_COLS = "ts, equity_usd, realized_pnl_usd, unrealized_pnl_usd, fees_usd"


def _snapshot_pnl(q: QueryLog, run_id: str, start: datetime, end: datetime) -> dict:
    """P&L over (start, end] from snapshots only.

    One boundary rule for every report (as :mod:`ats.forensics.daily`): the state at a boundary is the last
    snapshot at or before it (the run's first snapshot when there is none). Every figure is the end state minus
    the start state, so ``pnl_usd = realized_change_usd + unrealized_change_usd`` (equity = initial capital +
    realized + unrealized) and the per-day rows of :func:`_daily_rows` add up to it.

    Returns
    -------
    dict
        ``pnl_usd, realized_change_usd, unrealized_change_usd, fees_change_usd, start_ts, end_ts,
        start_equity_usd, end_equity_usd`` (USD; all None when the run has no snapshot at or before ``end``).
    """
    row = q.one("snapshot_window", f"""
        WITH e AS (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots
                    WHERE run_id = %(run_id)s AND ts <= %(end)s ORDER BY ts DESC LIMIT 1),
             s AS (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots
                    WHERE run_id = %(run_id)s AND ts <= %(start)s ORDER BY ts DESC LIMIT 1),
             f AS (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots
                    WHERE run_id = %(run_id)s ORDER BY ts LIMIT 1),
             b AS (SELECT * FROM s UNION ALL SELECT * FROM f WHERE NOT EXISTS (SELECT 1 FROM s))
        SELECT e.ts AS end_ts, b.ts AS start_ts, e.equity_usd AS end_equity_usd, b.equity_usd AS start_equity_usd,
               e.equity_usd - b.equity_usd AS pnl_usd,
               e.realized_pnl_usd - b.realized_pnl_usd AS realized_change_usd,
               e.unrealized_pnl_usd - b.unrealized_pnl_usd AS unrealized_change_usd,
               e.fees_usd - b.fees_usd AS fees_change_usd
          FROM e CROSS JOIN b""", {"run_id": run_id, "start": start, "end": end})
    if row is None:
        return {"pnl_usd": None, "realized_change_usd": None, "unrealized_change_usd": None, "fees_change_usd": None,
                "start_ts": None, "end_ts": None, "start_equity_usd": None, "end_equity_usd": None}
    return {k: (fnum(v) if k.endswith("_usd") else v) for k, v in row.items()}


def _daily_rows(q: QueryLog, run_id: str, start: datetime, end: datetime) -> list[dict]:
    """One row per UTC day that overlaps (start, end], between the boundaries ``max(start, day 00:00)`` and
    ``min(end, next day 00:00)``, each state taken by the rule of :func:`_snapshot_pnl` -- so consecutive rows
    share a boundary and their changes add up to the window's exactly. Days before the run's first snapshot have
    no row."""
    rows = q.all("daily_pnl", f"""
        WITH bounds AS (
            SELECT d::date AS day,
                   greatest(d AT TIME ZONE 'UTC', %(start)s::timestamptz) AS b0,
                   least((d + interval '1 day') AT TIME ZONE 'UTC', %(end)s::timestamptz) AS b1
              FROM generate_series(date_trunc('day', %(start)s::timestamptz AT TIME ZONE 'UTC'),
                                   (%(end)s::timestamptz AT TIME ZONE 'UTC') - interval '1 microsecond',
                                   interval '1 day') AS d),
             f AS (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots
                    WHERE run_id = %(run_id)s ORDER BY ts LIMIT 1)
        SELECT b.day, b.b0 AS day_start, b.b1 AS day_end, coalesce(s0.ts, f.ts) AS start_ts, s1.ts AS end_ts,
               coalesce(s0.equity_usd, f.equity_usd) AS start_equity_usd, s1.equity_usd AS equity_usd,
               s1.equity_usd - coalesce(s0.equity_usd, f.equity_usd) AS equity_change_usd,
               s1.realized_pnl_usd - coalesce(s0.realized_pnl_usd, f.realized_pnl_usd) AS realized_change_usd,
               s1.unrealized_pnl_usd - coalesce(s0.unrealized_pnl_usd, f.unrealized_pnl_usd) AS unrealized_change_usd,
               s1.fees_usd - coalesce(s0.fees_usd, f.fees_usd) AS fees_change_usd
          FROM bounds b CROSS JOIN f
          JOIN LATERAL (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots WHERE run_id = %(run_id)s
                          AND ts <= b.b1 ORDER BY ts DESC LIMIT 1) s1 ON true
          LEFT JOIN LATERAL (SELECT {_STATE_COLS} FROM portfolio_hourly_snapshots WHERE run_id = %(run_id)s
                               AND ts <= b.b0 ORDER BY ts DESC LIMIT 1) s0 ON true
         ORDER BY b.day""", {"run_id": run_id, "start": start, "end": end})
    return [{k: (fnum(v) if k.endswith("_usd") else v) for k, v in r.items()} for r in rows]


# ---------------------------------------------------------------------------------------------------------
# reconciliation: every report whose figures are parts of a whole says whether the parts add up

CENT = 0.005  # USD: figures are printed to the cent


def check(name: str, parts: float | None, whole: float | None, *, tolerance: float = CENT) -> dict:
    """One reconciliation line: ``parts`` (a sum of figures of the report) against ``whole`` (its total).

    Returns
    -------
    dict
        ``{name, parts, whole, diff, ok}``; ``ok`` True when ``|parts - whole| <= tolerance`` (both None: True).
    """
    if parts is None or whole is None:
        return {"name": name, "parts": parts, "whole": whole, "diff": None, "ok": parts is None and whole is None}
    diff = round(parts - whole, 6)
    return {"name": name, "parts": round(parts, 6), "whole": round(whole, 6), "diff": diff,
            "ok": abs(diff) <= tolerance}


def _sum(xs) -> float:
    return sum(fnum(x) or 0.0 for x in xs)


def reconcile_24h(pnl: dict, realized_trades: float) -> list[dict]:
    """The 24 h report's parts: equity change = realized change + unrealized change (snapshots). The realized
    P&L of the trades closed in the window is shown beside the snapshots' realized change with its gap (adds and
    partial closes realize P&L outside a position's close; when they differ the snapshots win, CLAUDE.md)."""
    out = [check("equity change = realized change + unrealized change (snapshots)",
                 None if pnl["pnl_usd"] is None else _sum([pnl["realized_change_usd"], pnl["unrealized_change_usd"]]),
                 pnl["pnl_usd"])]
    info = check("realized P&L of closed trades vs realized change from snapshots", realized_trades,
                 pnl["realized_change_usd"])
    out.append({**info, "ok": None if not info["ok"] else True, "informational": True})
    return out


def reconcile_weekly(pnl: dict, daily: list[dict], strategies: list[dict], totals: dict, blocked: dict) -> list[dict]:
    """The weekly report's parts: daily rows vs the headline (equity, realized, fees), equity change = realized
    + unrealized, per-strategy rows vs the all-trades totals (trades, wins, realized, fees), blocked signals by
    gate vs their total. Every ``ok`` must be True."""
    return [
        check("sum of daily equity changes = P&L (equity change)", _sum(d["equity_change_usd"] for d in daily)
              if daily else None, pnl["pnl_usd"]),
        check("sum of daily realized changes = realized P&L change", _sum(d["realized_change_usd"] for d in daily)
              if daily else None, pnl["realized_change_usd"]),
        check("sum of daily fees = fees paid", _sum(d["fees_change_usd"] for d in daily) if daily else None,
              pnl["fees_change_usd"]),
        check("equity change = realized change + unrealized change",
              None if pnl["pnl_usd"] is None else _sum([pnl["realized_change_usd"], pnl["unrealized_change_usd"]]),
              pnl["pnl_usd"]),
        check("per-strategy trades = all closed trades", _sum(s["trades"] for s in strategies), fnum(totals["trades"]),
              tolerance=0),
        check("per-strategy wins = all wins", _sum(s["wins"] for s in strategies), fnum(totals["wins"]), tolerance=0),
        check("per-strategy realized = realized of all closed trades", _sum(s["realized_pnl_usd"] for s in strategies),
              fnum(totals["realized_pnl_usd"]) or 0.0),
        check("per-strategy fees = fees of all closed trades", _sum(s["fees_usd"] for s in strategies),
              fnum(totals["fees_usd"]) or 0.0),
        check("blocked signals by gate = blocked total", _sum(blocked["by_gate"].values()), fnum(blocked["total"]),
              tolerance=0),
    ]


def _reconciliation_md(checks: list[dict]) -> list[str]:
    rows = []
    for c in checks:
        verdict = ("info: the snapshots win" if c.get("informational") and c["ok"] is None
                   else ("ok" if c["ok"] else "**DOES NOT RECONCILE**"))
        rows.append((c["name"], "n/a" if c["parts"] is None else f"{c['parts']:,.2f}",
                     "n/a" if c["whole"] is None else f"{c['whole']:,.2f}",
                     "" if c["diff"] is None else f"{round(c['diff'], 2) or 0.0:+,.2f}", verdict))
    return ["## Reconciliation", "", md_table(["Parts = whole", "Parts", "Whole", "Difference", "Verdict"], rows), ""]


# ---------------------------------------------------------------------------------------------------------
# weekly

def report_weekly(conn: psycopg.Connection, as_of: datetime | None = None, *, run_id: str | None = None,
                  days: int = 7, out_dir: str | Path | None = None) -> dict:
    """Weekly trading report: P&L from snapshots, daily P&L, per-strategy statistics, blocked signals by
    reason, breaker trips, and a PNG equity curve (matplotlib, Agg backend) linked from the markdown.

    Window: (as_of - days, as_of], ``as_of`` defaulting to the run's last snapshot / last bar. One boundary rule
    (:func:`_snapshot_pnl`) for the headline and the per-day rows, so the days add up to the week; the report
    ends with :func:`reconcile_weekly`. Writes ``reports/weekly/<as_of date>_weekly.{md,json,png}``. Returns
    ``{paths, md_path, json_path, png_path, window, pnl, daily, strategies, strategy_totals, reconciliation,
    blocked, breaker_trips}``. Raises AtsError when there is no engine run.
    """
    q = QueryLog(conn)
    run = resolve_run(conn, run_id)
    if run is None:
        raise AtsError("report weekly: no engine run in engine_runs (run `ats demo` or a replay first)")
    end = as_of or _default_as_of(conn, run)
    start = end - timedelta(days=days)
    p = {"run_id": run["run_id"], "start": start, "end": end}
    pnl = _snapshot_pnl(q, run["run_id"], start, end)
    daily = _daily_rows(q, run["run_id"], start, end)
    curve = q.all("equity_curve", """
        SELECT ts, equity_usd, realized_pnl_usd, unrealized_pnl_usd FROM portfolio_hourly_snapshots
         WHERE run_id = %(run_id)s AND ts > %(start)s AND ts <= %(end)s ORDER BY ts""", p)
    max_dd = 0.0
    peak = None
    for c in curve:
        e = fnum(c["equity_usd"])
        peak = e if peak is None else max(peak, e)
        if peak:
            max_dd = max(max_dd, (peak - e) / peak * 100.0)
    strategies = q.all("strategy_stats", """
        SELECT strategy_name, count(*) AS trades,
               count(*) FILTER (WHERE realized_pnl_usd > 0) AS wins,
               round(100.0 * count(*) FILTER (WHERE realized_pnl_usd > 0) / count(*), 1) AS win_rate_pct,
               sum(realized_pnl_usd) AS realized_pnl_usd, avg(realized_pnl_usd) AS avg_pnl_usd,
               max(realized_pnl_usd) AS best_usd, min(realized_pnl_usd) AS worst_usd, sum(fees_usd) AS fees_usd,
               round(avg(extract(epoch FROM closed_at - opened_at) / 3600.0)::numeric, 1) AS avg_hold_hours
          FROM positions WHERE run_id = %(run_id)s AND status = 'closed' AND closed_at > %(start)s AND closed_at <= %(end)s
         GROUP BY strategy_name ORDER BY sum(realized_pnl_usd) DESC""", p)
    totals = q.one("closed_trade_totals", """
        SELECT count(*) AS trades, count(*) FILTER (WHERE realized_pnl_usd > 0) AS wins,
               sum(realized_pnl_usd) AS realized_pnl_usd, sum(fees_usd) AS fees_usd
          FROM positions WHERE run_id = %(run_id)s AND status = 'closed' AND closed_at > %(start)s AND closed_at <= %(end)s""",
                   p)
    blocked = blocked_signals(conn, start, until=end, run_id=run["run_id"], limit=1)
    trips = q.all("breaker_trips", """
        SELECT ts, coalesce(payload->>'breaker', payload->>'name') AS breaker, coalesce(payload->>'scope', symbol, '*') AS scope,
               coalesce(payload->>'cause', payload->>'reason') AS cause
          FROM system_events WHERE event_type = 'breaker_tripped' AND ts > %(start)s AND ts <= %(end)s
           AND (payload->>'run_id' IS NULL OR payload->>'run_id' = %(run_id)s)
         ORDER BY ts""", p)
    d = Path(out_dir) if out_dir else paths.reports_dir() / "weekly"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{end:%Y-%m-%d}_weekly"
    png = d / f"{stem}_equity.png"
    _equity_png(curve, png, title=f"Equity, run {run['run_id']}: {start:%Y-%m-%d} .. {end:%Y-%m-%d} (UTC)")
    ref = _qref(q.entries + blocked["queries"])
    all_q = q.entries + blocked["queries"]
    L = [f"# Weekly trading report: {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC", "",
         f"- Run `{run['run_id']}` ({run['mode']}), account `{run['account_id']}`  ",
         f"- Generated {iso(utcnow())} by `ats.forensics.periodic.report_weekly`  ",
         "- P&L comes from portfolio_hourly_snapshots only (equity differences). Never sum balances; never sum "
         "net_pnl_daily_usd (running cumulative since 00:00 UTC) - see CLAUDE.md anti-patterns.", "",
         "## P&L", "", md_table(["Figure", "Value", "Query"], [
             ("Equity at start (USD)", usd(pnl["start_equity_usd"]), ref("snapshot_window")),
             ("Equity at end (USD)", usd(pnl["end_equity_usd"]), ref("snapshot_window")),
             ("P&L, equity change (USD)", money(pnl["pnl_usd"]), ref("snapshot_window")),
             ("Realized P&L change (USD, net of fees)", money(pnl["realized_change_usd"]), ref("snapshot_window")),
             ("Fees paid (USD)", usd(pnl["fees_change_usd"]), ref("snapshot_window")),
             ("Max drawdown within the week (% of peak equity)", f"{max_dd:.2f}", ref("equity_curve")),
         ]), "", f"![equity curve]({png.name})", "",
         "### Daily", "",
         "Each day runs from max(window start, 00:00 UTC) to min(window end, next 00:00 UTC); the state at a "
         "boundary is the last snapshot at or before it (the rule of the headline and of `ats report daily`), so "
         "the days add up to the week.", "",
         md_table(["Day (UTC)", "From snapshot", "To snapshot", "Equity USD", "Equity change USD",
                   "Realized change USD", "Unrealized change USD", "Fees USD"],
                  [(x["day"], iso(x["start_ts"]), iso(x["end_ts"]), usd(x["equity_usd"]),
                    money(x["equity_change_usd"]), money(x["realized_change_usd"]),
                    money(x["unrealized_change_usd"]), usd(x["fees_change_usd"])) for x in daily]
                  + [("**week**", iso(pnl["start_ts"]), iso(pnl["end_ts"]), usd(pnl["end_equity_usd"]),
                      money(pnl["pnl_usd"]), money(pnl["realized_change_usd"]), money(pnl["unrealized_change_usd"]),
                      usd(pnl["fees_change_usd"]))])
         + "\n\nSource:" + ref("daily_pnl", "snapshot_window"), "",
         "## Per-strategy statistics (trades closed in the week)", ""]
    if strategies:
        L.append(md_table(["Strategy", "Trades", "Wins", "Win rate %", "Realized USD", "Avg USD", "Best USD",
                           "Worst USD", "Fees USD", "Avg hold h"],
                          [(s["strategy_name"], s["trades"], s["wins"], fnum(s["win_rate_pct"]), money(s["realized_pnl_usd"]),
                            money(s["avg_pnl_usd"]), money(s["best_usd"]), money(s["worst_usd"]),
                            usd(s["fees_usd"]), fnum(s["avg_hold_hours"])) for s in strategies]
                          + [("**all**", totals["trades"], totals["wins"], "", money(totals["realized_pnl_usd"]), "", "",
                              "", usd(totals["fees_usd"]), "")])
                 + "\n\nSource:" + ref("strategy_stats", "closed_trade_totals"))
    else:
        L.append("No trade closed this week.")
    L += ["", "## Blocked signals by reason", "", f"{blocked['total']} signal(s) blocked" + ref("blocked_counts"), ""]
    if blocked["by_gate"]:
        L.append(md_table(["Gate", "Count"], list(blocked["by_gate"].items())))
        L.append("")
        L.append(md_table(["Gate: reason", "Count"], list(blocked["by_reason"].items())[:25]))
    L += ["", "## Circuit-breaker trips", ""]
    if trips:
        L.append(md_table(["Time", "Breaker", "Scope", "Cause"], [(iso(t["ts"]), t["breaker"], t["scope"], t["cause"])
                                                                 for t in trips]) + "\n\nSource:" + ref("breaker_trips"))
    else:
        L.append("No breaker tripped this week.")
    L.append("")
    checks = reconcile_weekly(pnl, daily, strategies, totals, blocked)
    L += _reconciliation_md(checks)
    L += _appendix(all_q)
    md, js = d / f"{stem}.md", d / f"{stem}.json"
    md.write_text("\n".join(L) + "\n", encoding="utf-8")
    doc = {"run_id": run["run_id"], "window": {"start": start, "end": end}, "pnl": pnl, "max_drawdown_pct": max_dd,
           "daily": daily, "strategies": strategies, "strategy_totals": totals, "reconciliation": checks,
           "blocked": {k: blocked[k] for k in ("total", "by_gate", "by_reason", "by_strategy", "by_symbol")},
           "breaker_trips": trips, "equity_png": png.name, "queries": all_q}
    js.write_text(dumps(doc) + "\n", encoding="utf-8")
    return jsonable({**doc, "paths": [str(md), str(js), str(png)], "md_path": str(md), "json_path": str(js),
                     "png_path": str(png)})


def _equity_png(curve: list[dict], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    if curve:
        ax.plot([c["ts"] for c in curve], [fnum(c["equity_usd"]) for c in curve], lw=1.4, color="#1f77b4",
                label="equity (USD)")
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no snapshots in this window", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_ylabel("USD")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# watchlist

_TF_PREFERENCE = ["1h", "4h", "1d", "15m", "5m", "1w"]


def watchlist_symbols(conn: psycopg.Connection, run: dict | None, as_of: datetime) -> tuple[list[str], str]:
    """The watchlist in force at ``as_of`` and where it came from: system setting ``watchlist`` (a JSON list of
    symbols, as of ``as_of``), else the run's ``params.symbols``, else every symbol a watchlist-enabled strategy
    signalled on in the 7 days before ``as_of``."""
    from ..db import config_store as cs

    acct = run["account_id"] if run else "default"
    val = cs.setting_as_of(conn, "watchlist", as_of, account_id=acct)
    if isinstance(val, dict):
        val = val.get("symbols")
    if isinstance(val, list) and val:  # a list of symbols, or of {symbol, timeframe, source} (market data backfill)
        syms = {str(s.get("symbol") if isinstance(s, dict) else s).upper() for s in val}
        syms.discard("NONE")
        return sorted(syms), "system setting 'watchlist'"
    if run and isinstance(run.get("params"), dict) and run["params"].get("symbols"):
        return sorted({str(s).upper() for s in run["params"]["symbols"]}), f"engine run {run['run_id']} params.symbols"
    rows = conn.execute("""SELECT DISTINCT symbol FROM signals WHERE ts > %s AND ts <= %s ORDER BY symbol""",
                        (as_of - timedelta(days=7), as_of)).fetchall()
    return [r["symbol"] for r in rows], "symbols signalled in the window"


def report_watchlist(conn: psycopg.Connection, as_of: datetime | None = None, *, run_id: str | None = None,
                     top: int = 10, out_dir: str | Path | None = None, rank_top: int = 5) -> dict:
    """Watchlist capture vs the top ``top`` 7-day gainers in the candle store.

    Gain per symbol = last close at or before ``as_of`` / last close at or before ``as_of - 7 d`` - 1 (percent),
    from the symbol's finest stored timeframe among 1h, 4h, 1d (then 15m, 5m, 1w). For each top gainer: on the
    watchlist?, signals (accepted / blocked) and positions opened in the window, realized P&L of positions closed
    in the window. ``captured`` = top gainers with a position opened in the window.

    From ``watchlist_scores`` (the hourly per-strategy scores, ``ats watchlist score``; account of the run, else
    ``default``), per top gainer: hours scored in the window, best rank and hours in the top ``rank_top`` of the
    ranked watchlist (``ats.strategies.watchlist.RANK_SQL``: best strategy score, then total), max score and the
    strategy behind it, and the first hour it entered the top ``rank_top``. ``score_captured`` = top gainers ranked
    in the top ``rank_top`` at least once in the window; ``score_capture_rate`` = that / top gainers (None when no
    score was stored for the window: the section says so). Writes ``reports/watchlist/<as_of date>_watchlist.{md,json}``.
    Returns ``{paths, top_gainers, watchlist, watchlist_source, captured, watched, signalled, window, scores}``.
    """
    q = QueryLog(conn)
    run = resolve_run(conn, run_id)
    if as_of is None:
        if run is not None:
            as_of = _default_as_of(conn, run)
        else:
            row = conn.execute("SELECT max(open_time) AS t FROM candles").fetchone()
            if not row or row["t"] is None:
                raise AtsError("report watchlist: the candle store is empty (load candles first)")
            as_of = row["t"]
    start = as_of - timedelta(days=7)
    p = {"as_of": as_of, "start": start, "pref": _TF_PREFERENCE, "run_id": run["run_id"] if run else None}
    gainers = q.all("top_gainers_7d", """
        WITH tf AS (
            SELECT symbol, (array_agg(timeframe ORDER BY array_position(%(pref)s::text[], timeframe)))[1] AS timeframe
              FROM (SELECT DISTINCT symbol, timeframe FROM candles) d GROUP BY symbol),
        last AS (
            SELECT DISTINCT ON (c.symbol) c.symbol, c.timeframe, c.open_time, c.close FROM candles c
              JOIN tf ON tf.symbol = c.symbol AND tf.timeframe = c.timeframe
             WHERE c.open_time <= %(as_of)s ORDER BY c.symbol, c.open_time DESC, c.source),
        first AS (
            SELECT DISTINCT ON (c.symbol) c.symbol, c.open_time, c.close FROM candles c
              JOIN tf ON tf.symbol = c.symbol AND tf.timeframe = c.timeframe
             WHERE c.open_time <= %(start)s ORDER BY c.symbol, c.open_time DESC, c.source)
        SELECT l.symbol, l.timeframe, f.open_time AS start_time, f.close AS start_close, l.open_time AS end_time,
               l.close AS end_close, round((l.close / nullif(f.close, 0) - 1) * 100, 4) AS gain_pct
          FROM last l JOIN first f ON f.symbol = l.symbol
         WHERE l.open_time > %(start)s AND f.close > 0
         ORDER BY gain_pct DESC, l.symbol""", p)
    ranked = gainers[:max(1, top)]
    wl, wl_source = watchlist_symbols(conn, run, as_of)
    syms = [g["symbol"] for g in ranked]
    p["symbols"] = syms
    act = {r["symbol"]: r for r in q.all("activity_7d", """
        SELECT s.symbol,
               (SELECT count(*) FROM signals x WHERE x.symbol = s.symbol AND x.ts > %(start)s AND x.ts <= %(as_of)s
                  AND x.status = 'accepted' AND (%(run_id)s::text IS NULL OR x.run_id = %(run_id)s)) AS accepted_signals,
               (SELECT count(*) FROM blocked_signals b WHERE b.symbol = s.symbol AND b.ts > %(start)s AND b.ts <= %(as_of)s
                  AND (%(run_id)s::text IS NULL OR b.run_id = %(run_id)s)) AS blocked_signals,
               (SELECT count(*) FROM positions o WHERE o.symbol = s.symbol AND o.opened_at > %(start)s
                  AND o.opened_at <= %(as_of)s AND (%(run_id)s::text IS NULL OR o.run_id = %(run_id)s)) AS positions_opened,
               (SELECT coalesce(sum(realized_pnl_usd), 0) FROM positions o WHERE o.symbol = s.symbol AND o.status = 'closed'
                  AND o.closed_at > %(start)s AND o.closed_at <= %(as_of)s
                  AND (%(run_id)s::text IS NULL OR o.run_id = %(run_id)s)) AS realized_pnl_usd
          FROM unnest(%(symbols)s::text[]) AS s(symbol)""", p)} if syms else {}
    rows = []
    for g in ranked:
        a = act.get(g["symbol"], {})
        rows.append({**g, "on_watchlist": g["symbol"] in wl, "accepted_signals": int(a.get("accepted_signals") or 0),
                     "blocked_signals": int(a.get("blocked_signals") or 0),
                     "positions_opened": int(a.get("positions_opened") or 0),
                     "realized_pnl_usd": fnum(a.get("realized_pnl_usd") or 0)})
    scores = _watchlist_score_capture(q, run, syms, start, as_of, rank_top)
    for r in rows:
        r["score"] = scores["by_symbol"].get(r["symbol"])
    captured = sum(1 for r in rows if r["positions_opened"] > 0)
    watched = sum(1 for r in rows if r["on_watchlist"])
    signalled = sum(1 for r in rows if r["accepted_signals"] + r["blocked_signals"] > 0)
    d = Path(out_dir) if out_dir else paths.reports_dir() / "watchlist"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{as_of:%Y-%m-%d}_watchlist"
    ref = _qref(q.entries)
    L = [f"# Watchlist health: capture vs top 7-day gainers ({start:%Y-%m-%d %H:%M} .. {as_of:%Y-%m-%d %H:%M} UTC)", "",
         f"- Watchlist ({len(wl)} symbols, from {wl_source}): {', '.join(wl) or 'empty'}  ",
         f"- Run: `{run['run_id'] if run else 'none'}`; generated {iso(utcnow())} by "
         "`ats.forensics.periodic.report_watchlist`  ", "",
         "## Summary", "", md_table(["Figure", "Value", "Query"], [
             (f"Top gainers compared", len(rows), ref("top_gainers_7d")),
             ("On the watchlist", f"{watched} / {len(rows)}", ref("top_gainers_7d")),
             ("Signalled (accepted or blocked)", f"{signalled} / {len(rows)}", ref("activity_7d")),
             ("Captured (position opened in the window)", f"{captured} / {len(rows)}", ref("activity_7d")),
             ("Realized P&L on top gainers (USD)", money(sum(r["realized_pnl_usd"] for r in rows)), ref("activity_7d")),
         ]), "", "## Top gainers", "",
         md_table(["#", "Symbol", "TF", "7-day gain %", "Watchlist", "Accepted signals", "Blocked signals",
                   "Positions opened", "Realized USD"],
                  [(i + 1, r["symbol"], r["timeframe"], f"{fnum(r['gain_pct']):+.2f}", "yes" if r["on_watchlist"] else "NO",
                    r["accepted_signals"], r["blocked_signals"], r["positions_opened"], money(r["realized_pnl_usd"]))
                   for i, r in enumerate(rows)]), ""]
    L += _score_section(scores, rows, rank_top, ref)
    missed = [r["symbol"] for r in rows if not r["on_watchlist"]]
    if missed:
        L += [f"Not on the watchlist although among the top gainers: {', '.join(missed)}.", ""]
    blocked_only = [r["symbol"] for r in rows if r["on_watchlist"] and r["positions_opened"] == 0 and r["blocked_signals"]]
    if blocked_only:
        L += [f"Watched and signalled but every entry blocked: {', '.join(blocked_only)} (see `ats investigate`).", ""]
    L += _appendix(q.entries)
    md, js = d / f"{stem}.md", d / f"{stem}.json"
    md.write_text("\n".join(L) + "\n", encoding="utf-8")
    doc = {"window": {"start": start, "end": as_of}, "run_id": p["run_id"], "watchlist": wl,
           "watchlist_source": wl_source, "top_gainers": rows, "captured": captured, "watched": watched,
           "signalled": signalled, "scores": {k: v for k, v in scores.items() if k != "by_symbol"},
           "queries": q.entries}
    js.write_text(dumps(doc) + "\n", encoding="utf-8")
    return jsonable({**doc, "paths": [str(md), str(js)], "md_path": str(md), "json_path": str(js)})


def _watchlist_score_capture(q: QueryLog, run: dict | None, syms: list[str], start: datetime, as_of: datetime,
                             rank_top: int) -> dict:
    """Capture of the top gainers by the ranked watchlist in ``watchlist_scores`` (see :func:`report_watchlist`)."""
    from ..strategies.watchlist import RANK_SQL

    acct = run["account_id"] if run else "default"
    p = {"account": acct, "lo": start, "hi": as_of, "symbols": syms, "k": rank_top}
    hours = q.one("watchlist_scores_hours", """SELECT count(DISTINCT ts) AS hours, count(*) AS rows,
               count(DISTINCT symbol) AS symbols, count(DISTINCT strategy) AS strategies
          FROM watchlist_scores WHERE account_id = %(account)s AND ts > %(lo)s AND ts <= %(hi)s""", p) or {}
    per = q.all("watchlist_score_capture", f"""
        WITH ranked AS ({RANK_SQL})
        SELECT symbol, count(*) AS hours_scored, min(rnk) AS best_rank,
               count(*) FILTER (WHERE rnk <= %(k)s) AS hours_in_top, max(score) AS max_score,
               (array_agg(best_strategy ORDER BY score DESC, ts))[1] AS max_strategy,
               min(ts) FILTER (WHERE rnk <= %(k)s) AS first_in_top
          FROM ranked WHERE symbol = ANY(%(symbols)s::text[]) GROUP BY symbol ORDER BY symbol""", p) if syms else []
    by = {r["symbol"]: {"hours_scored": int(r["hours_scored"]), "best_rank": int(r["best_rank"]),
                        "hours_in_top": int(r["hours_in_top"]), "max_score": round(float(r["max_score"]), 4),
                        "max_strategy": r["max_strategy"], "first_in_top": r["first_in_top"]} for r in per}
    n_hours = int(hours.get("hours") or 0)
    captured = sum(1 for s in syms if by.get(s, {}).get("hours_in_top", 0) > 0)
    return {"account_id": acct, "rank_top": rank_top, "hours": n_hours, "rows": int(hours.get("rows") or 0),
            "strategies": int(hours.get("strategies") or 0), "score_captured": captured if n_hours else None,
            "score_capture_rate": round(captured / len(syms), 4) if n_hours and syms else None, "by_symbol": by}


def _score_section(scores: dict, rows: list[dict], rank_top: int, ref) -> list[str]:
    L = ["## Capture by the ranked watchlist (watchlist_scores)", ""]
    if not scores["hours"]:
        return L + [f"No watchlist scores stored for account `{scores['account_id']}` in this window: run "
                    "`ats watchlist score --since ... --until ...` (hourly timer or by hand), then re-run.", ""]
    L += [f"{scores['hours']} scored hours, {scores['strategies']} strategies, {scores['rows']} rows"
          f"{ref('watchlist_scores_hours')}. Captured = ranked in the top {rank_top} at least once in the window.",
          "", f"**Score capture: {scores['score_captured']} / {len(rows)} top gainers "
          f"({scores['score_capture_rate']:.0%})**{ref('watchlist_score_capture')}", "",
          md_table(["Symbol", "7-day gain %", "Hours scored", "Best rank", f"Hours in top {rank_top}", "Max score",
                    "Strategy", f"First in top {rank_top} (UTC)"],
                   [(r["symbol"], f"{fnum(r['gain_pct']):+.2f}", *((s["hours_scored"], s["best_rank"],
                     s["hours_in_top"], f"{s['max_score']:.1f}", s["max_strategy"],
                     iso(s["first_in_top"]) if s["first_in_top"] else "never") if (s := r.get("score")) else
                     (0, "-", 0, "-", "-", "not scored"))) for r in rows]), ""]
    return L
