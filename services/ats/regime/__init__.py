"""BTC market regime: the classifier (rules.py) and its persistence (btc_market_state + history)."""

from .rules import BEARISH, BULLISH, CODE, DEFAULT_REGIME_PARAMS, NAME, REGIMES, RegimeSeries, classify, pauses  # noqa: F401
