"""Position sizing: fractional Kelly with a conservative multiplier, a cap and a probe floor.

For a bet that wins ``b`` per unit staked with probability ``p`` and loses ``a`` per unit with probability
``q = 1 - p``, the growth-optimal fraction of capital to stake is

    f* = p / a - q / b

(J. L. Kelly Jr., "A New Interpretation of Information Rate", Bell System Technical Journal 35(4), 1956, for
a = 1; E. O. Thorp, "The Kelly Criterion in Blackjack, Sports Betting, and the Stock Market", 2006, section 7,
for the general two-outcome bet). Here the stake is the position notional, ``a`` the average loss and ``b`` the
average win of the strategy's last ``lookback`` closed trades as fractions of notional (net of fees), ``p`` its
win rate.

Full Kelly is far too aggressive for estimated edges (Thorp 2006, section 9): the size is ``multiplier x f*``
(quarter Kelly by default) clamped to [floor_pct, cap_pct] % of equity. Until a strategy has ``min_trades``
closed trades there is no estimate and the configured ``trade_amount_usd`` is used (``fraction`` None). When
the estimated edge is not positive (f* <= 0) the strategy keeps trading at the probe size ``floor_pct`` % of
equity, so its estimate can recover; ``floor_pct = 0`` blocks its entries instead ('risk:kelly').
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KellyEstimate:
    """f_star: full Kelly fraction of equity (notional, +/-inf when there were no losses / no wins); fraction:
    multiplier x f_star clamped to [floor, cap] (fraction of equity); win_rate (0..1), avg_win/avg_loss
    (fractions of notional), n_trades used. All None except n_trades while there are too few trades."""

    f_star: float | None
    fraction: float | None
    win_rate: float | None
    avg_win: float | None
    avg_loss: float | None
    n_trades: int

    def as_dict(self) -> dict:
        """The estimate as JSON-able values (floats rounded to 6 digits; inf/NaN -> None)."""
        def r(v):
            if isinstance(v, float):
                return None if math.isinf(v) or math.isnan(v) else round(v, 6)
            return v
        return {k: r(v) for k, v in self.__dict__.items()}


def kelly_fraction(p: float, avg_win: float, avg_loss: float) -> float:
    """Full Kelly stake as a fraction of capital for a two-outcome bet.

    f* = p / avg_loss - (1 - p) / avg_win (Kelly 1956; Thorp's general bet with unequal win and loss sizes; for
    even odds it reduces to p - q).

    Parameters
    ----------
    p : float
        Win probability (0..1).
    avg_win, avg_loss : float
        Average win and average loss as positive fractions of the stake.

    Returns
    -------
    float
        f*, a fraction of capital (negative when the edge is negative).

    Raises
    ------
    ValueError
        When ``avg_win`` or ``avg_loss`` is <= 0.
    """
    if avg_win <= 0 or avg_loss <= 0:
        raise ValueError("avg_win and avg_loss must be > 0")
    return p / avg_loss - (1.0 - p) / avg_win


def estimate(trade_returns: list[float], *, multiplier: float, cap_pct: float, floor_pct: float = 1.0,
             min_trades: int = 20, lookback: int = 50) -> KellyEstimate:
    """Kelly estimate from a strategy's closed-trade returns.

    Parameters
    ----------
    trade_returns : list of float
        Returns per closed trade as fractions of notional, net of fees, oldest first.
    multiplier : float
        Fraction of full Kelly (0.25 = quarter Kelly).
    cap_pct, floor_pct : float
        Cap and probe floor, percent of equity.
    min_trades : int
        Trades needed before an estimate exists.
    lookback : int
        Most recent trades used (<= 0: all).

    Returns
    -------
    KellyEstimate
        fraction None (use the configured trade amount) while fewer than ``min_trades`` trades exist; else fraction
        in [floor, cap] as a fraction of equity (the floor when f* <= 0; 0 when f* <= 0 and floor_pct is 0).
    """
    recent = trade_returns[-lookback:] if lookback > 0 else list(trade_returns)
    n = len(recent)
    if n < max(1, min_trades):
        return KellyEstimate(None, None, None, None, None, n)
    wins = [r for r in recent if r > 0]
    losses = [-r for r in recent if r <= 0]
    p = len(wins) / n
    avg_win = sum(wins) / len(wins) if wins else 0.0
    avg_loss = sum(losses) / len(losses) if losses else 0.0
    if not losses or avg_loss <= 0:
        f = math.inf
    elif not wins or avg_win <= 0:
        f = -math.inf
    else:
        f = kelly_fraction(p, avg_win, avg_loss)
    cap, floor = cap_pct / 100.0, floor_pct / 100.0
    frac = floor if f <= 0 else min(max(multiplier * f, floor), cap)
    return KellyEstimate(f, frac, p, avg_win, avg_loss, n)
