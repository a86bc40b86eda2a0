"""The small typed context passed along one engine step (instead of long argument lists)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepContext:
    """What every part of one step (exits, entries) reads.

    Parameters
    ----------
    T : int
        Open time of the step's bars (Unix s).
    C : int
        Decision time = T + timeframe (Unix s); orders decided now fill at the next bar's open.
    settings : dict
        Risk / breaker / broker settings in force at C (``ats.risk.settings.SETTINGS`` keys).
    equity : float
        Account equity at C (USD, marked at the closes).
    reg_code : int
        Effective BTC regime code at C (``ats.regime.rules.NAME``; 0 without a regime).
    reg_conf : bool
        True when that regime is confirmed.
    """

    T: int
    C: int
    settings: dict
    equity: float
    reg_code: int = 0
    reg_conf: bool = False


@dataclass
class EntryCandidate:
    """One entry signal on its way through the gates.

    Parameters
    ----------
    strat : object
        The strategy (``ats.strategies`` registry entry).
    cfg : object
        Its configuration in force (``ats.engine.config`` GateConfig: buy/sell/watchlist gates, params).
    sym : str
        Symbol.
    i : int
        Bar index of the decision bar in ``sym``'s bars.
    pside : {'long', 'short'}
        Position side the signal asks for.
    side : {'buy', 'sell'}
        Order side.
    intent : {'open', 'add'}
        New position, or add to the open one of the same side.
    pos : Position or None
        The strategy's open position in ``sym``.
    """

    strat: object
    cfg: object
    sym: str
    i: int
    pside: str
    side: str
    intent: str
    pos: object

    @property
    def key(self) -> tuple[str, str]:
        """(strategy name, symbol): the key of positions, cool-downs and last entries."""
        return (self.strat.name, self.sym)
