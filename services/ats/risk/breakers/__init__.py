"""Circuit breakers as plug-ins: halt NEW entries and adds while exits keep working.

One module per breaker (``REGISTRY`` order = update order; ``priority`` names the blocking one):

    manual_stop.py         setting ``breaker.manual_stop`` is true (as of the bar time)            scope global
    daily_drawdown.py      equity < (1 - daily_drawdown_pct %) x equity at 00:00 UTC                scope global
    consecutive_losses.py  ``consecutive_losses`` losing closed trades in a row; cool-off reset       scope global
    market_volatility.py   realized market volatility (annualized %) > threshold; hysteresis reset  scope global
    velocity.py            price moved > ``velocity_pct`` % within ``velocity_minutes``             scope symbol
    feed_anomaly.py        a feed anomaly overlaps the last ``feed_anomaly_window_minutes``          scope symbol

``base.py`` holds the contract (``Breaker``, ``StepInputs``, ``SpanInputs``, ``TradingState``), ``board.py`` the
``BreakerBoard`` that loops over them, ``inputs.py`` the causal series they read. A new breaker is one new module
(a ``@register``-ed ``Breaker`` subclass with its ``settings`` defaults) imported below.
"""

from __future__ import annotations

from .base import (REGISTRY, Breaker, BreakerState, SpanInputs, StateChange, StepInputs, TradingState,  # noqa: F401
                   Transition, manual_on, register, unregister)
from . import manual_stop, daily_drawdown, consecutive_losses, market_volatility, velocity, feed_anomaly  # noqa: F401,E402,I001
from .board import BreakerBoard  # noqa: F401,E402
from .inputs import realized_vol_annual_pct, velocity_pct, window_bars  # noqa: F401,E402

#: the bar-loop breakers, in the priority used to name the blocking one
BREAKERS = tuple(sorted((n for n, c in REGISTRY.items() if not c.external), key=lambda n: REGISTRY[n].priority))


def breaker_settings() -> dict[str, tuple[object, str]]:
    """Every registered breaker's settings: key -> (default, description)."""
    out: dict = {}
    for c in REGISTRY.values():
        out.update(c.settings)
    return out
