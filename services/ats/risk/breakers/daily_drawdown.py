"""daily_drawdown: equity more than ``breaker.daily_drawdown_pct`` % below its 00:00 UTC value halts new entries.

It resets when the drawdown is back within the threshold, which happens at the latest at the next UTC day (the
reference moves to the new day's equity).
"""

from __future__ import annotations

import numpy as np

from .base import Breaker, SpanInputs, StepInputs, register


@register
class DailyDrawdown(Breaker):
    """Drawdown from the day's start: dd = (E0 - E) / E0 x 100 (percent); tripped while dd > threshold."""

    name = "daily_drawdown"
    scope = "global"
    priority = 1
    settings = {"breaker.daily_drawdown_pct": (3.0, "trip when equity falls this % below its 00:00 UTC value; "
                                                    "resets at the next UTC day")}

    def prepare(self, settings: dict, market) -> float:
        """Settings-derived parameters, recomputed only when the settings in force change.

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            Unused.

        Returns
        -------
        float
            The threshold (percent).
        """
        return float(self.setting(settings, "breaker.daily_drawdown_pct"))

    def update(self, inputs: StepInputs) -> None:
        """Compare ``inputs.equity`` with ``inputs.day_start_equity`` (USD)."""
        self.observe(inputs.ts, inputs.equity, inputs.day_start_equity, inputs.params[self.name])

    def observe(self, ts: int, equity: float, day_start_equity: float, threshold_pct: float) -> None:
        """Trip when equity is more than ``threshold_pct`` % below ``day_start_equity``; reset when not.

        Parameters
        ----------
        ts : int
            Unix s.
        equity, day_start_equity : float
            Equity now and at 00:00 UTC (USD); a non-positive reference is ignored.
        threshold_pct : float
            Percent.
        """
        if day_start_equity <= 0:
            return
        dd = (day_start_equity - equity) / day_start_equity * 100.0
        trip = dd > threshold_pct
        if trip == self.is_tripped():
            return
        self.board.set(self.name, "*", trip, ts,
                       f"daily drawdown {dd:.2f}% > {threshold_pct}%" if trip else
                       f"daily drawdown {dd:.2f}% back within {threshold_pct}%",
                       {"drawdown_pct": round(dd, 4), "threshold_pct": threshold_pct,
                        "equity_usd": round(equity, 2), "day_start_equity_usd": round(day_start_equity, 2)})

    def quiet_steps(self, span: SpanInputs) -> int:
        """Steps before the first where the span's equity path would trip it (same float operations)."""
        ref, eq = span.day_ref, span.equity
        with np.errstate(invalid="ignore", divide="ignore"):
            trip = (ref > 0) & ((ref - eq) / ref * 100.0 > span.params[self.name])
        return int(np.argmax(trip)) if trip.any() else span.W
