"""Risk limits checked before every entry or add (after the gates, regime, cool-down and breakers).

Order of checks (the first failure names the gate written to ``blocked_signals``):

    risk:max_adds             an add beyond the strategy's ``max_adds``
    risk:add_to_loser         an add to a position whose unrealized P&L is below -risk.add_loser_limit_pct %
    risk:max_open_positions   a new position when risk.max_open_positions are open (or being opened)
    risk:kelly                fractional-Kelly size (ats.risk.sizing) is zero: no estimated edge and no probe floor
    risk:max_position_size    the position would exceed risk.max_position_usd
    risk:max_allocation       the position would exceed risk.max_allocation_pct % of equity
    risk:correlation          a new position whose returns correlate above risk.correlation_threshold with the
                              existing same-direction exposure (other symbols)
    risk:gross_exposure       sum of |position values| would exceed risk.max_gross_exposure_pct % of equity
    risk:cash                 a long needs more cash than available (notional + taker fee)
    risk:min_order            the size left after the caps is below risk.min_order_usd

Notional = min(trade_amount_usd, Kelly fraction x equity (once the strategy has risk.kelly_min_trades trades), room under max_position_usd, room under
max_allocation_pct) in USD at the decision price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .sizing import KellyEstimate


@dataclass
class RiskDecision:
    """ok; gate ('risk:<limit>') and reason when blocked; notional (USD) when ok; context for the audit row."""

    ok: bool
    notional: float = 0.0
    gate: str | None = None
    reason: str = ""
    context: dict = field(default_factory=dict)


def check_entry(*, intent: str, position_side: str, equity: float, cash: float, gross_exposure_usd: float, open_positions: int,
                position_value_usd: float, position_pnl_pct: float | None, position_adds: int,
                params: dict, kelly: KellyEstimate, correlation: float | None, settings: dict,
                taker_fee_bps: float) -> RiskDecision:
    """Apply the limits above to one entry (intent 'open') or add (intent 'add') on side ``position_side``.

    Parameters
    ----------
    intent : {'open', 'add'}
        New position or add to the open one.
    position_side : {'long', 'short'}
        Side of the candidate.
    equity, cash : float
        Account equity and free cash (USD; cash net of what pending orders reserve).
    gross_exposure_usd : float
        Sum of |position values| plus pending entries (USD).
    open_positions : int
        Open positions plus pending opens.
    position_value_usd : float
        |value| of the existing position (adds) or 0 (USD).
    position_pnl_pct : float or None
        Its unrealized P&L (percent) for adds.
    position_adds : int
        Adds already made to it.
    params : dict
        The strategy's params (trade_amount_usd, max_adds, ...).
    kelly : KellyEstimate
        The strategy's sizing estimate (``ats.risk.sizing.estimate``).
    correlation : float or None
        Pearson correlation of the candidate's returns with the existing same-direction exposure (None: none).
    settings : dict
        Settings in force (``risk.*`` keys).
    taker_fee_bps : float
        Fee used for the cash check (bps).

    Returns
    -------
    RiskDecision
        ``ok`` with ``notional`` (USD), or the first failing ``gate`` ('risk:<limit>') and ``reason``.
    """
    s = settings
    ctx = {"equity_usd": round(equity, 2), "kelly": kelly.as_dict()}
    if intent == "add":
        if position_adds >= int(params.get("max_adds", 0)):
            return RiskDecision(False, gate="risk:max_adds",
                                reason=f"{position_adds} add(s) already, max_adds={params.get('max_adds', 0)}", context=ctx)
        lim = float(s["risk.add_loser_limit_pct"])
        if position_pnl_pct is not None and position_pnl_pct < -lim:
            return RiskDecision(False, gate="risk:add_to_loser",
                                reason=f"position at {position_pnl_pct:.2f}% < -{lim:g}%: no adding to a loser",
                                context={**ctx, "pnl_pct": round(position_pnl_pct, 4)})
    else:
        mx = int(s["risk.max_open_positions"])
        if open_positions >= mx:
            return RiskDecision(False, gate="risk:max_open_positions",
                                reason=f"{open_positions} open positions >= max {mx}", context=ctx)
    if kelly.fraction is not None and kelly.fraction <= 0:
        return RiskDecision(False, gate="risk:kelly",
                            reason=f"Kelly f*={kelly.f_star:.3f} <= 0 over {kelly.n_trades} trades (win rate "
                                   f"{kelly.win_rate:.2f}) and no probe floor: no edge", context=ctx)
    kelly_usd = kelly.fraction * equity if kelly.fraction is not None else math.inf
    max_pos = float(s["risk.max_position_usd"])
    max_alloc = float(s["risk.max_allocation_pct"]) / 100.0 * equity
    room_pos = max_pos - position_value_usd
    room_alloc = max_alloc - position_value_usd
    notional = min(float(params.get("trade_amount_usd", 0.0)), kelly_usd, room_pos, room_alloc)
    ctx.update({"trade_amount_usd": params.get("trade_amount_usd"),
                "kelly_usd": None if kelly.fraction is None else round(kelly_usd, 2),
                "room_position_usd": round(room_pos, 2), "room_allocation_usd": round(room_alloc, 2)})
    min_order = float(s["risk.min_order_usd"])
    if notional < min_order:
        if room_pos < min_order:
            return RiskDecision(False, gate="risk:max_position_size",
                                reason=f"position {position_value_usd:.0f} USD at max {max_pos:g} USD", context=ctx)
        if room_alloc < min_order:
            return RiskDecision(False, gate="risk:max_allocation",
                                reason=f"position {position_value_usd:.0f} USD at max {s['risk.max_allocation_pct']}% "
                                       f"of equity", context=ctx)
        return RiskDecision(False, gate="risk:min_order", reason=f"size {notional:.2f} USD < min {min_order:g} USD",
                            context=ctx)
    thr = float(s["risk.correlation_threshold"])
    if intent == "open" and correlation is not None:
        ctx["correlation"] = round(correlation, 4)
        if correlation > thr:
            return RiskDecision(False, gate="risk:correlation",
                                reason=f"return correlation {correlation:.2f} with existing exposure > {thr:g}",
                                context=ctx)
    gmax = float(s["risk.max_gross_exposure_pct"]) / 100.0 * equity
    if gross_exposure_usd + notional > gmax:
        notional_fit = gmax - gross_exposure_usd
        if notional_fit < min_order:
            return RiskDecision(False, gate="risk:gross_exposure",
                                reason=f"gross exposure {gross_exposure_usd:.0f} + {notional:.0f} USD > "
                                       f"{s['risk.max_gross_exposure_pct']}% of equity", context=ctx)
        notional = notional_fit
    if position_side == "long":
        notional, why = check_cash(notional, cash, taker_fee_bps, min_order)
        if why:
            return RiskDecision(False, gate="risk:cash", reason=why, context=ctx)
    ctx["notional_usd"] = round(notional, 2)
    return RiskDecision(True, notional=notional, context=ctx)


def check_cash(notional: float, cash: float, taker_fee_bps: float, min_order: float) -> tuple[float, str | None]:
    """For a long: the notional that fits the cash, notional x (1 + fee) <= cash.

    Parameters
    ----------
    notional : float
        Wanted size (USD).
    cash : float
        Free cash (USD).
    taker_fee_bps : float
        Fee (bps of notional).
    min_order : float
        Smallest order (USD).

    Returns
    -------
    tuple of (float, str or None)
        (notional that fits, None), or (0.0, reason) when less than ``min_order`` fits.
    """
    need = notional * (1 + taker_fee_bps / 1e4)
    if need <= cash:
        return notional, None
    fit = cash / (1 + taker_fee_bps / 1e4)
    if fit < min_order:
        return 0.0, f"cash {cash:.2f} USD < {need:.2f} USD needed"
    return fit, None


def exposure_correlation(candidate: np.ndarray, exposures: list[tuple[np.ndarray, float]]) -> float | None:
    """Pearson correlation between a candidate's return window and the weighted sum of existing exposures.

    Parameters
    ----------
    candidate : numpy.ndarray, shape (n,)
        Log returns of the candidate symbol.
    exposures : list of (numpy.ndarray, float)
        Per existing position: its return window (shape (n,)) and signed weight (value share, negative for a
        position on the opposite side of the candidate).

    Returns
    -------
    float or None
        Correlation in -1..1, NaNs dropped pairwise; None when fewer than 10 usable points or zero variance.
    """
    if not exposures:
        return None
    agg = np.zeros_like(candidate)
    for r, w in exposures:
        agg = agg + w * r
    m = ~(np.isnan(candidate) | np.isnan(agg))
    if m.sum() < 10:
        return None
    a, b = candidate[m], agg[m]
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return None
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))
