"""Microstructure entry conditions: funding rate, open interest and long/short ratio AS OF the decision bar.

A strategy declares the conditions it needs (``Strategy.micro_gates``) and their thresholds as params
(``Strategy.micro_params``; a threshold set to null switches that condition off). The entry path
(``ats.engine.entries.check_gates``: after the lesson gate, before the breakers) asks :func:`check`; the first
failing condition blocks the signal with ``blocked_signals.gate = 'microstructure'``, a reason
``microstructure:<condition>: ...`` and the values in the row's context (``context.microstructure``). Missing or
stale data blocks with the reason ``microstructure:no_data: ...`` -- never a silent pass.

No look-ahead: only rows stamped at or before the decision time C (the bar close) are used. Each series
(``funding_rates``, ``open_interest``, ``long_short_ratios`` of migration 0134) is read once per run and symbol
(:class:`MicroData`), then looked up with a binary search per signal; a live session re-reads once per decision
time.

Conditions (units):

======================  ==========================================  ===========================================
name                    params                                      passes when
======================  ==========================================  ===========================================
funding_floor           ``funding_min_bps`` (bps per 8 h)           the last funding rate settled at or before C
                                                                    (within FUNDING_MAX_AGE_S) >= the floor.
                                                                    For a short: a negative rate is paid by
                                                                    shorts, so -1.0 = pay at most 1 bp / 8 h.
funding_cap             ``funding_max_bps`` (bps per 8 h)           that rate <= the cap (longs pay positive rates)
oi_rising_with_price    ``oi_lookback_hours`` (h),                  open interest rose by >= the minimum % over
                        ``oi_rise_min_pct`` (percent)               the lookback AND the close rose over it too
ls_ratio_cap            ``ls_buy_ratio_max`` (fraction 0..1)        the share of accounts long <= the cap
======================  ==========================================  ===========================================

Funding rates are fractions per interval in the table (0.0001 = 1 bp); shown here in bps (x 10,000).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

#: a funding rate older than this at decision time counts as missing (Bybit settles every 8 h)
FUNDING_MAX_AGE_S = 9 * 3600
#: an open-interest or long/short-ratio point older than this (relative to the time asked for) counts as missing
POINT_MAX_AGE_S = 2 * 3600
#: open-interest / long-short-ratio period used when a symbol has several: the first present (1h = the engine's bar)
PERIOD_PREFERENCE = ("1h", "30min", "15min", "5min", "4h", "1d")

CONDITIONS = ("funding_floor", "funding_cap", "oi_rising_with_price", "ls_ratio_cap")
#: condition -> the params it reads (the first one is the threshold that switches it off when null)
CONDITION_PARAMS = {"funding_floor": ("funding_min_bps",), "funding_cap": ("funding_max_bps",),
                    "oi_rising_with_price": ("oi_rise_min_pct", "oi_lookback_hours"),
                    "ls_ratio_cap": ("ls_buy_ratio_max",)}
_KIND = {"funding_floor": "funding", "funding_cap": "funding", "oi_rising_with_price": "oi",
         "ls_ratio_cap": "ls_ratio"}


@dataclass(frozen=True)
class Series:
    """One microstructure series of one symbol: ``t`` Unix s (ascending), ``v`` float64 values (funding: fraction
    per interval; oi: contracts; ls_ratio: buy ratio 0..1), ``period`` the OI/ratio period (None for funding)."""

    t: np.ndarray
    v: np.ndarray
    period: str | None = None

    def at(self, ts: int, max_age: int) -> tuple[int, float] | None:
        """(time, value) of the last point at or before ``ts`` and not older than ``max_age`` s; None otherwise."""
        j = int(np.searchsorted(self.t, ts, side="right")) - 1
        if j < 0 or ts - int(self.t[j]) > max_age:
            return None
        return int(self.t[j]), float(self.v[j])


_EMPTY = Series(np.zeros(0, dtype=np.int64), np.zeros(0))


class MicroData:
    """Microstructure series read once per (kind, symbol) from the database (replays), or once per decision
    time (``live=True``).

    Parameters
    ----------
    conn : psycopg.Connection
        Dict-row connection (the engine's).
    live : bool
        Re-read a series when asked for a later decision time than the one it was read for.
    """

    def __init__(self, conn, *, live: bool = False):
        self.conn, self.live = conn, live
        self._c: dict[tuple[str, str], tuple[int, Series]] = {}
        self.queries = 0

    def series(self, kind: str, symbol: str, ts: int = 0) -> Series:
        """The ``kind`` ('funding' | 'oi' | 'ls_ratio') series of ``symbol`` (empty when the table has none)."""
        hit = self._c.get((kind, symbol))
        if hit is not None and (not self.live or hit[0] >= ts):
            return hit[1]
        s = self._load(kind, symbol)
        self._c[(kind, symbol)] = (ts, s)
        return s

    def _load(self, kind: str, symbol: str) -> Series:
        self.queries += 1
        if kind == "funding":
            rows = self.conn.execute(
                "SELECT DISTINCT ON (ts) extract(epoch FROM ts)::bigint AS t, funding_rate::float8 AS v "
                "FROM funding_rates WHERE symbol=%s ORDER BY ts, source", (symbol,)).fetchall()
            return _series(rows, None)
        table, pcol, vcol = {"oi": ("open_interest", "interval", "open_interest"),
                             "ls_ratio": ("long_short_ratios", "period", "buy_ratio")}[kind]
        have = {r["p"] for r in self.conn.execute(f"SELECT DISTINCT {pcol} AS p FROM {table} WHERE symbol=%s",
                                                  (symbol,)).fetchall()}
        period = next((p for p in PERIOD_PREFERENCE if p in have), None)
        if period is None:
            return _EMPTY
        rows = self.conn.execute(
            f"SELECT DISTINCT ON (ts) extract(epoch FROM ts)::bigint AS t, {vcol}::float8 AS v FROM {table} "
            f"WHERE symbol=%s AND {pcol}=%s ORDER BY ts, source", (symbol, period)).fetchall()
        return _series(rows, period)


def _series(rows, period) -> Series:
    if not rows:
        return _EMPTY
    return Series(np.array([r["t"] for r in rows], dtype=np.int64), np.array([r["v"] for r in rows]), period)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def evaluate(data: MicroData, conditions, params: dict, symbol: str, C: int,
             price_now: float | None = None, price_then=None) -> tuple[str | None, str | None, dict]:
    """Evaluate ``conditions`` for ``symbol`` at decision time ``C`` (Unix s).

    Parameters
    ----------
    data : MicroData
        The series.
    conditions : iterable of str
        Names from ``CONDITIONS`` (a strategy's ``micro_gates``).
    params : dict
        The strategy's params in force (thresholds; a null threshold skips its condition).
    symbol : str
        Symbol (the microstructure tables use the same names, e.g. BTCUSDT).
    C : int
        Decision time, Unix s.
    price_now : float, optional
        Close at C (for ``oi_rising_with_price``).
    price_then : callable, optional
        ``price_then(ts)`` -> the close at or before ``ts`` (or None), for ``oi_rising_with_price``.

    Returns
    -------
    tuple of (str or None, str or None, dict)
        (condition, reason, detail): condition None when all passed (detail then holds the values seen);
        else the first failing condition ('no_data' for missing data) and a reason ``microstructure:...``.

    Raises
    ------
    ValueError
        On an unknown condition name.
    """
    detail: dict = {}
    for name in conditions:
        if name not in CONDITION_PARAMS:
            raise ValueError(f"microstructure gate: unknown condition {name!r}; known: {', '.join(CONDITIONS)}")
        threshold = params.get(CONDITION_PARAMS[name][0])
        if threshold is None:
            continue
        s = data.series(_KIND[name], symbol, C)
        if name in ("funding_floor", "funding_cap"):
            pt = s.at(C, FUNDING_MAX_AGE_S)
            if pt is None:
                return "no_data", (f"microstructure:no_data: no funding rate of {symbol} settled in the "
                                   f"{FUNDING_MAX_AGE_S // 3600} h before {_iso(C)} UTC ({name})"), \
                    {**detail, name: {"missing": "funding", "series_points": len(s.t)}}
            bps = pt[1] * 1e4
            d = {"funding_bps": round(bps, 6), "funding_ts": _iso(pt[0]), "threshold_bps": float(threshold)}
            detail[name] = d
            if name == "funding_floor" and bps < float(threshold):
                return name, (f"microstructure:funding_floor: funding {bps:.4g} bps/8h at {_iso(pt[0])} < floor "
                              f"{float(threshold):g} bps/8h"), detail
            if name == "funding_cap" and bps > float(threshold):
                return name, (f"microstructure:funding_cap: funding {bps:.4g} bps/8h at {_iso(pt[0])} > cap "
                              f"{float(threshold):g} bps/8h"), detail
        elif name == "oi_rising_with_price":
            look = int(round(float(params.get("oi_lookback_hours") or 24) * 3600))
            now, then = s.at(C, POINT_MAX_AGE_S), s.at(C - look, POINT_MAX_AGE_S)
            p_then = price_then(C - look) if price_then is not None else None
            if now is None or then is None or not then[1] or price_now is None or not p_then:
                return "no_data", (f"microstructure:no_data: no open interest of {symbol} at {_iso(C)} and "
                                   f"{_iso(C - look)} UTC ({name})"), \
                    {**detail, name: {"missing": "oi", "series_points": len(s.t), "period": s.period}}
            oi_pct = (now[1] / then[1] - 1.0) * 100.0
            px_pct = (price_now / p_then - 1.0) * 100.0
            d = {"oi_change_pct": round(oi_pct, 6), "price_change_pct": round(px_pct, 6),
                 "oi_now": now[1], "oi_then": then[1], "period": s.period, "lookback_hours": look / 3600,
                 "threshold_pct": float(threshold)}
            detail[name] = d
            if oi_pct < float(threshold) or px_pct <= 0:
                return name, (f"microstructure:oi_rising_with_price: open interest {oi_pct:+.3g}% (min "
                              f"{float(threshold):g}%) and price {px_pct:+.3g}% over {look / 3600:g} h"), detail
        else:  # ls_ratio_cap
            pt = s.at(C, POINT_MAX_AGE_S)
            if pt is None:
                return "no_data", (f"microstructure:no_data: no long/short ratio of {symbol} in the "
                                   f"{POINT_MAX_AGE_S // 3600} h before {_iso(C)} UTC ({name})"), \
                    {**detail, name: {"missing": "ls_ratio", "series_points": len(s.t)}}
            detail[name] = {"buy_ratio": pt[1], "ts": _iso(pt[0]), "threshold": float(threshold)}
            if pt[1] > float(threshold):
                return name, (f"microstructure:ls_ratio_cap: {pt[1]:.4g} of accounts long > cap "
                              f"{float(threshold):g}"), detail
    return None, None, detail


def check(eng, cand, C: int) -> tuple[str | None, str | None, dict | None]:
    """The microstructure gate of one entry candidate (``ats.engine.context.EntryCandidate``) at decision time C.

    Returns
    -------
    tuple of (str or None, str or None, dict or None)
        (None, None, None) when the strategy declares no condition; (None, None, {'microstructure': values})
        when all pass; ('microstructure', reason, {'microstructure': {'condition': ..., values}}) when one fails
        or has no data (reason ``microstructure:no_data: ...``).
    """
    conds = getattr(cand.strat, "micro_gates", ())
    if not conds:
        return None, None, None
    b = eng.bars[cand.sym]

    def price_then(ts: int):
        j = int(np.searchsorted(b.t, ts - eng.tf_s, side="right")) - 1  # the bar that closed at or before ts
        return float(b.close[j]) if j >= 0 else None

    which, reason, detail = evaluate(eng.micro, conds, cand.cfg.params, cand.sym, C,
                                     float(b.close[cand.i]), price_then)
    if which is None:
        return None, None, {"microstructure": detail}
    return "microstructure", reason, {"microstructure": {"condition": which, **detail}}
