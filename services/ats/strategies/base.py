"""Strategy interface shared by every signal generator.

A strategy turns one symbol's candles (``Bars``) plus the BTC regime into per-bar arrays (``Prepared``):
edge-triggered entry signals (+1 open/add long, -1 open/add short), state exit conditions for each side, a
strength in [0, 1] and the indicator columns quoted in each signal's context. ``prepare`` must be causal: the
value at bar i may use bars 0..i only (a decision at bar i sees data up to its close; tests check this by
recomputing on truncated series).

Parameters live in ``strategy_configurations.params`` (the database is the source of truth; the engine reads
the configuration in force at each bar). ``COMMON_PARAMS`` apply to every strategy; each strategy adds its
own indicator parameters. Percent values are percents (4.0 = 4 %), money is USD, durations in minutes or hours
as named.
"""

from __future__ import annotations

import abc

import json
from dataclasses import dataclass, field

import numpy as np

#: parameters every strategy has (documented defaults; each strategy overrides some)
COMMON_PARAMS = {
    "tp_pct": 4.0,              # take profit, % from average entry (0 = off)
    "sl_pct": 2.0,              # stop loss, % from average entry (0 = off)
    "trailing_pct": 0.0,        # trailing stop distance, % from the best close since entry (0 = off)
    "trailing_activation_pct": 0.0,  # the trailing stop arms once unrealized P&L >= this % (0 = immediately)
    "trade_amount_usd": 500.0,  # target notional per entry before risk caps and Kelly sizing
    "cooldown_min": 120,        # no new entry/add for the same strategy+symbol within this many minutes
    "max_hold_hours": 72,       # exit after holding this long (0 = off)
    "max_adds": 1,              # adds allowed on top of the opening order (0 = never add)
}
# A strategy may also set "regime_pause": false (sma_cross does) to trade through confirmed bull/bear regimes;
# absent means true: longs pause in a confirmed bear, shorts in a confirmed bull.


@dataclass
class Bars:
    """One symbol's candles as numpy arrays (float64 prices/volume; ``t`` = open time, Unix seconds)."""

    symbol: str
    timeframe: str
    t: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def from_frame(cls, symbol: str, timeframe: str, df) -> "Bars":
        """From a read_candles DataFrame (index open_time UTC; columns open, high, low, close, volume)."""
        t = df.index.as_unit("s").asi8.astype(np.int64) if len(df) else np.zeros(0, dtype=np.int64)
        return cls(symbol, timeframe, t, *(df[c].to_numpy(dtype=np.float64) for c in
                                           ("open", "high", "low", "close", "volume")))

    @classmethod
    def from_rows(cls, symbol: str, timeframe: str, rows) -> "Bars":
        """From freqtrade-style rows ``[open_time_ms, open, high, low, close, volume]``."""
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        return cls(symbol, timeframe, (a[:, 0] // 1000).astype(np.int64), a[:, 1].copy(), a[:, 2].copy(),
                   a[:, 3].copy(), a[:, 4].copy(), a[:, 5].copy())

    def upto(self, n: int) -> "Bars":
        """The first ``n`` bars (used by causality tests)."""
        return Bars(self.symbol, self.timeframe, self.t[:n], self.open[:n], self.high[:n], self.low[:n],
                    self.close[:n], self.volume[:n])


@dataclass
class Prepared:
    """Per-bar strategy output aligned with Bars.

    entry:       int8, +1 = long entry trigger, -1 = short entry trigger, 0 = nothing (edge-triggered: the bar
                 where the entry condition becomes true). While a position is open the same trigger is an add.
    exit_long:   bool, the strategy wants an open long closed at this bar's close.
    exit_short:  bool, same for shorts.
    strength:    float64 in [0, 1] (static, documented weights where signals are combined).
    columns:     indicator arrays quoted in the signal context (name -> float64 array).
    """

    entry: np.ndarray
    exit_long: np.ndarray
    exit_short: np.ndarray
    strength: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def context(self, i: int) -> dict:
        """Indicator values at bar i as a JSON-ready dict (NaN -> None)."""
        out = {}
        for k, arr in self.columns.items():
            v = float(arr[i])
            out[k] = None if v != v else round(v, 8)
        return out


class Strategy(abc.ABC):
    """Base class. Subclasses set ``name``, ``direction`` ('long' | 'short' | 'both'), ``kind``
    ('long' | 'short' | 'specialty' | 'reference'), ``description``, ``rules`` (human-readable) and
    ``own_params`` (indicator defaults), optionally ``micro_gates`` / ``micro_params`` (microstructure entry
    conditions, ``ats.risk.microstructure_gate``), and implement ``prepare``."""

    name: str = ""
    direction: str = "long"
    kind: str = "long"
    description: str = ""
    rules: str = ""
    own_params: dict = {}
    common_overrides: dict = {}
    uses_regime: bool = False
    #: microstructure conditions checked in the entry path (``ats.risk.microstructure_gate.CONDITIONS`` names);
    #: their thresholds are params in ``micro_params`` (a threshold set to null switches that condition off)
    micro_gates: tuple = ()
    micro_params: dict = {}

    @property
    def default_params(self) -> dict:
        """COMMON_PARAMS overridden by this strategy's defaults, plus its indicator and microstructure params."""
        return {**COMMON_PARAMS, **self.common_overrides, **self.own_params, **self.micro_params}

    def params(self, configured: dict | None) -> dict:
        """Defaults overlaid with the configured params (unknown keys are kept and ignored)."""
        return {**self.default_params, **(configured or {})}

    def indicator_key(self, params: dict) -> str:
        """Cache key of the params that change ``prepare``'s output (its own_params)."""
        return json.dumps({k: params.get(k) for k in sorted(self.own_params)}, sort_keys=True)

    @abc.abstractmethod
    def prepare(self, bars: Bars, params: dict, regime: np.ndarray | None = None) -> Prepared:
        """Compute the per-bar arrays; ``regime`` (int8 codes aligned with bars, see ats.regime.CODE) is given
        to strategies with ``uses_regime``. Every concrete strategy implements it."""


def empty_prepared(n: int) -> Prepared:
    """All-zero arrays of length n."""
    return Prepared(np.zeros(n, dtype=np.int8), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n))


def clean(cond: np.ndarray) -> np.ndarray:
    """Boolean array with NaN comparisons treated as False (numpy comparisons with NaN already are False)."""
    return np.asarray(cond, dtype=bool)
