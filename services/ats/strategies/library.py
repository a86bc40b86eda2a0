"""The original ATS strategies. Indicator periods are in bars of the run's timeframe (the defaults are tuned for 1h).

In the book of eleven (``ats.strategies.BOOK``; the other six are in ``book.py``):
Long:      momentum, mean_reversion, btc_trend (hybrid, uses the BTC regime)
Short:     trend_breakdown, mean_reversion_short (linear perpetual, 1x leverage)
Reference strategies (registered, usable in backtests and sweeps, not in the book or the demo):
           volatility_breakout, range_fade (both sides; split into range_fade_long / range_fade_short in the
           book, kept so runs that used it can be resumed and compared), sma_cross (SMA 20/50 cross, the
           benchmark's strategy)

Parameter units: ``*_pct`` percents (3.0 = 3 %), ``*_period`` / ``*_bars`` bars, ``*_rsi`` RSI points (0..100),
``*_std`` standard deviations, ``*_hours`` hours, ``*_min`` minutes, money USD.

Entries are edge-triggered (the bar where the entry condition becomes true). Exits listed here are the
strategy's own exit signals; TP / SL / trailing stop / max hold from the params are checked by the engine for
every strategy on every bar.
"""

from __future__ import annotations

import numpy as np

from . import indicators as ind
from .base import Bars, Prepared, Strategy


def _strength(x: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)


class Momentum(Strategy):
    """Trend-following long. Params: ema_period, roc_bars, rsi_period (bars); roc_min_pct (%); rsi_min, rsi_max,
    exit_rsi (RSI points); TP 6 %, SL 3 %, trailing 2.5 % armed at +3 %, cooldown 240 min, max hold 72 h, 1 add."""

    name = "momentum"
    direction = "long"
    kind = "long"
    description = "trend-following long: price above its EMA with strong rate of change and firm RSI"
    rules = ("entry: close > EMA(ema_period) and ROC(roc_bars) >= roc_min_pct % and rsi_min <= RSI(rsi_period) "
             "<= rsi_max (edge); exit: RSI < exit_rsi or close < EMA(ema_period); strength = ROC / (3 x roc_min)")
    own_params = {"ema_period": 50, "roc_bars": 24, "roc_min_pct": 3.0, "rsi_period": 14, "rsi_min": 55.0,
                  "rsi_max": 75.0, "exit_rsi": 45.0}
    common_overrides = {"tp_pct": 6.0, "sl_pct": 3.0, "trailing_pct": 2.5, "trailing_activation_pct": 3.0,
                        "cooldown_min": 240, "max_hold_hours": 72, "max_adds": 1}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        e = ind.ema(c, int(p["ema_period"]))
        r = ind.roc(c, int(p["roc_bars"]))
        rs = ind.rsi(c, int(p["rsi_period"]))
        with np.errstate(invalid="ignore"):
            cond = (c > e) & (r * 100 >= p["roc_min_pct"]) & (rs >= p["rsi_min"]) & (rs <= p["rsi_max"])
            ex = (rs < p["exit_rsi"]) | (c < e)
        entry = ind.edge(cond).astype(np.int8)
        return Prepared(entry, ex, np.zeros(len(c), dtype=bool),
                        _strength(r * 100 / (3 * p["roc_min_pct"])), {"ema": e, "roc": r, "rsi": rs})


class MeanReversion(Strategy):
    """Oversold-dip long. Params: bb_period, rsi_period (bars); bb_std (standard deviations); rsi_max (RSI
    points); TP 3 %, SL 4 %, cooldown 180 min, max hold 48 h, 1 add."""

    name = "mean_reversion"
    direction = "long"
    kind = "long"
    description = "long the oversold dip: close below the lower Bollinger band with a low RSI"
    rules = ("entry: close < lower BB(bb_period, bb_std) and RSI(rsi_period) < rsi_max (edge); exit: close >= "
             "middle band; strength = (rsi_max - RSI) / rsi_max")
    own_params = {"bb_period": 20, "bb_std": 2.0, "rsi_period": 14, "rsi_max": 30.0}
    common_overrides = {"tp_pct": 3.0, "sl_pct": 4.0, "cooldown_min": 180, "max_hold_hours": 48, "max_adds": 1}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        lo, mid, up = ind.bollinger(c, int(p["bb_period"]), float(p["bb_std"]))
        rs = ind.rsi(c, int(p["rsi_period"]))
        with np.errstate(invalid="ignore"):
            cond = (c < lo) & (rs < p["rsi_max"])
            ex = c >= mid
        return Prepared(ind.edge(cond).astype(np.int8), ex, np.zeros(len(c), dtype=bool),
                        _strength((p["rsi_max"] - rs) / p["rsi_max"]),
                        {"bb_lower": lo, "bb_mid": mid, "rsi": rs})


class VolatilityBreakout(Strategy):
    """Reference (not in the book): range breakout long. Params: donchian_bars, atr_period, atr_avg_bars,
    volume_bars, exit_bars (bars); atr_ratio_min, volume_mult (ratios); TP 8 %, SL 3 %, trailing 3 % armed at
    +4 %, cooldown 240 min, max hold 96 h, no adds."""

    name = "volatility_breakout"
    direction = "long"
    kind = "reference"
    description = "long the range breakout when volatility and volume expand"
    rules = ("entry: close > highest high of the previous donchian_bars and ATR(atr_period) / SMA(ATR, "
             "atr_avg_bars) >= atr_ratio_min and volume >= volume_mult x SMA(volume, volume_bars) (edge); exit: "
             "close < lowest low of the previous exit_bars; strength = ATR ratio - 1")
    own_params = {"donchian_bars": 48, "atr_period": 14, "atr_avg_bars": 100, "atr_ratio_min": 1.1,
                  "volume_bars": 20, "volume_mult": 1.5, "exit_bars": 24}
    common_overrides = {"tp_pct": 8.0, "sl_pct": 3.0, "trailing_pct": 3.0, "trailing_activation_pct": 4.0,
                        "cooldown_min": 240, "max_hold_hours": 96, "max_adds": 0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        hi = ind.donchian_high(bars.high, int(p["donchian_bars"]))
        lo = ind.donchian_low(bars.low, int(p["exit_bars"]))
        a = ind.atr(bars.high, bars.low, c, int(p["atr_period"]))
        ratio = a / ind.sma(a, int(p["atr_avg_bars"]))
        vavg = ind.sma(bars.volume, int(p["volume_bars"]))
        with np.errstate(invalid="ignore"):
            cond = (c > hi) & (ratio >= p["atr_ratio_min"]) & (bars.volume >= p["volume_mult"] * vavg)
            ex = c < lo
        return Prepared(ind.edge(cond).astype(np.int8), ex, np.zeros(len(c), dtype=bool), _strength(ratio - 1.0),
                        {"donchian_high": hi, "exit_low": lo, "atr_ratio": ratio, "volume_avg": vavg})


class BtcTrend(Strategy):
    """BTC-regime hybrid long. Params: ema_period, rsi_period, breakout_bars (bars); pullback_rsi (RSI points);
    exit_buffer_pct (%); TP 6 %, SL 3 %, trailing 3 % armed at +3 %, cooldown 240 min, max hold 120 h, 1 add."""

    name = "btc_trend"
    direction = "long"
    kind = "long"
    uses_regime = True
    description = ("hybrid long on the BTC regime: pullback buyer in bull, breakout catcher in neutral, no "
                   "entries in bear")
    rules = ("regime bull/strong_bull: entry when close > EMA(ema_period) and RSI(rsi_period) crosses up through "
             "pullback_rsi; regime neutral: entry when close > highest high of the previous breakout_bars and "
             "close > EMA(ema_period); regime bear/strong_bear: no entries. exit: close < EMA x (1 - "
             "exit_buffer_pct %) or the regime turns bear. Static weights: strength = regime weight (strong_bull "
             "1.0, bull 0.8, neutral 0.5) x setup weight (pullback 1.0, breakout 0.8)")
    own_params = {"ema_period": 100, "rsi_period": 14, "pullback_rsi": 40.0, "breakout_bars": 24,
                  "exit_buffer_pct": 1.0}
    common_overrides = {"tp_pct": 6.0, "sl_pct": 3.0, "trailing_pct": 3.0, "trailing_activation_pct": 3.0,
                        "cooldown_min": 240, "max_hold_hours": 120, "max_adds": 1}
    REGIME_WEIGHT = {"strong_bull": 1.0, "bull": 0.8, "neutral": 0.5}  # codes 2, 1, 0 (ats.regime.CODE)
    SETUP_WEIGHT = {"pullback": 1.0, "breakout": 0.8}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        n = len(c)
        reg = np.zeros(n, dtype=np.int8) if regime is None else np.asarray(regime, dtype=np.int8)
        e = ind.ema(c, int(p["ema_period"]))
        rs = ind.rsi(c, int(p["rsi_period"]))
        hi = ind.donchian_high(bars.high, int(p["breakout_bars"]))
        prs = ind.shift(rs, 1)
        bull = reg > 0
        neutral = reg == 0
        with np.errstate(invalid="ignore"):
            pull = bull & (c > e) & (prs < p["pullback_rsi"]) & (rs >= p["pullback_rsi"])
            brk = ind.edge(neutral & (c > hi) & (c > e))
            ex = (c < e * (1 - p["exit_buffer_pct"] / 100.0)) | (reg < 0)
        entry = (pull | brk).astype(np.int8)
        rw = np.select([reg == 2, reg == 1, reg == 0], [self.REGIME_WEIGHT[k] for k in ("strong_bull", "bull", "neutral")], 0.0)
        strength = np.where(pull, rw * self.SETUP_WEIGHT["pullback"], np.where(brk, rw * self.SETUP_WEIGHT["breakout"], 0.0))
        return Prepared(entry, ex, np.zeros(n, dtype=bool), strength,
                        {"ema": e, "rsi": rs, "breakout_high": hi, "regime_code": reg.astype(np.float64),
                         "setup_pullback": pull.astype(np.float64)})


class TrendBreakdown(Strategy):
    """Breakdown short (linear perp, 1x). Params: donchian_bars, ema_fast, ema_slow, exit_ema (bars); TP 6 %,
    SL 3 %, trailing 2.5 % armed at +3 %, cooldown 240 min, max hold 72 h, 1 add."""

    name = "trend_breakdown"
    direction = "short"
    kind = "short"
    description = "short the breakdown below the recent range in a down-trend (linear perp, 1x)"
    rules = ("entry: close < lowest low of the previous donchian_bars and EMA(ema_fast) < EMA(ema_slow) and close "
             "< EMA(ema_fast) (edge); exit: close > EMA(exit_ema); strength = (EMA slow - EMA fast) / EMA slow x 20")
    own_params = {"donchian_bars": 48, "ema_fast": 50, "ema_slow": 200, "exit_ema": 20}
    common_overrides = {"tp_pct": 6.0, "sl_pct": 3.0, "trailing_pct": 2.5, "trailing_activation_pct": 3.0,
                        "cooldown_min": 240, "max_hold_hours": 72, "max_adds": 1}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        lo = ind.donchian_low(bars.low, int(p["donchian_bars"]))
        ef, es = ind.ema(c, int(p["ema_fast"])), ind.ema(c, int(p["ema_slow"]))
        ex_e = ind.ema(c, int(p["exit_ema"]))
        with np.errstate(invalid="ignore"):
            cond = (c < lo) & (ef < es) & (c < ef)
            ex = c > ex_e
        entry = -ind.edge(cond).astype(np.int8)
        return Prepared(entry, np.zeros(len(c), dtype=bool), ex, _strength((es - ef) / es * 20),
                        {"donchian_low": lo, "ema_fast": ef, "ema_slow": es, "exit_ema": ex_e})


class MeanReversionShort(Strategy):
    """Overbought-spike short (linear perp, 1x). Params: bb_period, rsi_period (bars); bb_std (standard
    deviations); rsi_min (RSI points); TP 3 %, SL 4 %, cooldown 180 min, max hold 48 h, 1 add."""

    name = "mean_reversion_short"
    direction = "short"
    kind = "short"
    description = "short the overbought spike: close above the upper Bollinger band with a high RSI (perp, 1x)"
    rules = ("entry: close > upper BB(bb_period, bb_std) and RSI(rsi_period) > rsi_min (edge); exit: close <= "
             "middle band; strength = (RSI - rsi_min) / (100 - rsi_min)")
    own_params = {"bb_period": 20, "bb_std": 2.5, "rsi_period": 14, "rsi_min": 75.0}
    common_overrides = {"tp_pct": 3.0, "sl_pct": 4.0, "cooldown_min": 180, "max_hold_hours": 48, "max_adds": 1}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        lo, mid, up = ind.bollinger(c, int(p["bb_period"]), float(p["bb_std"]))
        rs = ind.rsi(c, int(p["rsi_period"]))
        with np.errstate(invalid="ignore"):
            cond = (c > up) & (rs > p["rsi_min"])
            ex = c <= mid
        return Prepared(-ind.edge(cond).astype(np.int8), np.zeros(len(c), dtype=bool), ex,
                        _strength((rs - p["rsi_min"]) / (100 - p["rsi_min"])),
                        {"bb_upper": up, "bb_mid": mid, "rsi": rs})


class RangeFade(Strategy):
    """Reference (not in the book; split into range_fade_long / range_fade_short): both edges of a quiet range.
    Params: range_bars, adx_period (bars); adx_max (ADX points); max_width_pct (%); edge_frac (fraction of the
    range); TP 2.5 %, SL 2 %, cooldown 120 min, max hold 24 h, no adds."""

    name = "range_fade"
    direction = "both"
    kind = "reference"
    description = "fade the edges of a quiet range: buy near its low, short near its high"
    rules = ("range: ADX(adx_period) < adx_max and (range high - range low) / mid < max_width_pct %, where range "
             "high/low are the highest high / lowest low of the previous range_bars; long entry when close is in "
             "the bottom edge_frac of the range and above its low (edge); short entry when in the top edge_frac "
             "and below its high (edge); exit long at the mid or below the low, short at the mid or above the "
             "high; strength = 1 - ADX / adx_max")
    own_params = {"range_bars": 72, "adx_period": 14, "adx_max": 20.0, "max_width_pct": 8.0, "edge_frac": 0.15}
    common_overrides = {"tp_pct": 2.5, "sl_pct": 2.0, "cooldown_min": 120, "max_hold_hours": 24, "max_adds": 0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        from .book import range_arrays  # the range arithmetic shared with range_fade_long / range_fade_short

        r = range_arrays(bars, p)
        c, hi, lo, mid, a, width, ranging, band = (r[k] for k in ("c", "hi", "lo", "mid", "adx", "width", "ranging",
                                                                  "band"))
        with np.errstate(invalid="ignore", divide="ignore"):
            long_c = ranging & (c > lo) & (c <= lo + band)
            short_c = ranging & (c < hi) & (c >= hi - band)
            ex_l = (c >= mid) | (c < lo)
            ex_s = (c <= mid) | (c > hi)
        entry = ind.edge(long_c).astype(np.int8) - ind.edge(short_c).astype(np.int8)
        return Prepared(entry, ex_l, ex_s, _strength(1 - a / p["adx_max"]),
                        {"range_high": hi, "range_low": lo, "adx": a, "width_pct": width})


class SmaCross(Strategy):
    """Reference: the benchmark's SMA cross. Params: fast, slow (bars); regime_pause false; no TP/SL/trailing/max
    hold, trade_amount_usd 10,000 USD."""

    name = "sma_cross"
    direction = "both"
    kind = "reference"
    description = "reference SMA(fast)/SMA(slow) cross, always in the market (the benchmark's strategy)"
    rules = ("long entry when SMA(fast) crosses above SMA(slow); short entry when it crosses below; each cross "
             "also exits the opposite side; no TP/SL/trailing/max hold and no regime pause by default (like the "
             "textbook version)")
    own_params = {"fast": 20, "slow": 50, "regime_pause": False}
    common_overrides = {"tp_pct": 0.0, "sl_pct": 0.0, "trailing_pct": 0.0, "cooldown_min": 0,
                        "max_hold_hours": 0, "max_adds": 0, "trade_amount_usd": 10000.0}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        f, s = ind.sma(c, int(p["fast"])), ind.sma(c, int(p["slow"]))
        up, dn = ind.cross_up(f, s), ind.cross_up(s, f)
        return Prepared(up.astype(np.int8) - dn.astype(np.int8), dn, up, np.ones(len(c)),
                        {"sma_fast": f, "sma_slow": s})


ALL = [Momentum(), MeanReversion(), VolatilityBreakout(), BtcTrend(), TrendBreakdown(), MeanReversionShort(),
       RangeFade(), SmaCross()]
