"""Causal input series of the breakers (vectorized over a symbol's bars)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def window_bars(minutes: float, tf_seconds: int) -> int:
    """Number of bars covering ``minutes`` (at least 1).

    Parameters
    ----------
    minutes : float
        Window length (minutes).
    tf_seconds : int
        Bar length (seconds).

    Returns
    -------
    int
        round(minutes x 60 / tf_seconds), at least 1.
    """
    return max(1, int(round(minutes * 60 / tf_seconds)))


def velocity_pct(high: np.ndarray, low: np.ndarray, close: np.ndarray, k: int) -> np.ndarray:
    """Signed fastest move (percent) within the last ``k`` bars ending at each bar.

    Parameters
    ----------
    high, low, close : numpy.ndarray, shape (n,)
        OHLCV columns of one symbol (quote currency).
    k : int
        Window (bars, including the current one).

    Returns
    -------
    numpy.ndarray, shape (n,)
        +(close / lowest low - 1) x 100 when the rise is larger, else -(1 - close / highest high) x 100.
    """
    lo = pd.Series(low).rolling(k, min_periods=1).min().to_numpy()
    hi = pd.Series(high).rolling(k, min_periods=1).max().to_numpy()
    c = np.asarray(close, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = (c / lo - 1.0) * 100.0
        dn = (1.0 - c / hi) * 100.0
    return np.where(up >= dn, up, -dn)


def realized_vol_annual_pct(log_returns: np.ndarray, k: int, tf_seconds: int) -> np.ndarray:
    """Rolling realized volatility, annualized for a 24/7 market, in percent.

    Parameters
    ----------
    log_returns : numpy.ndarray, shape (n,)
        Log returns per bar.
    k : int
        Window (bars).
    tf_seconds : int
        Bar length (seconds).

    Returns
    -------
    numpy.ndarray, shape (n,)
        std (ddof=0) of the last k returns x sqrt(365 x 86400 / tf_seconds) x 100; NaN until k returns exist.
    """
    sd = pd.Series(log_returns).rolling(k, min_periods=k).std(ddof=0).to_numpy()
    return sd * math.sqrt(365 * 86400 / tf_seconds) * 100.0
