"""The circuit-breaker contract: ``Breaker`` (one file per breaker), its typed inputs and the trading state.

A breaker halts NEW entries and adds (``TradingState.REDUCING``: exits only) while it is tripped, for the whole
account (scope ``global``) or for one symbol (scope ``symbol``). A breaker that declares ``halts_exits = True``
halts every order (``TradingState.HALTED``); none of the bar-loop breakers does (a live ``reconciliation``
breaker will). The pattern follows freqtrade's protections (``plugins/protections/iprotection.py``: one contract,
one file each, a manager that loops) and the trading states of NautilusTrader's risk engine
(``nautilus_trader/risk/engine.pyx``: ACTIVE / REDUCING / HALTED).

Times are Unix seconds (the engine clock); percent values are percents (8.0 = 8 %).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .board import BreakerBoard


class TradingState(str, enum.Enum):
    """What orders may be sent, for the account or for one symbol.

    ACTIVE: every order. REDUCING: exits only (new entries and adds halted). HALTED: no order at all.
    """

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass
class BreakerState:
    """The state of one breaker in one scope ('*' = account-wide, else a symbol).

    Parameters
    ----------
    breaker, scope : str
        Breaker name and scope key.
    tripped : bool
        True while it blocks.
    since : int
        Unix s of the last transition.
    cause : str
        Human-readable reason of the last transition.
    context : dict
        Values that caused it (JSON-able).
    until : int or None
        Earliest reset time (Unix s) of cool-off breakers.
    """

    breaker: str
    scope: str
    tripped: bool
    since: int
    cause: str = ""
    context: dict = field(default_factory=dict)
    until: int | None = None


@dataclass
class Transition:
    """A trip (``tripped=True``) or reset (``tripped=False``) of ``breaker`` in ``scope`` at ``ts`` (Unix s)."""

    breaker: str
    scope: str
    tripped: bool
    ts: int
    cause: str
    context: dict


@dataclass
class StateChange:
    """A change of the trading state of ``scope`` ('*' or a symbol) at ``ts`` caused by ``breaker``."""

    scope: str
    old: TradingState
    new: TradingState
    ts: int
    breaker: str
    cause: str


@dataclass
class StepInputs:
    """Everything a breaker may read at one decision time (one per engine step).

    Parameters
    ----------
    T : int
        Open time of the step's bars (Unix s).
    ts : int
        Decision time C = T + timeframe (Unix s): the time of every transition of the step.
    settings : dict
        The settings in force at ``ts`` (``ats.risk.settings.SETTINGS`` keys).
    equity, day_start_equity : float
        Account equity at ``ts`` and at 00:00 UTC of the day (USD).
    present : list of (str, int)
        (symbol, bar index) of the symbols with a bar at T.
    market : object
        The run's causal series (``ats.engine.series.MarketSeries``: velocity, market_vol, vol_index,
        anomaly_index, anomalies, gaps).
    gaps : dict
        Symbol -> the last stream gaps the engine saw, [(start, end, info), ...] (Unix s).
    params : dict
        Per breaker name, what its ``prepare`` returned for ``settings`` (filled by the board).
    symbol, index : str or None, int or None
        Set by the board before calling a symbol-scoped breaker: the symbol and its bar index.
    """

    T: int
    ts: int
    settings: dict
    equity: float
    day_start_equity: float
    present: list
    market: Any
    gaps: dict
    params: dict = field(default_factory=dict)
    symbol: str | None = None
    index: int | None = None


@dataclass
class SpanInputs:
    """A candidate quiet span of the replay fast path: steps k .. k+W-1 of the feed timeline.

    Parameters
    ----------
    k, W : int
        First step and length (steps).
    T0, C0 : int
        Open and decision time of step k (Unix s).
    tf : int
        Timeframe (s).
    settings : dict
        Settings in force for the whole span.
    equity, day_ref : numpy.ndarray, shape (W,)
        Equity (USD) at each step's decision time and the 00:00 UTC reference in force then.
    market : object
        The run's causal series (see ``StepInputs``).
    symbols : list of str
        The run's symbols (each has a bar at every step of the span).
    gaps : dict
        As in ``StepInputs``.
    params : dict
        Per breaker name, its prepared parameters.
    """

    k: int
    W: int
    T0: int
    C0: int
    tf: int
    settings: dict
    equity: np.ndarray
    day_ref: np.ndarray
    market: Any
    symbols: list
    gaps: dict
    params: dict = field(default_factory=dict)


class Breaker:
    """Base class of every circuit breaker (subclass, set the class attributes, decorate with ``register``).

    Class attributes
    ----------------
    name : str
        Unique name (``breaker_states.breaker``, gate ``breaker:<name>`` in ``blocked_signals``).
    scope : {'global', 'symbol'}
        Account-wide, or evaluated per symbol (``update`` is then called once per present symbol).
    settings : dict
        The settings keys it reads -> their defaults (merged into ``ats.risk.settings.SETTINGS``).
    priority : int
        Order used to name the blocking breaker (lower first).
    halts_exits : bool
        True: while tripped, exits are halted too (``TradingState.HALTED``).
    external : bool
        True: driven from outside the bar loop through ``BreakerBoard.trip`` / ``reset`` (``update`` unused).

    An instance lives in one ``BreakerBoard`` (``self.board``) and may keep state, saved by ``state_dict`` /
    restored by ``load_state`` (merged at the top level of the board's checkpoint).
    """

    name: ClassVar[str] = ""
    scope: ClassVar[str] = "global"
    settings: ClassVar[dict[str, tuple[object, str]]] = {}
    priority: ClassVar[int] = 99
    halts_exits: ClassVar[bool] = False
    external: ClassVar[bool] = False

    def __init__(self, board: "BreakerBoard"):
        self.board = board

    # ---- step path ----
    def prepare(self, settings: dict, market) -> Any:
        """Settings-derived parameters (recomputed only when the settings in force change).

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            The run's series (see ``StepInputs.market``); may be None outside an engine.

        Returns
        -------
        object
            Anything; reaches ``update`` as ``inputs.params[self.name]``.
        """
        return None

    def update(self, inputs: StepInputs) -> None:
        """Trip or reset from one step's inputs (through ``self.board.set``); the default does nothing."""

    # ---- fast path ----
    def static_events(self, env, params) -> np.ndarray | None:
        """Steps of the feed timeline where this breaker may trip whatever the engine state is.

        Parameters
        ----------
        env : object
            The replay's step index (``timeline`` shape (K,), ``order`` symbols, ``idx`` symbol -> bar index per
            step, -1 = no bar) and ``market`` series.
        params : object
            What ``prepare`` returned.

        Returns
        -------
        numpy.ndarray of bool, shape (K,), or None
            True at a step that must go through the full step path; None: no such steps.
        """
        return None

    def quiet_steps(self, span: SpanInputs) -> int:
        """How many steps of ``span``, from its first, this breaker surely neither trips nor resets in.

        Called only when no breaker is tripped. Returns ``span.W`` (or more) when the whole span is quiet, 0 when
        its first step is not.
        """
        return span.W

    # ---- checkpoint ----
    def state_dict(self) -> dict:
        """Extra state for the board's checkpoint (top-level keys, JSON-able); default none."""
        return {}

    def load_state(self, d: dict) -> None:
        """Restore what ``state_dict`` saved from the board's checkpoint dict ``d`` (keys may be missing)."""

    # ---- helpers ----
    @classmethod
    def setting(cls, settings: dict, key: str):
        """``settings[key]``, or this breaker's declared default when the key is absent (a plug-in's new key).

        Parameters
        ----------
        settings : dict
            Settings in force.
        key : str
            A key of ``cls.settings``.

        Returns
        -------
        object
            The value.
        """
        v = settings.get(key)
        return cls.settings[key][0] if v is None and key in cls.settings else v

    def scope_key(self, symbol: str | None = None) -> str:
        """'*' for a global breaker, else the symbol."""
        return "*" if self.scope == "global" else str(symbol)

    def is_tripped(self, symbol: str | None = None) -> bool:
        """True while this breaker is tripped in the scope of ``symbol`` (ignored for global breakers)."""
        return self.board.is_tripped(self.name, self.scope_key(symbol))


#: name -> Breaker subclass, in registration order (the order breakers are updated in)
REGISTRY: dict[str, type[Breaker]] = {}


def register(cls: type[Breaker]) -> type[Breaker]:
    """Class decorator: add a breaker to ``REGISTRY`` (new boards include it).

    Raises
    ------
    ValueError
        When the class has no name, an unknown scope, or its name is taken by another class.
    """
    if not cls.name or cls.scope not in ("global", "symbol"):
        raise ValueError(f"breaker {cls.__name__}: needs a name and scope 'global' or 'symbol'")
    old = REGISTRY.get(cls.name)
    if old is not None and old is not cls:
        raise ValueError(f"breaker name {cls.name!r} already registered by {old.__name__}")
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a breaker from ``REGISTRY`` (boards made before keep it); unknown names are ignored."""
    REGISTRY.pop(name, None)


def manual_on(flag) -> bool:
    """The manual STOP setting's value read as on/off (true, 1, or '1'/'true'/'on'/'yes' in any case)."""
    return flag is True or (isinstance(flag, str) and flag.lower() in ("1", "true", "on", "yes")) or flag == 1
