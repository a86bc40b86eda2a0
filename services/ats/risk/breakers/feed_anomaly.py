"""feed_anomaly: per symbol, a feed anomaly overlapping the last ``breaker.feed_anomaly_window_minutes`` halts new
entries in that symbol. Anomalies come from ats.market_data's ``feed_anomalies`` and from gaps the engine sees in
its own candle stream."""

from __future__ import annotations

import numpy as np

from .base import Breaker, SpanInputs, StepInputs, register


@register
class FeedAnomaly(Breaker):
    """Tripped per symbol while an anomaly (start a0, end a1) satisfies a0 < decision time <= a1 + window."""

    name = "feed_anomaly"
    scope = "symbol"
    priority = 4
    settings = {"breaker.feed_anomaly_window_minutes": (120, "per symbol: tripped from a feed anomaly until this "
                                                             "long after it ended")}

    def prepare(self, settings: dict, market):
        """Settings-derived parameters, recomputed only when the settings in force change.

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            The run's series (``anomaly_index``) or None.

        Returns
        -------
        tuple of (int, dict)
            (window in s, {symbol: index of the active market-data anomaly per bar, -1 = none}).
        """
        win = int(float(self.setting(settings, "breaker.feed_anomaly_window_minutes")) * 60)
        at = {} if market is None else {sym: market.anomaly_index(sym, win) for sym in market.symbols}
        return win, at

    def update(self, inputs: StepInputs) -> None:
        """The active anomaly of ``inputs.symbol``: a market-data one, else the last stream gap in the window."""
        win, anom_at = inputs.params[self.name]
        sym = inputs.symbol
        k = int(anom_at[sym][inputs.index])
        info = inputs.market.anomalies[sym][k][2] if k >= 0 else None
        gaps = inputs.gaps.get(sym)
        if info is None and gaps:
            g0, g1, ginfo = gaps[-1]
            if g0 < inputs.ts <= g1 + win:
                info = ginfo
        self.observe(inputs.ts, sym, info)

    def observe(self, ts: int, symbol: str, anomaly: dict | None) -> None:
        """Trip or reset to match ``anomaly``.

        Parameters
        ----------
        ts : int
            Unix s.
        symbol : str
            Symbol.
        anomaly : dict or None
            The active anomaly (kind, open_time, source, ...) or None.
        """
        if (anomaly is not None) == self.board.is_tripped(self.name, symbol):
            return
        if anomaly is not None:
            self.board.set(self.name, symbol, True, ts,
                           f"{symbol} feed anomaly: {anomaly.get('kind')} at {anomaly.get('open_time')} "
                           f"({anomaly.get('source')})", anomaly)
        else:
            self.board.set(self.name, symbol, False, ts, f"{symbol} no feed anomaly in the window", {})

    def static_events(self, env, params) -> np.ndarray | None:
        """Steps where a market-data anomaly is active for any symbol.

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
        anom_at = params[1]
        ev = np.zeros(len(env.timeline), dtype=bool)
        for sym in env.order:
            ii = env.idx[sym]
            ev |= anom_at[sym][np.where(ii < 0, 0, ii)] >= 0
        return ev

    def quiet_steps(self, span: SpanInputs) -> int:
        """Steps before a stream gap's window covers a decision time (0 when it covers the first)."""
        win = span.params[self.name][0]
        e = span.W
        for sym in span.symbols:
            g = span.gaps.get(sym)
            if g:
                g0, g1, _ = g[-1]
                if span.C0 <= g1 + win:
                    if g0 < span.C0:
                        return 0
                    e = min(e, max(0, int((g0 - span.C0) // span.tf) + 1))
        return e
