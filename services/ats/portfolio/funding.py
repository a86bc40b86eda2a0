"""Funding of linear-perpetual positions: the paper model's payment at every funding time, booked in P&L.

Which positions: the engine's shorts are linear perpetuals at 1x (longs are spot and pay no funding). A broker that
leaves funding to the venue (a live adapter) does not declare ``models_funding``; the paper broker does.

When: at every funding time F = 00:00, 08:00 and 16:00 UTC (``FUNDING_INTERVAL_S``) that falls in a step's window
(previous decision time, this decision time] -- the position must be open at F. A fill at F (the open of the bar
starting at F) comes just after the settlement: a position closed by it pays F's funding, one opened by it does
not. A step that covers several funding times (a feed gap, a 1d timeframe) pays each of them.

How much (Bybit's rule, https://www.bybit.com/en/help-center/article/Funding-fee-calculation):
    funding fee = position value x funding rate,   position value = qty x mark price
A positive rate is paid by longs to shorts. Here ``cost_usd`` = sign x qty x mark x rate is what the POSITION pays
(sign +1 long, -1 short), so a short receives qty x mark x rate when the rate is positive and pays when it is
negative. Mark = the close of the bar ending at the decision time (the engine's mark; Bybit uses its mark price).

Rate: the ``funding_rates`` row of the symbol at F (within ``MATCH_TOLERANCE_S``), read once per run and symbol
(``ats.risk.microstructure_gate.MicroData``). No row: the documented fallback, setting
``broker.funding_fallback_bps`` (bps per 8 h, default 0.0 = zero cost), and the ledger row says
``rate_source = 'fallback'`` -- the note that the data was missing.

Booking (``Portfolio.apply_funding``): cash -= cost, the position's and the portfolio's realized P&L -= cost, so
``equity = starting cash + realized + unrealized`` still holds, the trade's ``positions.realized_pnl_usd``
includes its funding (``positions.context.funding_usd`` the sum), and every payment is a ``funding_payments`` row
(migration 0151, account-scoped).
"""

from __future__ import annotations

import numpy as np

FUNDING_INTERVAL_S = 8 * 3600
#: a funding_rates row stamped this close to F counts as F's rate
MATCH_TOLERANCE_S = 60


def models_funding(eng) -> bool:
    """True when the engine's broker leaves funding to this paper model (``broker.models_funding``)."""
    return bool(getattr(eng.broker, "models_funding", False))


def is_perp(pos) -> bool:
    """True for the positions that are linear perpetuals (the shorts)."""
    return pos.side == "short"


def funding_times(prev_c: int, c: int) -> list[int]:
    """Funding times F (Unix s, multiples of 8 h) with prev_c < F <= c."""
    first = (prev_c // FUNDING_INTERVAL_S + 1) * FUNDING_INTERVAL_S
    return list(range(first, c + 1, FUNDING_INTERVAL_S))


def first_funding_step(eng, C: np.ndarray) -> int:
    """For a quiet span with decision times ``C`` (shape (W,)): the index of the first step whose window (C - tf, C]
    holds a funding time while a perp position is open (W when none): the fast path must stop before it."""
    W = len(C)
    if not W or not models_funding(eng) or not any(is_perp(p) for p in eng.pf.positions.values()):
        return W
    hit = np.nonzero((C // FUNDING_INTERVAL_S) != ((C - eng.tf_s) // FUNDING_INTERVAL_S))[0]
    return int(hit[0]) if len(hit) else W


def rate_at(eng, symbol: str, F: int, settings: dict) -> tuple[float, str]:
    """(rate as a fraction per interval, source) for ``symbol`` at funding time ``F``: the ``funding_rates`` row,
    else the fallback setting ``broker.funding_fallback_bps`` / 10,000 with source 'fallback'."""
    s = eng.micro.series("funding", symbol, F)
    if len(s.t):
        j = int(np.searchsorted(s.t, F - MATCH_TOLERANCE_S, side="left"))
        if j < len(s.t) and abs(int(s.t[j]) - F) <= MATCH_TOLERANCE_S:
            return float(s.v[j]), "funding_rates"
    return float(settings.get("broker.funding_fallback_bps") or 0.0) / 1e4, "fallback"


def apply_funding(eng, prev_c: int, C: int, settings: dict) -> int:
    """Pay the funding of every open perp position for each funding time in (prev_c, C]; returns payments made.

    Parameters
    ----------
    eng : Engine
        The engine (portfolio, marks, sink, micro data, broker).
    prev_c, C : int
        Previous and current decision time, Unix s.
    settings : dict
        Settings in force at C (``broker.funding_fallback_bps``).

    Returns
    -------
    int
        Number of ``funding_payments`` rows written (0 when the broker does not model funding).
    """
    if not eng.pf.positions or not models_funding(eng):
        return 0
    perps = [p for p in eng.pf.positions.values() if is_perp(p)]
    if not perps:
        return 0
    n = 0
    for F in funding_times(prev_c, C):
        for pos in perps:
            mark = eng.marks.get(pos.symbol, pos.avg_entry)
            rate, source = rate_at(eng, pos.symbol, F, settings)
            cost = pos.sign * pos.qty * mark * rate
            eng.pf.apply_funding(pos, cost)
            eng.sink.add("funding_payments", (eng.run_id, eng.account, pos.position_id, pos.strategy, pos.symbol,
                                              pos.side, F, pos.qty, mark, rate, source, cost))
            eng.sink.position_changed(pos)
            eng.stats["funding_payments"] = eng.stats.get("funding_payments", 0) + 1
            if source == "fallback":
                eng.stats["funding_fallback"] = eng.stats.get("funding_fallback", 0) + 1
            n += 1
    return n
