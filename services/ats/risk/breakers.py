"""Circuit breakers: halt NEW entries and adds while exits keep working.

Breakers (``BREAKERS``, in the priority used to name the blocking one):

    manual_stop          setting ``breaker.manual_stop`` is true (as of the bar time)            scope '*'
    daily_drawdown       equity < (1 - daily_drawdown_pct %) x equity at 00:00 UTC; resets at the next UTC day
    consecutive_losses   ``consecutive_losses`` losing closed trades in a row; resets after the cool-off (and
                         the streak restarts from zero)
    market_volatility    realized volatility of the market (annualized %) > ``market_vol_annual_pct``; resets
                         below ``market_vol_reset_ratio`` x threshold (hysteresis)
    feed_anomaly         per symbol: a feed anomaly (from ats.market_data's feed_anomalies, plus gaps the engine
                         sees in its own candle stream) overlaps the last ``feed_anomaly_window_minutes``
    velocity             per symbol: price moved more than ``velocity_pct`` % within ``velocity_minutes``
                         (close vs the window's low/high); stays tripped ``velocity_cooloff_minutes`` after the
                         last fast move

Every trip and reset is a ``Transition``; the engine writes each one as a ``system_events`` row (component
'risk', event_type 'breaker_tripped' / 'breaker_reset', payload: breaker, scope, cause, value, threshold) and
upserts ``breaker_states``. Times are Unix seconds (engine clock).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

BREAKERS = ("manual_stop", "daily_drawdown", "consecutive_losses", "market_volatility", "feed_anomaly", "velocity")
_PRIORITY = {b: i for i, b in enumerate(BREAKERS)}


@dataclass
class BreakerState:
    """One breaker (and scope: '*' or a symbol). ``until``: earliest reset time for cool-off breakers."""

    breaker: str
    scope: str
    tripped: bool
    since: int
    cause: str = ""
    context: dict = field(default_factory=dict)
    until: int | None = None


@dataclass
class Transition:
    """A trip (tripped=True) or reset (tripped=False) at ``ts`` with its cause and context."""

    breaker: str
    scope: str
    tripped: bool
    ts: int
    cause: str
    context: dict


class BreakerBoard:
    """The state of every breaker of one run; ``drain()`` returns and clears the transitions since last call."""

    def __init__(self):
        self.states: dict[tuple[str, str], BreakerState] = {}
        self.loss_streak = 0
        self._pending: list[Transition] = []
        self._tripped_keys: set[tuple[str, str]] = set()

    # ---- generic ----
    def _set(self, breaker: str, scope: str, trip: bool, ts: int, cause: str, ctx: dict,
             until: int | None = None) -> None:
        key = (breaker, scope)
        st = self.states.get(key)
        if st is not None and st.tripped == trip:
            if trip and until is not None:
                st.until = max(st.until or 0, until)
            return
        if st is None and not trip:
            return  # never tripped: nothing to reset
        self.states[key] = BreakerState(breaker, scope, trip, ts, cause, ctx, until)
        if trip:
            self._tripped_keys.add(key)
        else:
            self._tripped_keys.discard(key)
        self._pending.append(Transition(breaker, scope, trip, ts, cause, ctx))

    def is_tripped(self, breaker: str, scope: str = "*") -> bool:
        return (breaker, scope) in self._tripped_keys

    def drain(self) -> list[Transition]:
        out, self._pending = self._pending, []
        return out

    def blocking(self, symbol: str) -> list[BreakerState]:
        """Tripped breakers that block a new entry/add in ``symbol`` (global first), in priority order."""
        if not self._tripped_keys:
            return []
        out = [self.states[k] for k in self._tripped_keys if k[1] in ("*", symbol)]
        out.sort(key=lambda s: (_PRIORITY.get(s.breaker, 99), s.scope))
        return out

    def any_tripped(self) -> bool:
        return bool(self._tripped_keys)

    # ---- individual breakers ----
    def update_manual(self, ts: int, flag) -> None:
        """Manual STOP flag (system setting ``breaker.manual_stop``)."""
        on = manual_on(flag)
        if on == self.is_tripped("manual_stop"):
            return
        self._set("manual_stop", "*", on, ts, "manual STOP flag set" if on else "manual STOP flag cleared",
                  {"setting": "breaker.manual_stop", "value": flag})

    def update_daily_drawdown(self, ts: int, equity: float, day_start_equity: float, threshold_pct: float) -> None:
        """Trip when equity is more than ``threshold_pct`` % below the 00:00 UTC equity; reset when it is not
        (which happens at the next UTC day, when the reference moves to the new day's equity)."""
        if day_start_equity <= 0:
            return
        dd = (day_start_equity - equity) / day_start_equity * 100.0
        trip = dd > threshold_pct
        if trip == self.is_tripped("daily_drawdown"):
            return
        self._set("daily_drawdown", "*", trip, ts,
                  f"daily drawdown {dd:.2f}% > {threshold_pct}%" if trip else f"daily drawdown {dd:.2f}% back within "
                  f"{threshold_pct}%", {"drawdown_pct": round(dd, 4), "threshold_pct": threshold_pct,
                                        "equity_usd": round(equity, 2), "day_start_equity_usd": round(day_start_equity, 2)})

    def record_trade(self, pnl_usd: float) -> None:
        """Count a closed trade toward the consecutive-loss streak (a loss: pnl < 0, net of fees)."""
        self.loss_streak = self.loss_streak + 1 if pnl_usd < 0 else 0

    def update_consecutive_losses(self, ts: int, limit: int, cooloff_min: float) -> None:
        key = ("consecutive_losses", "*")
        st = self.states.get(key)
        if st is not None and st.tripped:
            if st.until is not None and ts >= st.until:
                self.loss_streak = 0
                self._set("consecutive_losses", "*", False, ts, f"cool-off of {cooloff_min:g} min elapsed",
                          {"limit": limit})
            return
        if limit > 0 and self.loss_streak >= limit:
            self._set("consecutive_losses", "*", True, ts, f"{self.loss_streak} consecutive losing trades >= {limit}",
                      {"streak": self.loss_streak, "limit": limit}, until=ts + int(cooloff_min * 60))

    def update_market_vol(self, ts: int, vol_pct: float, threshold: float, reset_ratio: float) -> None:
        if vol_pct != vol_pct:  # NaN: warming up
            return
        tripped = self.is_tripped("market_volatility")
        if (not tripped and vol_pct <= threshold) or (tripped and vol_pct >= threshold * reset_ratio):
            return
        ctx = {"vol_annual_pct": round(vol_pct, 2), "threshold_pct": threshold, "reset_ratio": reset_ratio}
        if not tripped and vol_pct > threshold:
            self._set("market_volatility", "*", True, ts, f"market volatility {vol_pct:.0f}% > {threshold:g}% annualized", ctx)
        elif tripped and vol_pct < threshold * reset_ratio:
            self._set("market_volatility", "*", False, ts,
                      f"market volatility {vol_pct:.0f}% < {threshold * reset_ratio:g}% annualized", ctx)

    def update_velocity(self, ts: int, symbol: str, move_pct: float, threshold: float, minutes: float,
                        cooloff_min: float) -> None:
        if move_pct != move_pct:
            return
        key = ("velocity", symbol)
        fast = abs(move_pct) > threshold
        if not fast and key not in self._tripped_keys:
            return
        st = self.states.get(key)
        if fast:
            ctx = {"move_pct": round(move_pct, 3), "threshold_pct": threshold, "window_min": minutes}
            self._set("velocity", symbol, True, ts,
                      f"{symbol} moved {move_pct:+.2f}% within {minutes:g} min (> {threshold:g}%)", ctx,
                      until=ts + int(cooloff_min * 60))
        elif st is not None and st.tripped and (st.until is None or ts >= st.until):
            self._set("velocity", symbol, False, ts, f"{symbol} calm for {cooloff_min:g} min "
                      f"(move {move_pct:+.2f}% <= {threshold:g}%)", {"move_pct": round(move_pct, 3)})

    def update_feed(self, ts: int, symbol: str, anomaly: dict | None) -> None:
        """``anomaly``: the active anomaly overlapping the window (kind, open_time, source, ...) or None."""
        if (anomaly is not None) == self.is_tripped("feed_anomaly", symbol):
            return
        if anomaly is not None:
            self._set("feed_anomaly", symbol, True, ts,
                      f"{symbol} feed anomaly: {anomaly.get('kind')} at {anomaly.get('open_time')} "
                      f"({anomaly.get('source')})", anomaly)
        else:
            self._set("feed_anomaly", symbol, False, ts, f"{symbol} no feed anomaly in the window", {})

    # ---- checkpoint ----
    def to_dict(self) -> dict:
        return {"loss_streak": self.loss_streak, "states": [asdict(s) for s in self.states.values()]}

    @classmethod
    def from_dict(cls, d: dict) -> "BreakerBoard":
        b = cls()
        b.loss_streak = int(d.get("loss_streak", 0))
        for s in d.get("states", []):
            st = BreakerState(**s)
            b.states[(st.breaker, st.scope)] = st
            if st.tripped:
                b._tripped_keys.add((st.breaker, st.scope))
        return b


def manual_on(flag) -> bool:
    """The manual STOP setting's value read as on/off (true, 1, or '1'/'true'/'on'/'yes' in any case)."""
    return flag is True or (isinstance(flag, str) and flag.lower() in ("1", "true", "on", "yes")) or flag == 1


# ---- vectorized inputs (causal) -----------------------------------------------------------------------

def window_bars(minutes: float, tf_seconds: int) -> int:
    """Number of bars covering ``minutes`` (at least 1)."""
    return max(1, int(round(minutes * 60 / tf_seconds)))


def velocity_pct(high: np.ndarray, low: np.ndarray, close: np.ndarray, k: int) -> np.ndarray:
    """Signed fastest move (%) within the last ``k`` bars ending at each bar: +(close / lowest low - 1) when the
    rise is larger, -(1 - close / highest high) when the fall is larger."""
    lo = pd.Series(low).rolling(k, min_periods=1).min().to_numpy()
    hi = pd.Series(high).rolling(k, min_periods=1).max().to_numpy()
    c = np.asarray(close, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = (c / lo - 1.0) * 100.0
        dn = (1.0 - c / hi) * 100.0
    return np.where(up >= dn, up, -dn)


def realized_vol_annual_pct(log_returns: np.ndarray, k: int, tf_seconds: int) -> np.ndarray:
    """Rolling standard deviation (ddof=0) of log returns over ``k`` bars, annualized for a 24/7 market
    (x sqrt(365 x 86400 / tf_seconds)), in percent. NaN until k returns exist."""
    sd = pd.Series(log_returns).rolling(k, min_periods=k).std(ddof=0).to_numpy()
    return sd * math.sqrt(365 * 86400 / tf_seconds) * 100.0
