"""BTC market regime: strong_bull / bull / neutral / bear / strong_bear from documented rules.

Inputs: BTC closes of any timeframe (the engine uses the run's timeframe). Window lengths are given in hours and
converted to bars, so the same rules apply to 5m, 1h or 1d candles.

Metrics at bar i (all causal, see ats.strategies.indicators):
    ema_fast = EMA(close, ema_fast_hours)            default 72 h  (3 days)
    ema_slow = EMA(close, ema_slow_hours)            default 240 h (10 days)
    ret      = close[i] / close[i - ret_hours] - 1   default 168 h (7 days), a fraction

Raw classification (first rule that matches):
    strong_bull  close > ema_fast > ema_slow  and ret >= +strong_ret_pct %    (default 10 %)
    bull         close > ema_slow and ema_fast > ema_slow and ret > 0
    strong_bear  close < ema_fast < ema_slow  and ret <= -strong_ret_pct %
    bear         close < ema_slow and ema_fast < ema_slow and ret < 0
    neutral      otherwise (also while warming up: fewer bars than max(ema_slow_hours, ret_hours))

Confirmation (hysteresis): the *effective* regime changes to a new raw regime only after the raw regime has held
for ``confirm_hours`` consecutive hours (default 12). ``confirmed`` is False until the first confirmation after
warm-up (the effective regime is 'neutral' then), True afterwards. Strategies read the effective regime: long
strategies pause while it is bear/strong_bear and confirmed, short strategies while bull/strong_bull and
confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..strategies import indicators as ind

REGIMES = ("strong_bear", "bear", "neutral", "bull", "strong_bull")
#: regime name -> integer code (-2..2); arrays carry codes for speed
CODE = {name: i - 2 for i, name in enumerate(REGIMES)}
NAME = {v: k for k, v in CODE.items()}
BULLISH = frozenset({"bull", "strong_bull"})
BEARISH = frozenset({"bear", "strong_bear"})

DEFAULT_REGIME_PARAMS = {
    "ema_fast_hours": 72,
    "ema_slow_hours": 240,
    "ret_hours": 168,
    "strong_ret_pct": 10.0,
    "confirm_hours": 12,
}


@dataclass
class RegimeSeries:
    """Per-bar regime of a BTC series: ``raw``/``effective`` int8 codes (see CODE), ``confirmed`` bool, the
    metrics (float64 arrays, ret as a fraction) and ``t`` (open times, Unix seconds)."""

    t: np.ndarray
    close: np.ndarray
    ema_fast: np.ndarray
    ema_slow: np.ndarray
    ret: np.ndarray
    raw: np.ndarray
    effective: np.ndarray
    confirmed: np.ndarray
    bars_in_raw: np.ndarray
    params: dict = field(default_factory=dict)

    def metrics(self, i: int) -> dict:
        """JSON-ready metrics of bar i (the btc_market_state.metrics shape)."""
        def f(x):
            v = float(x)
            return None if v != v else round(v, 8)
        return {"close": f(self.close[i]), "ema_fast": f(self.ema_fast[i]), "ema_slow": f(self.ema_slow[i]),
                "ret_7d_pct": None if self.ret[i] != self.ret[i] else round(float(self.ret[i]) * 100, 4),
                "raw": NAME[int(self.raw[i])], "bars_in_raw": int(self.bars_in_raw[i]),
                "rules": "ema_fast/ema_slow/ret (ats.regime.rules)"}


def _bars(hours: float, tf_seconds: int) -> int:
    return max(1, int(round(hours * 3600 / tf_seconds)))


def classify(t: np.ndarray, close: np.ndarray, tf_seconds: int, params: dict | None = None) -> RegimeSeries:
    """Classify every bar of a BTC close series (causal). ``t``: open times (Unix s); ``tf_seconds``: bar length.

    Returns a RegimeSeries; see the module docstring for the rules and defaults.
    """
    p = {**DEFAULT_REGIME_PARAMS, **(params or {})}
    c = np.asarray(close, dtype=np.float64)
    nf, ns, nr = (_bars(p["ema_fast_hours"], tf_seconds), _bars(p["ema_slow_hours"], tf_seconds),
                  _bars(p["ret_hours"], tf_seconds))
    ncf = _bars(p["confirm_hours"], tf_seconds)
    ef, es, r = ind.ema(c, nf), ind.ema(c, ns), ind.roc(c, nr)
    strong = p["strong_ret_pct"] / 100.0
    raw = np.zeros(len(c), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        sb = (c > ef) & (ef > es) & (r >= strong)
        b = (c > es) & (ef > es) & (r > 0)
        sbe = (c < ef) & (ef < es) & (r <= -strong)
        be = (c < es) & (ef < es) & (r < 0)
    # first match wins: assign in reverse priority order
    raw[be] = CODE["bear"]
    raw[sbe] = CODE["strong_bear"]
    raw[b] = CODE["bull"]
    raw[sb] = CODE["strong_bull"]
    warm = max(ns, nr)
    raw[:warm] = CODE["neutral"]
    n = len(c)
    eff = np.zeros(n, dtype=np.int8)
    conf = np.zeros(n, dtype=bool)
    run = np.zeros(n, dtype=np.int32)
    cur, confirmed, streak, prev = CODE["neutral"], False, 0, None
    for i in range(n):
        rv = int(raw[i])
        streak = streak + 1 if rv == prev else 1
        prev = rv
        if i >= warm and streak >= ncf and (rv != cur or not confirmed):
            cur, confirmed = rv, True
        eff[i], conf[i], run[i] = cur, confirmed, streak
    return RegimeSeries(t=np.asarray(t, dtype=np.int64), close=c, ema_fast=ef, ema_slow=es, ret=r, raw=raw,
                        effective=eff, confirmed=conf, bars_in_raw=run, params=p)


def pauses(direction: str, regime_code: int, confirmed: bool) -> bool:
    """True when a strategy side ('long'/'short') must pause: long in confirmed bear/strong_bear, short in
    confirmed bull/strong_bull."""
    if not confirmed:
        return False
    if direction == "long":
        return regime_code < 0
    return regime_code > 0
