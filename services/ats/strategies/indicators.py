"""Causal technical indicators on numpy arrays (float64).

Every function returns an array aligned with its input where element ``i`` depends only on inputs ``0..i``
(no look-ahead): computing on a full series and on the series truncated at ``i`` gives the same value at ``i``.
Warm-up elements (not enough history) are NaN. Prices are in the quote currency; returns are fractions
(0.01 = 1 %) unless a name says ``pct``.

Formulas: EMA with smoothing 2/(n+1) seeded by the first value (pandas ``ewm(adjust=False)``); Wilder's RSI, ATR
and ADX use Wilder's smoothing alpha = 1/n (J. Welles Wilder, *New Concepts in Technical Trading Systems*,
1978); Bollinger bands are SMA +/- k population standard deviations (John Bollinger, 2001); Donchian channels
are the highest high / lowest low of the *previous* n bars (the current bar excluded, so a close above it is a
breakout).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _warm(a: np.ndarray, n: int) -> np.ndarray:
    out = np.asarray(a, dtype=np.float64).copy()
    if n > 1:
        out[: min(n - 1, len(out))] = np.nan
    return out


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over the last ``n`` values (NaN for the first n-1)."""
    return pd.Series(x, dtype=np.float64).rolling(n, min_periods=n).mean().to_numpy()


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, alpha = 2/(n+1), seeded with x[0]; the first n-1 values are NaN (warm-up)."""
    e = pd.Series(x, dtype=np.float64).ewm(span=n, adjust=False).mean().to_numpy()
    return _warm(e, n)


def wilder(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing (an EMA with alpha = 1/n), seeded with x[0]; NaN for the first n-1 values."""
    e = pd.Series(x, dtype=np.float64).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    return _warm(e, n)


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Population standard deviation (ddof=0) over the last ``n`` values."""
    return pd.Series(x, dtype=np.float64).rolling(n, min_periods=n).std(ddof=0).to_numpy()


def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Max of the last ``n`` values including the current one."""
    return pd.Series(x, dtype=np.float64).rolling(n, min_periods=n).max().to_numpy()


def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Min of the last ``n`` values including the current one."""
    return pd.Series(x, dtype=np.float64).rolling(n, min_periods=n).min().to_numpy()


def shift(x: np.ndarray, k: int = 1) -> np.ndarray:
    """``x`` delayed by ``k`` bars (NaN fill): out[i] = x[i-k]."""
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = np.asarray(x, dtype=np.float64)[: len(x) - k]
    return out


def donchian_high(high: np.ndarray, n: int) -> np.ndarray:
    """Highest high of the previous ``n`` bars (current bar excluded)."""
    return shift(rolling_max(high, n), 1)


def donchian_low(low: np.ndarray, n: int) -> np.ndarray:
    """Lowest low of the previous ``n`` bars (current bar excluded)."""
    return shift(rolling_min(low, n), 1)


def roc(close: np.ndarray, n: int) -> np.ndarray:
    """Rate of change over ``n`` bars as a fraction: close[i] / close[i-n] - 1."""
    prev = shift(close, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(close, dtype=np.float64) / prev - 1.0


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's RSI in [0, 100]; NaN for the first n bars. 100 when there were no losses in the window."""
    c = np.asarray(close, dtype=np.float64)
    d = np.diff(c, prepend=np.nan)
    gain = np.where(d > 0, d, 0.0)
    loss = np.where(d < 0, -d, 0.0)
    gain[0] = loss[0] = 0.0
    ag = pd.Series(gain).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    al = pd.Series(loss).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rs = ag / al
        out = 100.0 - 100.0 / (1.0 + rs)
    out = np.where(al == 0, np.where(ag == 0, 50.0, 100.0), out)
    out[: min(n, len(out))] = np.nan
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(high-low, |high-prev close|, |low-prev close|); the first bar uses high-low."""
    h, lo, c = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    pc = shift(c, 1)
    tr = np.fmax(h - lo, np.fmax(np.abs(h - pc), np.abs(lo - pc)))
    tr[0] = h[0] - lo[0] if len(h) else np.nan
    return tr


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's Average True Range (price units)."""
    return wilder(true_range(high, low, close), n)


def bollinger(close: np.ndarray, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, middle, upper): SMA(n) -/+ k population standard deviations."""
    mid = sma(close, n)
    sd = rolling_std(close, n)
    return mid - k * sd, mid, mid + k * sd


def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's Average Directional Index in [0, 100] (trend strength; < 20 usually means a range)."""
    h, lo = np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64)
    up = h - shift(h, 1)
    dn = shift(lo, 1) - lo
    plus_dm = np.where((up > dn) & (up > 0), up, 0.0)
    minus_dm = np.where((dn > up) & (dn > 0), dn, 0.0)
    tr = true_range(high, low, close)
    atr_ = pd.Series(tr).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    pdi = 100.0 * pd.Series(plus_dm).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy() / atr_
    mdi = 100.0 * pd.Series(minus_dm).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy() / atr_
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = 100.0 * np.abs(pdi - mdi) / (pdi + mdi)
    dx = np.nan_to_num(dx, nan=0.0)
    out = pd.Series(dx).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    out[: min(2 * n, len(out))] = np.nan
    return out


def cross_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True at i when a crosses above b: a[i] > b[i] and a[i-1] <= b[i-1] (NaN -> False)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pa, pb = shift(a, 1), shift(b, 1)
    with np.errstate(invalid="ignore"):
        return (a > b) & (pa <= pb)


def edge(cond: np.ndarray) -> np.ndarray:
    """True where a boolean condition becomes true (cond[i] and not cond[i-1]); the first bar counts as an edge
    only if the condition holds there."""
    c = np.asarray(cond, dtype=bool)
    prev = np.zeros_like(c)
    prev[1:] = c[:-1]
    return c & ~prev
