"""Staged soaks: a strategy runs watchlist-only for N days, then its blocked entries are judged on evidence.

``start_soak`` (``ats strategy soak start NAME [--days N] [--at ISO]``), in ONE transaction:

1. an effective-dated write through :func:`ats.db.config_store.upsert_strategy`: ``watchlist_enabled = true``,
   ``buy_enabled = false`` from ``--at`` (default now; a back-dated ``--at`` is a new ``effective_from``, so a
   replay of the period sees it - never an UPDATE that keeps the old ``effective_from``); sell gate and params are
   left as they are;
2. a ``strategy_soaks`` row (migration 0153) with the window and the gates in force before;
3. a one-shot review prompt ``.claude-cron/prompts/soak-<strategy>[-<account>].md`` with ``run_at`` = the end
   of the soak (in the schedule's timezone) and ``core: ats strategy soak report NAME``, validated by
   :func:`ats.ops.schedule.load_prompt`; it takes effect with the next ``ats cron install`` (``ats cron list``
   shows it). A soak that already ended (a back-dated one) schedules no prompt;
4. a ``system_events`` row (component 'strategy', event 'soak_started').

``soak_report`` (``ats strategy soak report NAME``, read-only): every entry signal of the strategy the engine
blocked at the buy gate in the soak window [start, end] (``blocked_signals.gate = 'buy_gate'``, written by
``ats.engine.entries`` when the configuration in force has the buy gate off), of one run (``--run-id``, default
the run of the account with the most such blocks), each played forward on its own by
:meth:`ats.strategies.shadow.Shadow.simulate_entry` - the engine's paper broker, fills and exit logic, with the
strategy's params in force and ``trade_amount_usd`` as the entry notional (the risk limits and Kelly sizing a
real entry would also pass are not applied: the figures are per trade, before portfolio constraints). Trades that
overlap an earlier hypothetical one of the same symbol are flagged: the engine would have made them adds or
blocked them (cooldown, pending order). Writes ``reports/soaks/<end date>_<strategy>_soak.md`` and its ``.json``
twin; P&L in USD net of fees.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from psycopg.types.json import Jsonb

from ..errors import AtsError, UsageError

UTC = timezone.utc
#: hypothetical trades are walked at most this long after the soak's end when the strategy has no max hold
MAX_HORIZON_DAYS = 30


def prompt_name(strategy: str, account_id: str = "default") -> str:
    """The one-shot prompt name of a soak: ``soak-<strategy>`` (``_`` -> ``-``), ``-<account>`` unless default."""
    base = f"soak-{strategy.replace('_', '-')}"
    return base if account_id == "default" else f"{base}-{account_id.replace('_', '-')}"


def _prompt_text(strategy: str, account_id: str, started: datetime, ends: datetime, run_at: str) -> str:
    acct = "" if account_id == "default" else f"ats --account {account_id} "
    return f"""---
description: review of the staged soak of {strategy} ({started:%Y-%m-%d} .. {ends:%Y-%m-%d}, watchlist on / buy off; read-only)
run_at: {run_at}
allowed-tools: Bash(ats strategy soak report:*), mcp__ats-postgres__blocked_signals, mcp__ats-postgres__query, mcp__ats-docs__search, mcp__ats-docs__get, Read(/reports/**), Edit(/reports/**)
max-turns: 20
timeout: 900
core: {acct}ats strategy soak report {strategy}
---
Review of the staged soak of strategy `{strategy}` (account `{account_id}`; one-shot, deferred; read-only).

1. Run `{acct}ats strategy soak report {strategy}`: it replays every entry the buy gate blocked during the
   soak with the engine's exit logic and writes `reports/soaks/<date>_{strategy}_soak.md`.
2. Check the figures against the audit trail with `mcp__ats-postgres__blocked_signals` (gate `buy_gate`,
   strategy `{strategy}`, since {started:%Y-%m-%d}) and read-only `mcp__ats-postgres__query`.
3. Append `## Agent assessment (<UTC timestamp>)` to the report: number of blocked entries, win rate, would-be
   P&L (USD, net of fees), worst trade, overlaps, and a recommendation - flip the buy gate on, extend the soak,
   or retire the strategy. A recommendation only: change no gate or setting
   (`ats config strategy set {strategy} --buy on` is for an interactive session, after a saved plan).
"""


def _schedule_tz(root: Path) -> str:
    try:
        from ..ops.schedule import load_schedule

        return load_schedule(root).timezone or "UTC"
    except Exception:  # noqa: BLE001 - no schedule file (a fresh checkout): the schedule's default
        return "UTC"


def start_soak(conn, strategy: str, *, days: int = 14, at: datetime | None = None, account_id: str = "default",
               root: Path | None = None, schedule_prompt: bool = True, now: datetime | None = None) -> dict:
    """Start a staged soak of ``strategy`` (steps: module docstring); returns the soak as a dict.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    strategy : str
        A registered strategy.
    days : int
        Length of the soak (1 .. 365).
    at : datetime, optional
        Start (tz-aware, UTC); default now. Back-dated: the configuration history gets it as ``valid_from``.
    account_id : str
        The account.
    root : Path, optional
        Project root of ``.claude-cron/prompts`` (default ``ats.paths.project_root()``).
    schedule_prompt : bool
        Write the review prompt (when the soak ends in the future).
    now : datetime, optional
        Wall clock (tests).

    Returns
    -------
    dict
        ``soak_id, strategy, account_id, started_at, ends_at, days, prior_gates, review_prompt`` (times ISO).

    Raises
    ------
    UsageError
        Unknown strategy, days out of range.
    AtsError
        A soak of the strategy already covers ``at``; an invalid prompt (nothing is written then).
    """
    from ..db import config_store as cs
    from ..db.events import record_event
    from ..market_data.store import write_scope
    from ..ops.schedule import PROMPTS_DIR, load_prompt
    from ..paths import project_root
    from . import get_strategy

    get_strategy(strategy)
    if not 1 <= int(days) <= 365:
        raise UsageError(f"--days {days}: a soak lasts 1 to 365 days")
    now = now or datetime.now(UTC)
    at = (at or now).astimezone(UTC).replace(microsecond=0)
    ends = at + timedelta(days=int(days))
    clash = conn.execute(
        "SELECT soak_id, started_at, ends_at FROM strategy_soaks WHERE account_id = %s AND strategy_name = %s "
        "AND started_at < %s AND ends_at > %s ORDER BY started_at DESC LIMIT 1",
        (account_id, strategy, ends, at)).fetchone()
    if clash:
        raise AtsError(f"soak {clash['soak_id']} of {strategy} ({clash['started_at']:%Y-%m-%d %H:%M} .. "
                       f"{clash['ends_at']:%Y-%m-%d %H:%M} UTC) overlaps {at:%Y-%m-%d %H:%M} .. {ends:%Y-%m-%d %H:%M}")
    prior = cs.strategy_as_of(conn, strategy, at, account_id=account_id)
    prior_gates = None if prior is None else {k: prior[k] for k in cs.GATES}
    root = root or project_root()
    prompt_path = None
    if schedule_prompt and ends > now:
        from zoneinfo import ZoneInfo

        tz = _schedule_tz(root)
        run_at = ends.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
        name = prompt_name(strategy, account_id)
        prompt_path = root / PROMPTS_DIR / f"{name}.md"
        prompt_path.parent.mkdir(parents=True, exist_ok=True)
        prompt_path.write_text(_prompt_text(strategy, account_id, at, ends, run_at), encoding="utf-8")
    try:
        if prompt_path is not None:
            load_prompt(prompt_path.stem, root)  # the schedule must accept it (tools, core, run_at)
        with write_scope(conn):
            cs.upsert_strategy(conn, strategy, account_id=account_id, effective_from=at, watchlist_enabled=True,
                               buy_enabled=False)
            row = conn.execute(
                """INSERT INTO strategy_soaks (account_id, strategy_name, started_at, ends_at, days, prior_gates,
                                               review_prompt)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *""",
                (account_id, strategy, at, ends, int(days), Jsonb(prior_gates),
                 None if prompt_path is None else str(prompt_path.relative_to(root)))).fetchone()
            record_event(conn, "strategy", "soak_started", account_id=account_id,
                         payload={"soak_id": row["soak_id"], "strategy": strategy, "started_at": at.isoformat(),
                                  "ends_at": ends.isoformat(), "days": int(days), "prior_gates": prior_gates,
                                  "review_prompt": row["review_prompt"]})
    except BaseException:
        if prompt_path is not None:
            prompt_path.unlink(missing_ok=True)
        raise
    return _soak_doc(row)


def _soak_doc(row) -> dict:
    return {"soak_id": row["soak_id"], "strategy": row["strategy_name"], "account_id": row["account_id"],
            "started_at": row["started_at"].isoformat(), "ends_at": row["ends_at"].isoformat(), "days": row["days"],
            "prior_gates": row["prior_gates"], "review_prompt": row["review_prompt"]}


def list_soaks(conn, *, account_id: str = "default", strategy: str | None = None) -> list[dict]:
    """Every soak of the account (newest first), optionally of one strategy."""
    rows = conn.execute("SELECT * FROM strategy_soaks WHERE account_id = %s AND (%s::text IS NULL OR "
                        "strategy_name = %s) ORDER BY started_at DESC, soak_id DESC",
                        (account_id, strategy, strategy)).fetchall()
    return [_soak_doc(r) for r in rows]


BLOCKED_SQL = """SELECT b.blocked_id, b.signal_id, b.run_id, b.symbol, b.ts, b.reason, s.position_side, s.intent,
       s.price, s.timeframe, s.strength
  FROM blocked_signals b JOIN signals s ON s.signal_id = b.signal_id
 WHERE b.account_id = %(account)s AND b.run_id = %(run_id)s AND b.strategy_name = %(strategy)s
   AND b.gate = 'buy_gate' AND b.ts >= %(start)s AND b.ts <= %(end)s
 ORDER BY b.ts, b.symbol"""


def _pick_run(conn, account_id: str, strategy: str, start: datetime, end: datetime) -> str | None:
    row = conn.execute(
        """SELECT b.run_id, count(*) AS n, max(r.started_at) AS started FROM blocked_signals b
             JOIN engine_runs r ON r.run_id = b.run_id
            WHERE b.account_id = %s AND b.strategy_name = %s AND b.gate = 'buy_gate' AND b.ts >= %s AND b.ts <= %s
            GROUP BY b.run_id ORDER BY n DESC, started DESC LIMIT 1""", (account_id, strategy, start, end)).fetchone()
    return row["run_id"] if row else None


def soak_report(conn, strategy: str, *, account_id: str = "default", run_id: str | None = None,
                soak_id: int | None = None, until: datetime | None = None, out_dir: Path | None = None) -> dict:
    """Replay the soak's buy-gate blocks of ``strategy`` and write the report (module docstring). Read-only.

    Returns
    -------
    dict
        ``soak, run_id, window, trades: [ShadowTrade.doc() + blocked_id, overlaps], summary, paths``.

    Raises
    ------
    AtsError
        No soak of the strategy recorded (or no soak ``soak_id``).
    """
    from .. import paths
    from ..forensics.sqlfmt import QueryLog, dumps, jsonable, md_table, money
    from . import get_strategy
    from .shadow import Shadow

    get_strategy(strategy)
    soaks = list_soaks(conn, account_id=account_id, strategy=strategy)
    if soak_id is not None:
        soaks = [s for s in soaks if s["soak_id"] == soak_id]
    if not soaks:
        raise AtsError(f"no soak of {strategy} recorded for account {account_id} "
                       f"(`ats strategy soak start {strategy} --days N`)")
    soak = soaks[0]
    start = datetime.fromisoformat(soak["started_at"])
    end = datetime.fromisoformat(soak["ends_at"])
    if until is not None:
        end = min(end, until)
    run_id = run_id or _pick_run(conn, account_id, strategy, start, end)
    q = QueryLog(conn)
    p = {"account": account_id, "run_id": run_id, "strategy": strategy, "start": start, "end": end}
    blocked = q.all("buy_gate_blocks", BLOCKED_SQL, p) if run_id else []
    trades: list[dict] = []
    if blocked:
        tf = blocked[0]["timeframe"]
        horizon = end + timedelta(days=MAX_HORIZON_DAYS)
        sh = Shadow(conn, [strategy], sorted({b["symbol"] for b in blocked}), tf,
                    int(start.timestamp()), int(horizon.timestamp()), account_id=account_id)
        open_until: dict[str, int] = {}
        for b in blocked:
            ts = int(b["ts"].timestamp())
            if b["symbol"] not in sh.symbols:
                trades.append({"blocked_id": b["blocked_id"], "symbol": b["symbol"], "status": "no_candles",
                               "decision_time": b["ts"].isoformat(), "side": b["position_side"], "pnl_usd": 0.0})
                continue
            cfg = sh.config(strategy, ts)
            notional = float(cfg.params.get("trade_amount_usd") or 0) if cfg else 0.0
            t = sh.simulate_entry(strategy, b["symbol"], ts, b["position_side"], notional)
            doc = {"blocked_id": b["blocked_id"], **t.doc(), "intent": b["intent"],
                   "overlaps": ts < open_until.get(b["symbol"], -1)}
            if t.exit_ts is not None:
                open_until[b["symbol"]] = max(open_until.get(b["symbol"], -1), t.exit_ts)
            trades.append(doc)
    summary = _summary(trades)
    d = Path(out_dir) if out_dir else paths.reports_dir() / "soaks"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{end:%Y-%m-%d}_{strategy}_soak"
    doc = {"soak": soak, "run_id": run_id, "window": {"start": start, "end": end}, "summary": summary,
           "trades": trades, "queries": q.entries}
    md, js = d / f"{stem}.md", d / f"{stem}.json"
    md.write_text(_markdown(strategy, account_id, soak, run_id, start, end, summary, trades, q.entries,
                            md_table, money) + "\n", encoding="utf-8")
    js.write_text(dumps(doc) + "\n", encoding="utf-8")
    return jsonable({**doc, "paths": [str(md), str(js)]})


def _summary(trades: list[dict]) -> dict:
    played = [t for t in trades if t["status"] in ("closed", "open")]
    closed = [t for t in played if t["status"] == "closed"]
    wins = [t for t in closed if t["pnl_usd"] > 0]
    indep = [t for t in played if not t.get("overlaps")]
    return {"blocked": len(trades), "played": len(played), "closed": len(closed),
            "open_at_horizon": len(played) - len(closed),
            "not_played": len(trades) - len(played), "wins": len(wins),
            "win_rate": round(len(wins) / len(closed), 4) if closed else None,
            "pnl_usd": round(sum(t["pnl_usd"] for t in played), 2),
            "pnl_closed_usd": round(sum(t["pnl_usd"] for t in closed), 2),
            "pnl_non_overlapping_usd": round(sum(t["pnl_usd"] for t in indep), 2),
            "overlapping": len(played) - len(indep),
            "avg_return_pct": round(sum(t["return_pct"] for t in played) / len(played), 4) if played else None,
            "best_usd": round(max((t["pnl_usd"] for t in played), default=0.0), 2),
            "worst_usd": round(min((t["pnl_usd"] for t in played), default=0.0), 2),
            "by_exit": dict(Counter(t.get("exit_reason") or t["status"] for t in played))}


def _markdown(strategy, account_id, soak, run_id, start, end, s, trades, queries, md_table, money) -> str:
    from ..timeutil import utcnow

    L = [f"# Soak report: {strategy} ({start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC)", "",
         f"- Account `{account_id}`, soak {soak['soak_id']} ({soak['days']} days; watchlist on / buy off from "
         f"{soak['started_at']}); gates before: {soak['prior_gates']}  ",
         f"- Run: `{run_id or 'none'}`; generated {utcnow():%Y-%m-%d %H:%M} UTC by "
         "`ats.strategies.soak.soak_report`  ",
         "- Each entry the buy gate blocked is played forward on its own with the engine's paper broker and exit "
         "logic (TP / SL / trailing / max hold / exit signal), size = the strategy's `trade_amount_usd`, before risk "
         "limits and Kelly sizing. Overlapping trades would have been adds or blocked in a real run.", ""]
    if not run_id:
        L += ["No run recorded a buy-gate block of this strategy in the window: replay the period "
              "(`ats engine replay ...`) or run live, then re-run this report.", ""]
    L += ["## Summary", "", md_table(["Figure", "Value"], [
        ("Entries blocked by the buy gate", s["blocked"]),
        ("Played forward (closed / open at the horizon)", f"{s['played']} ({s['closed']} / {s['open_at_horizon']})"),
        ("Wins / win rate of closed", f"{s['wins']} / " + ("n/a" if s["win_rate"] is None else f"{s['win_rate']:.1%}")),
        ("Would-be P&L, all played (USD, net of fees)", money(s["pnl_usd"])),
        ("Would-be P&L, closed only (USD)", money(s["pnl_closed_usd"])),
        ("Would-be P&L without overlapping trades (USD)", money(s["pnl_non_overlapping_usd"])),
        ("Overlapping trades", s["overlapping"]),
        ("Average return per trade (%)", "n/a" if s["avg_return_pct"] is None else f"{s['avg_return_pct']:+.3f}"),
        ("Best / worst trade (USD)", f"{money(s['best_usd'])} / {money(s['worst_usd'])}"),
        ("Exits", ", ".join(f"{k} {v}" for k, v in sorted(s["by_exit"].items())) or "none"),
    ]), "", "## Hypothetical trades", ""]
    L.append(md_table(["#", "Decision (UTC)", "Symbol", "Side", "Entry", "Exit (UTC)", "Exit", "Reason", "Hold h",
                       "P&L USD", "Return %", "Overlaps"],
                      [(n, t["decision_time"][:16], t["symbol"], t["side"], t.get("entry_price") and
                        f"{t['entry_price']:.6g}", (t.get("exit_time") or "")[:16], t.get("exit_price") and
                        f"{t['exit_price']:.6g}", t.get("exit_reason") or t["status"], t.get("hold_hours"),
                        money(t["pnl_usd"]), f"{t.get('return_pct', 0.0):+.3f}", "yes" if t.get("overlaps") else "")
                       for n, t in enumerate(trades, 1)]) if trades else "None.")
    L += ["", "## Appendix: queries", ""]
    for i, qq in enumerate(queries, 1):
        L += [f"**Q{i} `{qq['name']}`**", "", "```sql", qq["sql"], "```", ""]
    return "\n".join(L)
