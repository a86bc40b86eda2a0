"""`ats investigate SYMBOL`: a forensic report (markdown + JSON twin) on one symbol's lifecycle.

The content comes from :func:`ats.forensics.queries.investigate_symbol`; this module only renders it.
Sections: summary, timeline, trades (each entry and exit with the signal, the configuration / gates in force
and the breakers), blocked signals and why, the lessons consulted before each entry (ids + scores, from
``signals.context.lessons``) and the lesson / consensus blocks, breaker windows, P&L reconciliation against the
hourly snapshots, anomalies, open questions, and an appendix with every query that reproduces a figure
(parameters inlined). The JSON twin carries the same lessons view under ``lessons_consulted``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from .. import paths
from ..timeutil import utcnow
from .queries import investigate_symbol
from .sqlfmt import dumps, md_table, money

# The markdown timeline lists at most this many entries (blocked signals are already aggregated per day and
# gate); the JSON twin always holds the full timeline.
TIMELINE_MAX = 400


def _short_ts(s: str | None) -> str:
    if not s:
        return ""
    return (s[:16].replace("T", " ") + "Z") if len(s) >= 16 else s


def _f(v: Any, nd: int = 6) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}g}" if abs(v) < 1e6 else f"{v:,.2f}"
    return str(v)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


class _Refs:
    """``ref("q1", "q2")`` -> `` [Q3, Q7]``: the appendix numbers of the named queries that ran."""

    def __init__(self, queries: list[dict]) -> None:
        self._n = {q["name"]: i + 1 for i, q in enumerate(queries)}

    def __call__(self, *names: str) -> str:
        got = [f"Q{self._n[n]}" for n in names if n in self._n]
        return f" [{', '.join(got)}]" if got else ""


def render_investigation(r: dict, *, title: str | None = None) -> str:
    """Render an ``investigate_symbol`` result as markdown (every figure traceable to an appendix query).

    Parameters
    ----------
    r : dict
        The result of :func:`ats.forensics.queries.investigate_symbol`.
    title : str, optional
        First heading (default ``Investigation: <SYMBOL>``).

    Returns
    -------
    str
        Markdown: header, summary, timeline, trades, blocked signals, reconciliation, anomalies, open questions
        and the appendix of queries (no trailing newline).
    """
    run = r.get("run") or {}
    ref = _Refs(r.get("queries", []))
    L = _header(r, run, title)
    if not run:
        L.append("No engine run has any signal, blocked signal or position for this symbol.")
        L.append("")
        L += ["## Open questions", ""] + [f"- {q}" for q in r.get("open_questions", [])] + [""]
        return "\n".join(L)
    for section in (_summary_section, _timeline_section, _trades_section, _blocked_section, _lessons_section,
                    _reconciliation_section, _anomalies_section, _questions_and_appendix):
        L += section(r, ref)
    return "\n".join(L)


def _header(r: dict, run: dict, title: str | None) -> list[str]:
    """Title and the run / window / provenance lines."""
    sym = r["symbol"]
    L: list[str] = []
    L.append(f"# {title or 'Investigation: ' + sym}")
    L.append("")
    window = f"{r.get('since') or 'run start'} .. {r.get('until') or 'run end'}"
    L.append(f"- Symbol: **{sym}**  ")
    L.append(f"- Engine run: `{run.get('run_id', 'none')}` ({run.get('mode', '-')}, {run.get('status', '-')}), "
             f"account `{r.get('account_id') or '-'}`  ")
    L.append(f"- Window (engine clock, UTC): {window}  ")
    L.append(f"- Generated: {r.get('generated_at')} by `ats.forensics.investigate` (deterministic; an agent may "
             f"append judgement below the Open questions)")
    L.append("")
    return L


def _summary_section(r: dict, ref: "_Refs") -> list[str]:
    """The figures table, each with the queries behind it."""
    pnl = r["pnl"]
    c = r["counts"]
    rec = r["reconciliation"]
    bs = r["blocked_summary"]
    L = ["## Summary", ""]
    rows = [
        ("Signals (accepted / blocked)", f"{c['accepted']} / {c['blocked']}", ref("signals", "blocked_signals")),
        ("Orders / fills", f"{c['orders']} / {c['fills']}", ref("orders", "fills")),
        ("Positions (closed / open)", f"{c['closed']} / {c['open']}", ref("positions")),
        ("Closed trades in window", pnl["closed_trades"], ref("pnl_summary")),
        ("Realized P&L, net of fees (USD)", money(pnl["realized_pnl_usd"]), ref("pnl_summary")),
        ("Fees on closed trades (USD)", money(pnl["fees_usd"]), ref("pnl_summary")),
        ("Wins / losses", f"{pnl['wins']} / {pnl['losses']}", ref("pnl_summary")),
        ("Breakers that blocked signals", ", ".join(bs["breakers"]) or "none", ref("blocked_by_day_gate")),
        ("P&L reconciled with snapshots", _recon_word(rec),
         ref("snapshot_end", "trades_in_snapshot_interval", "snapshot_symbol_pnl_by_deltas")),
        ("Anomalies", len(r["anomalies"]), ""),
    ]
    L.append(md_table(["Figure", "Value", "Query"], rows))
    L.append("")
    return L


def _timeline_section(r: dict, ref: "_Refs") -> list[str]:
    """The first TIMELINE_MAX timeline entries (the JSON twin has them all)."""
    L = ["## Timeline", ""]
    tl = r["timeline"]
    shown = tl[:TIMELINE_MAX]
    L.append(md_table(["Time (UTC)", "Kind", "What", "Ref"],
                      [(_short_ts(e["ts"]), e["kind"], e["text"], e["ref"]) for e in shown]))
    if len(tl) > len(shown):
        L.append("")
        L.append(f"_{len(tl) - len(shown)} later entries omitted here; the JSON twin has the full timeline._")
    L.append("")
    return L


def _trades_section(r: dict, ref: "_Refs") -> list[str]:
    """One subsection per position: entry (signal, gates, breakers, TP/SL), exit, P&L, fills."""
    L = ["## Trades: entries and exits", ""]
    if not r["trades"]:
        L.append("No positions in this window.")
        L.append("")
    for t in r["trades"]:
        L += _trade_lines(t, r["symbol"], ref)
    return L


def _trade_lines(t: dict, sym: str, ref: "_Refs") -> list[str]:
    """The lines of one position's subsection."""
    L: list[str] = []
    L.append(f"### Position {t['position_id']}: {t['strategy_name']} {t['side']} "
             f"({t['status']}{', ' + t['close_reason'] if t.get('close_reason') else ''})")
    L.append("")
    es, cfg = t.get("entry_signal"), t.get("entry_config")
    L.append(f"- **Entry** {_short_ts(t['opened_at'])} @ {_f(t['entry_price'])}, qty {_f(t['qty'])} "
             f"(notional {_usd(t.get('entry_notional_usd'))} USD){ref('positions')}")
    if es:
        ctx = json.dumps(es.get("context") or {}, sort_keys=True)[:300]
        L.append(f"  - signal #{es['signal_id']} at {_short_ts(es['ts'])}: {es['side']} {es['intent']} "
                 f"@ {_f(es['price'])}, strength {_f(es.get('strength'), 3)}, regime {es.get('regime') or 'n/a'}, "
                 f"context `{ctx}`{ref('signals', 'referenced_signals')}")
    else:
        L.append("  - no entry signal recorded (manual or pre-run position?)")
    if cfg:
        params = json.dumps(cfg.get("params") or {}, sort_keys=True)[:400]
        L.append(f"  - gates in force (config valid from {_short_ts(cfg.get('valid_from'))}): watchlist "
                 f"{_onoff(cfg['watchlist_enabled'])}, buy {_onoff(cfg['buy_enabled'])}, sell "
                 f"{_onoff(cfg['sell_enabled'])}; params `{params}`")
    else:
        L.append("  - no strategy configuration in force at entry (strategy_configurations_history)")
    L.append(f"  - breakers tripped at entry: {', '.join(t['breakers_at_entry']) or 'none'}")
    if t["targets"]:
        tg = "; ".join(f"{_short_ts(x['ts'])} {x['reason']}: TP {_f(x['tp_price'])} SL {_f(x['sl_price'])}"
                       + (f" trail {_f(x['trailing_stop'])}" if x.get("trailing_stop") else "") for x in t["targets"])
        L.append(f"  - TP/SL history: {tg}{ref('position_targets')}")
    if t["status"] == "closed":
        ev = t.get("exit_evaluation")
        L.append(f"- **Exit** {_short_ts(t['closed_at'])} @ {_f(t['exit_price'])} after "
                 f"{(t['hold_minutes'] or 0) / 60:.1f} h, reason `{t['close_reason']}`")
        if ev:
            L.append(f"  - exit check #{ev['evaluation_id']}: decision `{ev['decision']}` at price {_f(ev['price'])} "
                     f"({ev.get('reason') or ''}){ref('position_evaluations')}")
        xs = t.get("exit_signal")
        if xs:
            L.append(f"  - exit signal #{xs['signal_id']} at {_short_ts(xs['ts'])} ({xs['side']} {xs['intent']})")
        xc = t.get("exit_config")
        if xc:
            L.append(f"  - sell gate at exit: {_onoff(xc['sell_enabled'])}")
        L.append(f"- **P&L** {money(t['realized_pnl_usd'])} USD net of {_usd(t['fees_usd'])} USD fees"
                 f" ({_f(t.get('return_pct'), 3)} % of entry notional){ref('positions')}")
    else:
        L.append(f"- still open; {t['evaluations']} exit checks so far{ref('position_evaluations')}")
    if t["fills"]:
        L.append("")
        L.append(md_table(["Fill", "Time", "Side", "Qty", "Price", "Fee USD", "Slippage bps"],
                          [(f["fill_id"], _short_ts(f["ts"]), f["side"], _f(f["qty"]), _f(f["price"]),
                            f"{f['fee_usd']:.4f}", f"{f['slippage_bps']:.1f}") for f in t["fills"]]))
    L.append("")
    if t["blocked_while_open"]:
        L.append(f"_{t['blocked_while_open']} other signal(s) of {sym} were blocked while this position was open._")
        L.append("")
    return L


def _blocked_section(r: dict, ref: "_Refs") -> list[str]:
    """Blocked signals by gate, reason and day; the breaker windows."""
    sym, bs = r["symbol"], r["blocked_summary"]
    L = ["## What blocked other signals, and why", ""]
    if not bs["by_gate"]:
        L.append("No signal was blocked in this window.")
    else:
        L.append(md_table(["Gate", "Blocked signals"], list(bs["by_gate"].items())) + "\n\nSource:" + ref("blocked_by_day_gate"))
        L.append("")
        L.append(md_table(["Gate: reason", "Count"], list(bs["by_reason"].items())[:30]) + "\n\nSource:" + ref("blocked_signals"))
        L.append("")
        L.append("Per UTC day:")
        L.append("")
        L.append(md_table(["Day", "Blocked by"],
                          [(d, ", ".join(f"{g} x{n}" for g, n in gates.items())) for d, gates in bs["by_day"].items()]))
        if bs["breakers"]:
            L.append("")
            L.append(f"Circuit breakers that blocked {sym}'s entries: **{', '.join(bs['breakers'])}**.")
    L.append("")
    if r["breaker_windows"]:
        L.append("### Breaker windows (trip -> reset)")
        L.append("")
        L.append(md_table(["Breaker", "Scope", "Tripped", "Reset", "Cause"],
                          [(w["breaker"], w["scope"], _short_ts(w["tripped_at"]), _short_ts(w["reset_at"]) or "still tripped",
                            w.get("cause") or "") for w in r["breaker_windows"]]) + "\n\nSource:" + ref("breaker_events"))
        L.append("")
    return L


def lessons_consulted(r: dict) -> dict:
    """The lessons view of an investigation: per entry candidate the lessons consulted, and the gated blocks.

    Parameters
    ----------
    r : dict
        The result of :func:`ats.forensics.queries.investigate_symbol` (``signals`` with their ``context``,
        ``blocked_signals``).

    Returns
    -------
    dict
        ``entries``: [{signal_id, ts, strategy, intent, status, lessons: [{ll, score}], lesson_block, consensus}]
        for every open/add signal; ``by_lesson``: LL-NNN -> entries that consulted it; ``blocks``: the blocked
        signals whose gate is ``lesson:LL-NNN`` or ``consensus`` [{signal_id, ts, strategy, gate, reason}];
        ``without_lessons``: entries that recorded no consultation (older runs).
    """
    entries, by_lesson, missing = [], {}, 0
    for sg in r.get("signals") or []:
        if sg.get("intent") not in ("open", "add"):
            continue
        c = sg.get("context") or {}
        ls = c.get("lessons")
        if ls is None:
            missing += 1
        for x in ls or []:
            by_lesson[x["ll"]] = by_lesson.get(x["ll"], 0) + 1
        entries.append({"signal_id": sg.get("signal_id"), "ts": sg.get("ts"), "strategy": sg.get("strategy_name"),
                        "intent": sg.get("intent"), "status": sg.get("status"), "lessons": ls or [],
                        "lesson_block": c.get("lesson_block"),
                        "consensus": (c.get("consensus") or {}).get("summary")})
    blocks = [{"signal_id": b.get("signal_id"), "ts": b.get("ts"), "strategy": b.get("strategy_name"),
               "gate": b.get("gate"), "reason": b.get("reason")}
              for b in r.get("blocked_signals") or []
              if str(b.get("gate") or "").startswith("lesson:") or b.get("gate") == "consensus"]
    return {"entries": entries, "by_lesson": dict(sorted(by_lesson.items())), "blocks": blocks,
            "without_lessons": missing}


def _lessons_section(r: dict, ref: "_Refs") -> list[str]:
    """Which lessons were consulted before each entry, and what the lesson / consensus gates blocked."""
    v = r.get("lessons_consulted") or lessons_consulted(r)
    L = ["## Lessons consulted before each entry", ""]
    if not v["entries"]:
        return L + ["No entry signal in this window.", ""]
    L.append("Consulted (entries per lesson): " + (", ".join(f"{k} x{n}" for k, n in v["by_lesson"].items())
                                                    or "none") + "." + ref("signals"))
    if v["without_lessons"]:
        L.append(f"_{v['without_lessons']} entry signal(s) recorded no consultation (a run before lessons)._")
    L.append("")
    rows = [(_short_ts(e["ts"]), e["strategy"], e["intent"], e["status"],
             ", ".join(f"{x['ll']} ({x['score']:.2f})" for x in e["lessons"]) or "-",
             (e["lesson_block"] or {}).get("ll") or e["consensus"] or "")
            for e in v["entries"][:TIMELINE_MAX]]
    L.append(md_table(["Decision (UTC)", "Strategy", "Intent", "Status", "Lessons (score)", "Lesson block / consensus"],
                      rows))
    L.append("")
    if v["blocks"]:
        L.append("Blocked by a lesson's rule or the consensus vote:")
        L.append("")
        L.append(md_table(["Decision (UTC)", "Strategy", "Gate", "Reason"],
                          [(_short_ts(b["ts"]), b["strategy"], b["gate"], b["reason"]) for b in v["blocks"]]))
        L.append("")
    return L


def _reconciliation_section(r: dict, ref: "_Refs") -> list[str]:
    """Per-trade P&L against the hourly snapshots."""
    rec = r["reconciliation"]
    L = ["## P&L per trade reconciled against snapshots", ""]
    if rec.get("method") == "none":
        L.append(rec.get("note", "no snapshots"))
    else:
        si = rec["snapshot_interval"]
        L.append(f"Snapshot interval ({si['start'] or 'run start'}, {si['end']}]; method `{rec['method']}`"
                 + (" (the snapshots' per-symbol cumulative realized P&L)" if rec["method"] == "positions_json" else
                    " (hourly deltas of snapshot realized P&L in the hours the symbol closed trades, minus other "
                    "symbols' closes in those hours)") + ".")
        L.append("")
        L.append(md_table(["", "USD", "Query"], [
            ("Sum of per-trade realized P&L (closed positions)", money(rec["trades_pnl_usd"], 4),
             ref("trades_in_snapshot_interval")),
            ("Snapshot realized P&L for the symbol", money(rec["snapshot_pnl_usd"], 4),
             ref("snapshot_end", "snapshot_start", "snapshot_symbol_pnl_by_deltas",
                 "snapshot_symbol_realized_last_known")),
            ("Difference", money(rec["difference_usd"], 4), ""),
            ("Portfolio: snapshot realized P&L", money(rec["total"]["snapshot_realized_usd"], 4), ref("snapshot_end")),
            ("Portfolio: all symbols' closed trades", money(rec["total"]["all_symbols_trades_usd"], 4),
             ref("trades_in_snapshot_interval")),
        ]))
        L.append("")
        L.append(f"Result: **{_recon_word(rec)}** (tolerance {rec['tolerance_usd']} USD). Trades counted: "
                 f"{', '.join(str(x) for x in rec['trades_counted']) or 'none'}.")
        if rec["trades_after_last_snapshot"]:
            L.append(f"Closed after the last snapshot (not yet in snapshot P&L): {rec['trades_after_last_snapshot']}.")
    L.append("")
    return L


def _anomalies_section(r: dict, ref: "_Refs") -> list[str]:
    """The anomalies found, or what was checked."""
    L = ["## Anomalies", ""]
    if not r["anomalies"]:
        L.append("None found (checked: fills vs positions quantities, P&L vs fills and fees, entries during "
                 "tripped breakers, fills before their signal, rejected orders, blocked exits, never-evaluated open "
                 "positions, feed anomalies, snapshot reconciliation).")
    else:
        L.append(md_table(["Time", "Kind", "Detail"],
                          [(_short_ts(a["ts"]), a["kind"], json.dumps(a["detail"], sort_keys=True)[:300])
                           for a in r["anomalies"][:200]]))
    L.append("")
    return L


def _questions_and_appendix(r: dict, ref: "_Refs") -> list[str]:
    """Open questions, then every query with its SQL."""
    L = ["## Open questions", ""]
    L += [f"- {q}" for q in r["open_questions"]] or ["- none"]
    L.append("")

    L.append("## Appendix: queries")
    L.append("")
    L.append("Every figure above is reproduced by these statements (read-only; paste into `psql` or the "
             "`mcp__ats-postgres__query` tool).")
    L.append("")
    for i, q in enumerate(r.get("queries", []), 1):
        L.append(f"**Q{i} `{q['name']}`** ({q['rows']} rows)")
        L.append("")
        L.append("```sql")
        L.append(q["sql"])
        L.append("```")
        L.append("")
    return L


def _usd(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):,.2f}"


def _onoff(v: Any) -> str:
    return "on" if v else "off"


def _recon_word(rec: dict) -> str:
    if rec.get("reconciled") is None:
        return "n/a (no snapshots)"
    return "yes" if rec["reconciled"] else f"NO (difference {rec['difference_usd']:+.4f} USD)"


def write_investigation(conn: psycopg.Connection, symbol: str, since: Any = None, until: Any = None,
                        out_dir: str | Path | None = None, *, run_id: str | None = None, name: str | None = None,
                        title: str | None = None) -> dict:
    """Investigate ``symbol`` and write ``<out_dir>/<name>.md`` plus its JSON twin ``<name>.json``.

    ``out_dir`` defaults to ``reports/investigations`` under :func:`ats.paths.reports_dir`; ``name`` defaults to
    ``<UTC date>_<SYMBOL>`` (a same-day rerun replaces that day's report: it is regenerated from the database).
    Returns ``{"paths": [md, json], "md_path", "json_path", "symbol", "run_id", "trades", "realized_pnl_usd",
    "reconciled", "breakers", "anomalies"}``. Raises AtsError (via investigate_symbol) on an unknown run.
    """
    r = investigate_symbol(conn, symbol, since=since, until=until, run_id=run_id)
    if r.get("run"):
        r["lessons_consulted"] = lessons_consulted(r)
    d = Path(out_dir) if out_dir is not None else paths.reports_dir() / "investigations"
    d.mkdir(parents=True, exist_ok=True)
    stem = _slug(name or f"{utcnow():%Y-%m-%d}_{r['symbol']}")
    md_path, json_path = d / f"{stem}.md", d / f"{stem}.json"
    md = render_investigation(r, title=title)
    md_path.write_text(md + f"\n_JSON twin: [{json_path.name}]({json_path.name})_\n", encoding="utf-8")
    json_path.write_text(dumps(r) + "\n", encoding="utf-8")
    return {"paths": [str(md_path), str(json_path)], "md_path": str(md_path), "json_path": str(json_path),
            "symbol": r["symbol"], "run_id": (r.get("run") or {}).get("run_id"),
            "trades": r["pnl"]["closed_trades"], "realized_pnl_usd": r["pnl"]["realized_pnl_usd"],
            "reconciled": r["reconciliation"].get("reconciled"), "breakers": r["blocked_summary"]["breakers"],
            "anomalies": len(r["anomalies"])}
