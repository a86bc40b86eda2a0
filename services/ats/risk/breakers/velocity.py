"""velocity: per symbol, price moved more than ``breaker.velocity_pct`` % within ``breaker.velocity_minutes``
(close vs the window's low/high, ``velocity_pct``): the thin-market cascade. New entries in that symbol halt;
the breaker stays tripped ``breaker.velocity_cooloff_minutes`` after the last fast move."""

from __future__ import annotations

import numpy as np

from .base import Breaker, StepInputs, register


@register
class Velocity(Breaker):
    """Tripped per symbol by a fast move; resets once calm and the cool-off since the last fast move elapsed."""

    name = "velocity"
    scope = "symbol"
    priority = 5
    settings = {
        "breaker.velocity_pct": (8.0, "per symbol: trip when price moved more than this % within "
                                      "velocity_minutes (the thin-market cascade)"),
        "breaker.velocity_minutes": (60, "window of the velocity breaker (minutes)"),
        "breaker.velocity_cooloff_minutes": (120, "velocity breaker stays tripped at least this long after the "
                                                  "last fast move"),
    }

    def prepare(self, settings: dict, market):
        """Settings-derived parameters, recomputed only when the settings in force change.

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            The run's series (``velocity``) or None.

        Returns
        -------
        tuple
            ({symbol: signed move % per bar}, threshold %, window minutes, cool-off minutes).
        """
        vmin = float(self.setting(settings, "breaker.velocity_minutes"))
        vel = {} if market is None else {sym: market.velocity(sym, vmin) for sym in market.symbols}
        return (vel, float(self.setting(settings, "breaker.velocity_pct")), vmin,
                float(self.setting(settings, "breaker.velocity_cooloff_minutes")))

    def update(self, inputs: StepInputs) -> None:
        """Read the move of ``inputs.symbol`` at its bar ``inputs.index``."""
        vel, thr, vmin, cool = inputs.params[self.name]
        self.observe(inputs.ts, inputs.symbol, float(vel[inputs.symbol][inputs.index]), thr, vmin, cool)

    def observe(self, ts: int, symbol: str, move_pct: float, threshold: float, minutes: float,
                cooloff_min: float) -> None:
        """Trip (until ts + cool-off) when |move_pct| > threshold; reset once calm after ``until``. NaN is ignored.

        Parameters
        ----------
        ts : int
            Unix s.
        symbol : str
            Symbol.
        move_pct : float
            Signed fastest move within the window, percent.
        threshold : float
            Percent.
        minutes : float
            Window (for the message).
        cooloff_min : float
            Minutes it stays tripped after the last fast move.
        """
        if move_pct != move_pct:
            return
        key = (self.name, symbol)
        fast = abs(move_pct) > threshold
        if not fast and not self.board.is_tripped(*key):
            return
        st = self.board.states.get(key)
        if fast:
            ctx = {"move_pct": round(move_pct, 3), "threshold_pct": threshold, "window_min": minutes}
            self.board.set(self.name, symbol, True, ts,
                           f"{symbol} moved {move_pct:+.2f}% within {minutes:g} min (> {threshold:g}%)", ctx,
                           until=ts + int(cooloff_min * 60))
        elif st is not None and st.tripped and (st.until is None or ts >= st.until):
            self.board.set(self.name, symbol, False, ts, f"{symbol} calm for {cooloff_min:g} min "
                           f"(move {move_pct:+.2f}% <= {threshold:g}%)", {"move_pct": round(move_pct, 3)})

    def static_events(self, env, params) -> np.ndarray | None:
        """Steps where any symbol moves faster than the threshold.

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
        vel, thr = params[0], params[1]
        ev = np.zeros(len(env.timeline), dtype=bool)
        for sym in env.order:
            ii = env.idx[sym]
            iv = np.where(ii < 0, 0, ii)
            with np.errstate(invalid="ignore"):
                ev |= np.abs(vel[sym][iv]) > thr
        return ev
