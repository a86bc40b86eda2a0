"""The strategies the book of eleven adds to ``library.py`` (indicator periods in bars of the run's timeframe; the
defaults are tuned for 1h bars). Shorts are linear perpetuals at 1x: they pay or receive funding at every funding
time while open (``ats.portfolio.funding``).

Long:      growth_potential
Short:     momentum_short, btc_trend_short
Specialty: range_fade_long, range_fade_short (range_fade split by side), btc_swing (long horizon)

Parameter units: ``*_pct`` are percents (4.0 = 4 %), ``*_bps`` basis points, ``*_bars`` / ``*_period`` bars,
``*_hours`` hours, ``*_min`` minutes, money USD. Microstructure thresholds (``micro_params``) are checked in the
entry path by ``ats.risk.microstructure_gate``: a signal without the data it needs is blocked
(``microstructure:no_data``); a threshold set to null switches its condition off.
"""

from __future__ import annotations

import numpy as np

from . import indicators as ind
from .base import Bars, Prepared, Strategy


def _strength(x: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)


class GrowthPotential(Strategy):
    """Long the early turn of a symbol with room to grow, confirmed by rising open interest.

    Rules (bar i, decision at its close):
        room_pct   = (highest high of the last room_bars, bar i included / close - 1) x 100
        vol_ratio  = SMA(volume, volume_fast) / SMA(volume, volume_slow)
        entry      EMA(ema_fast) crosses above EMA(ema_slow) at i and room_pct >= room_min_pct and
                   vol_ratio >= volume_ratio_min
        exit       EMA(ema_fast) < EMA(ema_slow)
        strength   room_pct / (3 x room_min_pct), clipped to [0, 1]
        micro      oi_rising_with_price: open interest up >= oi_rise_min_pct % over oi_lookback_hours with the
                   close up over the same hours (null oi_rise_min_pct = off)

    Parameters: room_bars (bars, 720 = 30 days of 1h), room_min_pct (%), ema_fast / ema_slow (bars),
    volume_fast / volume_slow (bars), volume_ratio_min (ratio), oi_lookback_hours (h), oi_rise_min_pct (%); TP 8 %,
    SL 4 %, trailing 3 % armed at +4 %, cooldown 240 min, max hold 120 h, no adds.
    """

    name = "growth_potential"
    direction = "long"
    kind = "long"
    description = "long the early trend turn of a symbol far below its recent high, with open interest rising"
    rules = ("entry: EMA(ema_fast) crosses above EMA(ema_slow) and (highest high of room_bars / close - 1) >= "
             "room_min_pct % and SMA(volume, volume_fast) / SMA(volume, volume_slow) >= volume_ratio_min; "
             "microstructure: open interest +oi_rise_min_pct % over oi_lookback_hours with price up; exit: "
             "EMA(ema_fast) < EMA(ema_slow); strength = room / (3 x room_min_pct)")
    own_params = {"room_bars": 720, "room_min_pct": 10.0, "ema_fast": 20, "ema_slow": 50, "volume_fast": 24,
                  "volume_slow": 168, "volume_ratio_min": 1.2}
    common_overrides = {"tp_pct": 8.0, "sl_pct": 4.0, "trailing_pct": 3.0, "trailing_activation_pct": 4.0,
                        "cooldown_min": 240, "max_hold_hours": 120, "max_adds": 0}
    micro_gates = ("oi_rising_with_price",)
    micro_params = {"oi_lookback_hours": 24, "oi_rise_min_pct": 2.0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        ef, es = ind.ema(c, int(p["ema_fast"])), ind.ema(c, int(p["ema_slow"]))
        top = ind.rolling_max(bars.high, int(p["room_bars"]))
        vr = ind.sma(bars.volume, int(p["volume_fast"])) / ind.sma(bars.volume, int(p["volume_slow"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            room = (top / c - 1.0) * 100.0
            entry = ind.cross_up(ef, es) & (room >= p["room_min_pct"]) & (vr >= p["volume_ratio_min"])
            ex = ef < es
        return Prepared(entry.astype(np.int8), ex, np.zeros(len(c), dtype=bool),
                        _strength(room / (3 * p["room_min_pct"])),
                        {"ema_fast": ef, "ema_slow": es, "room_pct": room, "volume_ratio": vr})


class MomentumShort(Strategy):
    """Short the down-trend with strong negative momentum (linear perp, 1x); mirror of ``momentum``.

    Rules:
        entry      close < EMA(ema_period) and ROC(roc_bars) <= -roc_min_pct % and rsi_min <= RSI(rsi_period)
                   <= rsi_max (edge: the bar the condition becomes true)
        exit       RSI > exit_rsi or close > EMA(ema_period)
        strength   -ROC / (3 x roc_min_pct), clipped to [0, 1]
        micro      funding_floor: the last settled funding rate >= funding_min_bps bps / 8 h (shorts pay
                   negative rates; -1.0 = pay at most 1 bp per 8 h)

    Parameters: ema_period (bars), roc_bars (bars), roc_min_pct (%), rsi_period (bars), rsi_min / rsi_max /
    exit_rsi (RSI points 0..100), funding_min_bps (bps per 8 h); TP 6 %, SL 3 %, trailing 2.5 % armed at +3 %,
    cooldown 240 min, max hold 72 h, one add.
    """

    name = "momentum_short"
    direction = "short"
    kind = "short"
    description = "trend-following short: price below its EMA with strongly negative rate of change (perp, 1x)"
    rules = ("entry: close < EMA(ema_period) and ROC(roc_bars) <= -roc_min_pct % and rsi_min <= RSI(rsi_period) "
             "<= rsi_max (edge); microstructure: funding >= funding_min_bps bps/8h; exit: RSI > exit_rsi or close "
             "> EMA(ema_period); strength = -ROC / (3 x roc_min)")
    own_params = {"ema_period": 50, "roc_bars": 24, "roc_min_pct": 3.0, "rsi_period": 14, "rsi_min": 25.0,
                  "rsi_max": 45.0, "exit_rsi": 55.0}
    common_overrides = {"tp_pct": 6.0, "sl_pct": 3.0, "trailing_pct": 2.5, "trailing_activation_pct": 3.0,
                        "cooldown_min": 240, "max_hold_hours": 72, "max_adds": 1}
    micro_gates = ("funding_floor",)
    micro_params = {"funding_min_bps": -1.0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        e = ind.ema(c, int(p["ema_period"]))
        r = ind.roc(c, int(p["roc_bars"]))
        rs = ind.rsi(c, int(p["rsi_period"]))
        with np.errstate(invalid="ignore"):
            cond = (c < e) & (r * 100 <= -p["roc_min_pct"]) & (rs >= p["rsi_min"]) & (rs <= p["rsi_max"])
            ex = (rs > p["exit_rsi"]) | (c > e)
        return Prepared(-ind.edge(cond).astype(np.int8), np.zeros(len(c), dtype=bool), ex,
                        _strength(-r * 100 / (3 * p["roc_min_pct"])), {"ema": e, "roc": r, "rsi": rs})


class BtcTrendShort(Strategy):
    """Short only in a confirmed BTC bear regime: EMA-50 rejections and volatility-squeeze breakdowns (perp, 1x).

    The regime is the effective BTC regime (``ats.regime.rules``: an effective bear has held 12 h, i.e. it is
    confirmed). Rules:
        bear        regime code < 0 (bear, strong_bear)
        rejection   bear and EMA(ema_period) < EMA(ema_trend) and high >= EMA x (1 - touch_pct %) and close <
                    EMA and the previous close < the previous EMA (the rally tested the EMA from below and failed)
        squeeze     bear and the Bollinger width (upper - lower) / middle x 100 stayed <= squeeze_max_pct over the
                    previous squeeze_bars bars and close < lower band (the squeeze resolves downwards)
        entry       short on the edge of (rejection or squeeze)
        exit        close > EMA x (1 + exit_buffer_pct %) or the regime is no longer bear
        strength    regime weight (strong_bear 1.0, bear 0.8) x setup weight (rejection 1.0, squeeze 0.8)
        micro       funding_floor (hard gate): last funding rate >= funding_min_bps bps / 8 h

    Parameters: ema_period / ema_trend (bars), touch_pct (%), bb_period (bars), bb_std (standard deviations),
    squeeze_bars (bars), squeeze_max_pct (% of the middle band), exit_buffer_pct (%), funding_min_bps (bps per
    8 h); TP 5 %, SL 2.5 %, trailing 2 % armed at +2.5 %, cooldown 240 min, max hold 72 h, one add.
    """

    name = "btc_trend_short"
    direction = "short"
    kind = "short"
    uses_regime = True
    description = ("short in confirmed BTC bear regimes: EMA-50 rejections and volatility-squeeze breakdowns, "
                   "funding cost as a hard gate")
    rules = ("regime bear/strong_bear only. rejection: EMA(ema_period) < EMA(ema_trend), high within touch_pct % "
             "of the EMA or above, close < EMA, previous close < previous EMA; squeeze: Bollinger width <= "
             "squeeze_max_pct % over the previous squeeze_bars and close < lower band; entry on the edge of "
             "either; microstructure: funding >= funding_min_bps bps/8h; exit: close > EMA x (1 + exit_buffer_pct "
             "%) or regime not bear. Static weights: regime (strong_bear 1.0, bear 0.8) x setup (rejection 1.0, "
             "squeeze 0.8)")
    own_params = {"ema_period": 50, "ema_trend": 200, "touch_pct": 0.5, "bb_period": 20, "bb_std": 2.0,
                  "squeeze_bars": 24, "squeeze_max_pct": 4.0, "exit_buffer_pct": 1.0}
    common_overrides = {"tp_pct": 5.0, "sl_pct": 2.5, "trailing_pct": 2.0, "trailing_activation_pct": 2.5,
                        "cooldown_min": 240, "max_hold_hours": 72, "max_adds": 1}
    micro_gates = ("funding_floor",)
    micro_params = {"funding_min_bps": -1.0}
    REGIME_WEIGHT = {"strong_bear": 1.0, "bear": 0.8}  # codes -2, -1
    SETUP_WEIGHT = {"rejection": 1.0, "squeeze": 0.8}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c, h = bars.close, bars.high
        n = len(c)
        reg = np.zeros(n, dtype=np.int8) if regime is None else np.asarray(regime, dtype=np.int8)
        e, et = ind.ema(c, int(p["ema_period"])), ind.ema(c, int(p["ema_trend"]))
        lo, mid, up = ind.bollinger(c, int(p["bb_period"]), float(p["bb_std"]))
        bear = reg < 0
        with np.errstate(invalid="ignore", divide="ignore"):
            width = (up - lo) / mid * 100.0
            tight = ind.shift(ind.rolling_max(width, int(p["squeeze_bars"])), 1) <= p["squeeze_max_pct"]
            rej = (bear & (e < et) & (h >= e * (1 - p["touch_pct"] / 100.0)) & (c < e)
                   & (ind.shift(c, 1) < ind.shift(e, 1)))
            sq = bear & tight & (c < lo)
            ex = (c > e * (1 + p["exit_buffer_pct"] / 100.0)) | (reg >= 0)
        fire = ind.edge(rej | sq)
        rw = np.select([reg == -2, reg == -1], [self.REGIME_WEIGHT["strong_bear"], self.REGIME_WEIGHT["bear"]], 0.0)
        strength = np.where(fire & rej, rw * self.SETUP_WEIGHT["rejection"],
                            np.where(fire & sq, rw * self.SETUP_WEIGHT["squeeze"], 0.0))
        return Prepared(-fire.astype(np.int8), np.zeros(n, dtype=bool), ex, strength,
                        {"ema": e, "ema_trend": et, "bb_lower": lo, "bb_width_pct": width,
                         "regime_code": reg.astype(np.float64), "setup_rejection": rej.astype(np.float64)})


class BtcSwing(Strategy):
    """Long-horizon swing long while the BTC regime is bullish (holds for days to weeks).

    Rules:
        entry      edge of: regime code > 0 (bull, strong_bull) and EMA(ema_fast) > EMA(ema_slow) and close >
                   EMA(ema_fast) and ROC(roc_bars) >= roc_min_pct %
        exit       close < EMA(ema_slow) or the regime turns bear (code < 0)
        strength   regime weight: strong_bull 1.0, bull 0.8

    Parameters: ema_fast (bars, 240 = 10 days of 1h), ema_slow (bars, 720 = 30 days), roc_bars (bars, 168 = 7
    days), roc_min_pct (%); TP 25 %, SL 10 %, trailing 8 % armed at +12 %, cooldown 1440 min, max hold 720 h, no
    adds.
    """

    name = "btc_swing"
    direction = "long"
    kind = "specialty"
    uses_regime = True
    description = "long-horizon swing long in bullish BTC regimes: 10-day over 30-day EMA with positive 7-day momentum"
    rules = ("entry: edge of (regime bull/strong_bull and EMA(ema_fast) > EMA(ema_slow) and close > EMA(ema_fast) "
             "and ROC(roc_bars) >= roc_min_pct %); exit: close < EMA(ema_slow) or regime bear; strength = regime "
             "weight (strong_bull 1.0, bull 0.8)")
    own_params = {"ema_fast": 240, "ema_slow": 720, "roc_bars": 168, "roc_min_pct": 5.0}
    common_overrides = {"tp_pct": 25.0, "sl_pct": 10.0, "trailing_pct": 8.0, "trailing_activation_pct": 12.0,
                        "cooldown_min": 1440, "max_hold_hours": 720, "max_adds": 0}
    REGIME_WEIGHT = {"strong_bull": 1.0, "bull": 0.8}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        n = len(c)
        reg = np.zeros(n, dtype=np.int8) if regime is None else np.asarray(regime, dtype=np.int8)
        ef, es = ind.ema(c, int(p["ema_fast"])), ind.ema(c, int(p["ema_slow"]))
        r = ind.roc(c, int(p["roc_bars"]))
        with np.errstate(invalid="ignore"):
            cond = (reg > 0) & (ef > es) & (c > ef) & (r * 100 >= p["roc_min_pct"])
            ex = (c < es) | (reg < 0)
        entry = ind.edge(cond)
        rw = np.select([reg == 2, reg == 1], [self.REGIME_WEIGHT["strong_bull"], self.REGIME_WEIGHT["bull"]], 0.0)
        return Prepared(entry.astype(np.int8), ex, np.zeros(n, dtype=bool), np.where(entry, rw, 0.0),
                        {"ema_fast": ef, "ema_slow": es, "roc": r, "regime_code": reg.astype(np.float64)})


def range_arrays(bars: Bars, p: dict) -> dict:
    """The quiet-range arrays shared by the range-fade strategies.

    range high / low = highest high / lowest low of the previous ``range_bars`` bars; mid = their mean; width =
    (high - low) / mid x 100 (%); ranging = ADX(adx_period) < adx_max and width < max_width_pct; band = (high -
    low) x edge_frac (price units).
    """
    c = bars.close
    n = int(p["range_bars"])
    hi, lo = ind.donchian_high(bars.high, n), ind.donchian_low(bars.low, n)
    mid = (hi + lo) / 2
    a = ind.adx(bars.high, bars.low, c, int(p["adx_period"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        width = (hi - lo) / mid * 100
        ranging = (a < p["adx_max"]) & (width < p["max_width_pct"])
        band = (hi - lo) * p["edge_frac"]
    return {"c": c, "hi": hi, "lo": lo, "mid": mid, "adx": a, "width": width, "ranging": ranging, "band": band}


_RANGE_PARAMS = {"range_bars": 72, "adx_period": 14, "adx_max": 20.0, "max_width_pct": 8.0, "edge_frac": 0.15}


class RangeFadeLong(Strategy):
    """Buy near the low of a quiet range (the long half of the former ``range_fade``).

    Rules:
        ranging    ADX(adx_period) < adx_max and (range high - range low) / mid x 100 < max_width_pct, range high
                   / low = highest high / lowest low of the previous range_bars
        entry      edge of: ranging and range low < close <= range low + edge_frac x (high - low)
        exit       close >= mid or close < range low
        strength   1 - ADX / adx_max

    Parameters: range_bars (bars), adx_period (bars), adx_max (ADX points), max_width_pct (%), edge_frac (fraction
    of the range, 0..0.5); TP 2.5 %, SL 2 %, cooldown 120 min, max hold 24 h, no adds.
    """

    name = "range_fade_long"
    direction = "long"
    kind = "specialty"
    description = "fade the low edge of a quiet range: buy near its low"
    rules = ("range: ADX(adx_period) < adx_max and (range high - range low) / mid < max_width_pct %, range high/low "
             "= highest high / lowest low of the previous range_bars; entry when close is in the bottom edge_frac "
             "of the range and above its low (edge); exit at the mid or below the low; strength = 1 - ADX / adx_max")
    own_params = dict(_RANGE_PARAMS)
    common_overrides = {"tp_pct": 2.5, "sl_pct": 2.0, "cooldown_min": 120, "max_hold_hours": 24, "max_adds": 0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        r = range_arrays(bars, p)
        c = r["c"]
        with np.errstate(invalid="ignore"):
            cond = r["ranging"] & (c > r["lo"]) & (c <= r["lo"] + r["band"])
            ex = (c >= r["mid"]) | (c < r["lo"])
        return Prepared(ind.edge(cond).astype(np.int8), ex, np.zeros(len(c), dtype=bool),
                        _strength(1 - r["adx"] / p["adx_max"]),
                        {"range_high": r["hi"], "range_low": r["lo"], "adx": r["adx"], "width_pct": r["width"]})


class RangeFadeShort(Strategy):
    """Short near the high of a quiet range (the short half of the former ``range_fade``; linear perp, 1x).

    Rules:
        ranging    as ``range_fade_long``
        entry      edge of: ranging and range high - edge_frac x (high - low) <= close < range high
        exit       close <= mid or close > range high
        strength   1 - ADX / adx_max

    Parameters: as ``range_fade_long`` (range_bars, adx_period, adx_max, max_width_pct %, edge_frac); TP 2.5 %,
    SL 2 %, cooldown 120 min, max hold 24 h, no adds.
    """

    name = "range_fade_short"
    direction = "short"
    kind = "specialty"
    description = "fade the high edge of a quiet range: short near its high (perp, 1x)"
    rules = ("range: as range_fade_long; entry when close is in the top edge_frac of the range and below its high "
             "(edge); exit at the mid or above the high; strength = 1 - ADX / adx_max")
    own_params = dict(_RANGE_PARAMS)
    common_overrides = {"tp_pct": 2.5, "sl_pct": 2.0, "cooldown_min": 120, "max_hold_hours": 24, "max_adds": 0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        r = range_arrays(bars, p)
        c = r["c"]
        with np.errstate(invalid="ignore"):
            cond = r["ranging"] & (c < r["hi"]) & (c >= r["hi"] - r["band"])
            ex = (c <= r["mid"]) | (c > r["hi"])
        return Prepared(-ind.edge(cond).astype(np.int8), np.zeros(len(c), dtype=bool), ex,
                        _strength(1 - r["adx"] / p["adx_max"]),
                        {"range_high": r["hi"], "range_low": r["lo"], "adx": r["adx"], "width_pct": r["width"]})


BOOK_ADDITIONS = [GrowthPotential(), MomentumShort(), BtcTrendShort(), RangeFadeLong(), RangeFadeShort(), BtcSwing()]
