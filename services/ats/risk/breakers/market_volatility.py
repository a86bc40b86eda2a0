"""market_volatility: the market's realized volatility above ``breaker.market_vol_annual_pct`` (annualized %)
halts new entries account-wide; it resets below ``breaker.market_vol_reset_ratio`` x threshold (hysteresis).

The market is BTC (the regime reference) or, without it, the equal-weight index of the run's symbols; the series
is ``realized_vol_annual_pct`` of its log returns over ``breaker.market_vol_window_minutes``.
"""

from __future__ import annotations

import numpy as np

from .base import Breaker, StepInputs, register


@register
class MarketVolatility(Breaker):
    """Tripped while realized volatility (annualized %) > threshold, until it falls below ratio x threshold."""

    name = "market_volatility"
    scope = "global"
    priority = 3
    settings = {
        "breaker.market_vol_annual_pct": (150.0, "trip when the market's realized volatility (annualized %, BTC "
                                                 "log returns, or the equal-weight index of the run's symbols "
                                                 "without BTC) exceeds this"),
        "breaker.market_vol_window_minutes": (720, "window of the market volatility estimate (minutes)"),
        "breaker.market_vol_reset_ratio": (0.8, "the market volatility breaker resets below ratio x threshold"),
    }

    def prepare(self, settings: dict, market):
        """Settings-derived parameters, recomputed only when the settings in force change.

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            The run's series (``market_vol``) or None.

        Returns
        -------
        tuple
            (series times (Unix s), annualized vol % per time, source name, threshold %, reset ratio).
        """
        thr = float(self.setting(settings, "breaker.market_vol_annual_pct"))
        ratio = float(self.setting(settings, "breaker.market_vol_reset_ratio"))
        if market is None:
            return None, None, None, thr, ratio
        vt, vv, src = market.market_vol(float(self.setting(settings, "breaker.market_vol_window_minutes")))
        return vt, vv, src, thr, ratio

    def update(self, inputs: StepInputs) -> None:
        """Read the volatility of the last series bar opening at or before ``inputs.T``."""
        vt, vv, src, thr, ratio = inputs.params[self.name]
        j = inputs.market.vol_index(vt, inputs.T)
        if j >= 0:
            self.observe(inputs.ts, float(vv[j]), thr, ratio, source=src)

    def observe(self, ts: int, vol_pct: float, threshold: float, reset_ratio: float,
                source: str | None = None) -> None:
        """Trip above ``threshold``, reset below ``threshold x reset_ratio``; NaN (warming up) is ignored.

        Parameters
        ----------
        ts : int
            Unix s.
        vol_pct : float
            Realized volatility, annualized percent.
        threshold : float
            Percent.
        reset_ratio : float
            Fraction of the threshold below which it resets (hysteresis).
        source : str, optional
            The market series' name (added to the context).
        """
        if vol_pct != vol_pct:
            return
        tripped = self.is_tripped()
        if (not tripped and vol_pct <= threshold) or (tripped and vol_pct >= threshold * reset_ratio):
            return
        ctx = {"vol_annual_pct": round(vol_pct, 2), "threshold_pct": threshold, "reset_ratio": reset_ratio}
        if source is not None:
            ctx["source"] = source
        if not tripped and vol_pct > threshold:
            self.board.set(self.name, "*", True, ts,
                           f"market volatility {vol_pct:.0f}% > {threshold:g}% annualized", ctx)
        elif tripped and vol_pct < threshold * reset_ratio:
            self.board.set(self.name, "*", False, ts,
                           f"market volatility {vol_pct:.0f}% < {threshold * reset_ratio:g}% annualized", ctx)

    def static_events(self, env, params) -> np.ndarray | None:
        """Steps whose volatility is above the threshold (a trip is possible there).

        Parameters
        ----------
        env : SpanEnv
            The replay's step index.
        params : tuple
            What ``prepare`` returned.

        Returns
        -------
        numpy.ndarray of bool, shape (K,)
        """
        vt, vv, _src, thr, _ratio = params
        jv = np.searchsorted(vt, env.timeline, side="right") - 1
        with np.errstate(invalid="ignore"):
            return (jv >= 0) & (vv[np.maximum(jv, 0)] > thr)
