"""Watchlist scores: every hour, each strategy whose watchlist gate is on scores each watchlist symbol.

The watchlist gate means "this strategy contributes its score" (issue 17). The Strategy API has no score hook, so
the score is computed here, generically, from the strategy's own prepared series (``Strategy.prepare`` through the
engine: :class:`ats.strategies.shadow.Shadow`, configuration and params in force at the hour) at the last bar
closed at or before the hour, bar index ``i``:

    strength  = Prepared.strength[i]                  the strategy's documented [0, 1] strength (NaN -> 0)
    recency   = 1 - k / LOOKBACK_BARS                  k = bars since the latest entry trigger within the last
                                                       LOOKBACK_BARS bars (k = 0: it fired on bar i); 0 when none
    side      = the latest trigger's side (+1 long, -1 short), else the strategy's direction ('both': none)
    exit      = the strategy's exit condition of that side holds at bar i (Prepared.exit_long / exit_short;
                without a side: both hold)
    score     = 100 x (W_STRENGTH x strength + W_RECENCY x recency) x (0 if exit else 1)      in [0, 100]

so a symbol scores high while the strategy's entry condition is strong or has just fired and its exit condition
does not hold. Every input is in ``components`` (plus the bar, its close and the indicator values of the signal
context), so a score can be recomputed by hand. A symbol whose last closed bar is older than ``STALE_BARS`` bars
at the hour is not scored (counted in ``stale``): a feed gap never produces a score.

Ranked watchlist (:func:`rank`, ``ats watchlist rank``): per symbol at one hour, ``score`` = the best strategy's
score, ``total`` = the sum over contributing strategies; ordered by score, then total, then symbol
(:data:`RANK_SQL`, also used by ``ats report watchlist``). Rows live in ``watchlist_scores`` (migration 0152),
one per (account, hour, symbol, strategy); re-scoring an hour replaces its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from psycopg.types.json import Jsonb

from ..errors import AtsError, UsageError
from ..timeutil import TIMEFRAME_SECONDS

LOOKBACK_BARS = 24
W_STRENGTH = 0.6
W_RECENCY = 0.4
STALE_BARS = 3
UTC = timezone.utc

#: per (ts, symbol): best score, total, contributing strategies, rank within the hour. Parameters: account, lo, hi
#: (ts > lo AND ts <= hi). The one ranking rule of the ranked watchlist and the watchlist report.
RANK_SQL = """
WITH per AS (
    SELECT ts, symbol, max(score) AS score, sum(score) AS total, count(*) FILTER (WHERE score > 0) AS contributing,
           (array_agg(strategy ORDER BY score DESC, strategy))[1] AS best_strategy
      FROM watchlist_scores
     WHERE account_id = %(account)s AND ts > %(lo)s AND ts <= %(hi)s
     GROUP BY ts, symbol)
SELECT ts, symbol, score, total, contributing, best_strategy,
       rank() OVER (PARTITION BY ts ORDER BY score DESC, total DESC) AS rnk
  FROM per"""


@dataclass
class ScoreRun:
    """What one scoring call did: hours scored, rows written, symbols skipped as stale or without candles."""

    hours: list[datetime]
    rows: list[dict] = field(default_factory=list)
    written: int = 0
    stale: int = 0
    missing: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)


def watchlist_universe(conn, account_id: str = "default", as_of: datetime | None = None) -> list[str]:
    """The symbols to score: the account's ``universe``, else its ``watchlist`` setting as of ``as_of`` (symbols or
    ``{symbol, ...}`` objects), else the market-data default watchlist."""
    from ..db import config_store as cs
    from ..market_data.backfill import DEFAULT_WATCHLIST

    row = conn.execute("SELECT universe FROM accounts WHERE account_id = %s", (account_id,)).fetchone()
    if row and row["universe"]:
        return [s.upper() for s in row["universe"]]
    val = cs.setting_as_of(conn, "watchlist", as_of, account_id=account_id, default=None)
    if isinstance(val, dict):
        val = val.get("symbols")
    if isinstance(val, list) and val:
        return [str(v.get("symbol") if isinstance(v, dict) else v).upper().replace("/", "") for v in val]
    return list(DEFAULT_WATCHLIST)


def hours_between(since: datetime, until: datetime) -> list[datetime]:
    """Top-of-hour times in [since, until] (UTC); since is rounded up to the hour."""
    t = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if t < since:
        t += timedelta(hours=1)
    out = []
    while t <= until:
        out.append(t)
        t += timedelta(hours=1)
    return out


def score_bar(prep, i: int, direction: str) -> tuple[float, dict]:
    """The generic score of one prepared series at bar ``i`` (formula: module docstring).

    Parameters
    ----------
    prep : Prepared
        The strategy's prepared series.
    i : int
        Bar index (the last bar closed at the hour).
    direction : {'long', 'short', 'both'}
        The strategy's direction (the side when no trigger is recent).

    Returns
    -------
    tuple of (float, dict)
        (score in [0, 100], components: strength, recency, bars_since_entry, side, exit_active, weights).
    """
    st = float(prep.strength[i])
    strength = 0.0 if st != st else min(1.0, max(0.0, st))
    lo = max(0, i - LOOKBACK_BARS + 1)
    window = prep.entry[lo:i + 1]
    nz = np.nonzero(window)[0]
    if len(nz):
        k = int(i - (lo + nz[-1]))
        recency = 1.0 - k / LOOKBACK_BARS
        side = "long" if window[nz[-1]] > 0 else "short"
    else:
        k, recency = None, 0.0
        side = direction if direction in ("long", "short") else None
    if side == "long":
        ex = bool(prep.exit_long[i])
    elif side == "short":
        ex = bool(prep.exit_short[i])
    else:
        ex = bool(prep.exit_long[i]) and bool(prep.exit_short[i])
    score = 0.0 if ex else 100.0 * (W_STRENGTH * strength + W_RECENCY * recency)
    return round(score, 6), {"strength": round(strength, 8), "recency": round(recency, 8), "bars_since_entry": k,
                             "side": side, "exit_active": ex, "weights": {"strength": W_STRENGTH,
                                                                           "recency": W_RECENCY}}


def score_watchlist(conn, as_of: datetime, *, account_id: str = "default", symbols=None, strategies=None,
                    timeframe: str = "1h", store: bool = True) -> ScoreRun:
    """Score one hour: every watchlisted strategy x watchlist symbol at ``as_of`` (see :func:`score_range`)."""
    return score_range(conn, as_of, as_of, account_id=account_id, symbols=symbols, strategies=strategies,
                       timeframe=timeframe, store=store)


def score_range(conn, since: datetime, until: datetime, *, account_id: str = "default", symbols=None,
                strategies=None, timeframe: str = "1h", store: bool = True) -> ScoreRun:
    """Score every top of the hour in [since, until] and (``store``) write ``watchlist_scores`` in ONE transaction.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    since, until : datetime
        Tz-aware UTC bounds (inclusive); ``since`` is rounded up to the hour.
    account_id : str
        Whose configurations (watchlist gate, params as of each hour), universe and rows.
    symbols : list of str, optional
        Default :func:`watchlist_universe`.
    strategies : list of str, optional
        Default every registered strategy; each scores only the hours its watchlist gate is on.
    timeframe : str
        Candles the strategies run on (default 1h, what their defaults are tuned for).
    store : bool
        False: compute only (``ats watchlist rank`` for an hour nothing was stored for).

    Returns
    -------
    ScoreRun
        The rows ``{ts, symbol, strategy, score, components}`` and counts.

    Raises
    ------
    UsageError
        ``until`` before ``since``, more than 400 days, or an unknown strategy/timeframe.
    AtsError
        No candles for any symbol in the window.
    """
    from . import REGISTRY, get_strategy
    from .shadow import Shadow
    from ..market_data.store import write_scope

    if timeframe not in TIMEFRAME_SECONDS:
        raise UsageError(f"unknown timeframe {timeframe!r}")
    hours = hours_between(since, until)
    if not hours:
        raise UsageError(f"no top of the hour in [{since.isoformat()}, {until.isoformat()}]")
    if len(hours) > 400 * 24:
        raise UsageError("score at most 400 days per call")
    names = list(strategies) if strategies else list(REGISTRY)
    for n in names:
        get_strategy(n)
    syms = [s.upper() for s in (symbols or watchlist_universe(conn, account_id, hours[-1]))]
    tf_s = TIMEFRAME_SECONDS[timeframe]
    h0, h1 = int(hours[0].timestamp()), int(hours[-1].timestamp())
    sh = Shadow(conn, names, syms, timeframe, h0 - tf_s, h1, account_id=account_id)
    run = ScoreRun(hours=hours, missing=sh.missing)
    used = set()
    for h in hours:
        ts = int(h.timestamp())
        for name in names:
            cfg = sh.config(name, ts)
            if cfg is None or not cfg.watchlist:
                continue
            strat = get_strategy(name)
            for sym in sh.symbols:
                i = sh.closed_index(sym, ts)
                b = sh.bars(sym)
                if i < 0 or ts - (int(b.t[i]) + tf_s) > STALE_BARS * tf_s:
                    run.stale += 1
                    continue
                prep = sh.prepared(sym, name, cfg)
                score, comp = score_bar(prep, i, strat.direction)
                comp.update(bar_open=datetime.fromtimestamp(int(b.t[i]), tz=UTC).isoformat(),
                            close=float(b.close[i]), timeframe=timeframe, indicators=prep.context(i))
                run.rows.append({"ts": h, "symbol": sym, "strategy": name, "score": score, "components": comp})
                used.add(name)
    run.strategies = sorted(used)
    if store and run.rows:
        with write_scope(conn):
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO watchlist_scores (ts, account_id, symbol, strategy, score, components)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (account_id, ts, symbol, strategy) DO UPDATE
                          SET score = EXCLUDED.score, components = EXCLUDED.components,
                              computed_at = clock_timestamp()""",
                    [(r["ts"], account_id, r["symbol"], r["strategy"], r["score"], Jsonb(r["components"]))
                     for r in run.rows])
        run.written = len(run.rows)
    return run


def rank(conn, at: datetime | None = None, *, account_id: str = "default", top: int = 10,
         compute_missing: bool = True) -> dict:
    """The ranked watchlist at the newest scored hour at or before ``at`` (default: the newest stored hour).

    Returns
    -------
    dict
        ``{ts, source: 'watchlist_scores' | 'computed (not stored)', rows: [{rank, symbol, score, total,
        contributing, best_strategy, strategies: [{strategy, score}]}]}`` with at most ``top`` rows.

    Raises
    ------
    AtsError
        Nothing stored at or before ``at`` and (``compute_missing``) nothing computable either.
    """
    acct = {"account": account_id}
    if at is None:
        row = conn.execute("SELECT max(ts) AS t FROM watchlist_scores WHERE account_id = %(account)s",
                           acct).fetchone()
        if row["t"] is None:
            raise AtsError("no watchlist_scores stored yet: `ats watchlist score --since ... --until ...`")
        at = row["t"]
    hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    row = conn.execute("SELECT max(ts) AS t FROM watchlist_scores WHERE account_id = %(account)s AND ts <= %(at)s "
                       "AND ts > %(lo)s", {**acct, "at": at, "lo": hour - timedelta(hours=1)}).fetchone()
    if row["t"] is not None:
        ts, source = row["t"], "watchlist_scores"
        rows = conn.execute(RANK_SQL + " WHERE ts = %(ts)s ORDER BY rnk, symbol",
                            {**acct, "lo": ts - timedelta(seconds=1), "hi": ts, "ts": ts}).fetchall()
        per = conn.execute("SELECT symbol, strategy, score FROM watchlist_scores WHERE account_id = %(account)s "
                           "AND ts = %(ts)s ORDER BY symbol, score DESC, strategy", {**acct, "ts": ts}).fetchall()
    else:
        if not compute_missing:
            raise AtsError(f"no watchlist_scores at {hour.isoformat()}")
        run = score_watchlist(conn, hour, account_id=account_id, store=False)
        ts, source = hour, "computed (not stored)"
        per = sorted(run.rows, key=lambda r: (r["symbol"], -r["score"], r["strategy"]))
        agg: dict[str, dict] = {}
        for r in per:
            a = agg.setdefault(r["symbol"], {"symbol": r["symbol"], "score": r["score"], "total": 0.0,
                                             "contributing": 0, "best_strategy": r["strategy"]})
            a["total"] += r["score"]
            a["contributing"] += r["score"] > 0
        rows = sorted(agg.values(), key=lambda a: (-a["score"], -a["total"], a["symbol"]))
        prev = None
        for n, a in enumerate(rows, 1):
            key = (a["score"], a["total"])
            a["rnk"] = prev[1] if prev and prev[0] == key else n
            prev = (key, a["rnk"])
    by_sym: dict[str, list] = {}
    for r in per:
        by_sym.setdefault(r["symbol"], []).append({"strategy": r["strategy"], "score": round(float(r["score"]), 4)})
    out = [{"rank": int(r["rnk"]), "symbol": r["symbol"], "score": round(float(r["score"]), 4),
            "total": round(float(r["total"]), 4), "contributing": int(r["contributing"]),
            "best_strategy": r["best_strategy"], "strategies": by_sym.get(r["symbol"], [])}
           for r in rows[:max(1, top)]]
    return {"ts": ts.isoformat(), "source": source, "rows": out}
