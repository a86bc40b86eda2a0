"""Risk profiles applied when an account is created.

A profile is a set of ``system_settings`` overrides on top of the documented defaults in
:mod:`ats.risk.settings` (percent values are percents, USD are USD). ``conservative`` is the defaults.
``aggressive`` is the seed systems' maximum-aggression paper account, meant to be watched blowing up and re-funded:
full Kelly, larger positions and more of them, and -- for paper accounts only -- no daily-drawdown halt. A venue
account (Bybit, Alpaca) may never disable the drawdown halt: the rule is enforced here and by
:func:`check_settings` whenever a setting of such an account is written through ``ats account``.
"""

from __future__ import annotations

from ..errors import UsageError
from ..risk.settings import SETTINGS

PROFILES = ("conservative", "aggressive")

#: overrides per profile (key -> value); keys must exist in ats.risk.settings.SETTINGS
_OVERRIDES: dict[str, dict[str, object]] = {
    "conservative": {},
    "aggressive": {
        "risk.max_position_usd": 250000.0,
        "risk.max_allocation_pct": 50.0,
        "risk.max_open_positions": 20,
        "risk.max_gross_exposure_pct": 100.0,
        "risk.kelly_multiplier": 1.0,
        "risk.kelly_cap_pct": 50.0,
        "risk.kelly_floor_pct": 5.0,
        "breaker.consecutive_losses": 1000,
        "breaker.daily_drawdown_pct": 100.0,   # paper only: the drawdown halt is off
    },
}

#: each strategy's ``trade_amount_usd`` (target notional per entry before Kelly and the risk caps) as a fraction
#: of the account's starting cash: the default account's 500 USD on 10,000 USD is 5 %; aggressive takes 25 %
TRADE_FRACTION = {"conservative": 0.05, "aggressive": 0.25}

#: a drawdown threshold at or above this percent is "disabled" (equity cannot fall more than 100 %)
DRAWDOWN_DISABLED_PCT = 100.0


def profile_settings(profile: str, broker: str) -> dict[str, object]:
    """The settings overrides of ``profile`` for an account on ``broker``.

    Parameters
    ----------
    profile : str
        ``conservative`` | ``aggressive``.
    broker : str
        ``paper`` | ``bybit`` | ``alpaca``. For a venue broker the aggressive profile keeps the default
        daily-drawdown halt.

    Returns
    -------
    dict
        ``setting key -> value`` (only keys that differ from the defaults).

    Raises
    ------
    UsageError
        Unknown profile.
    """
    if profile not in _OVERRIDES:
        raise UsageError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    out = dict(_OVERRIDES[profile])
    if broker != "paper":
        out.pop("breaker.daily_drawdown_pct", None)
    unknown = sorted(set(out) - set(SETTINGS))
    if unknown:  # a profile naming a key the engine does not read would silently do nothing
        raise UsageError(f"profile {profile!r} names unknown settings {unknown}")
    return out


def check_settings(broker: str, settings: dict[str, object]) -> None:
    """Refuse settings a venue account may not have.

    Raises
    ------
    UsageError
        A venue (non-paper) account whose ``breaker.daily_drawdown_pct`` is disabled (>= 100 %) or missing-valued.
    """
    if broker == "paper":
        return
    dd = settings.get("breaker.daily_drawdown_pct")
    if dd is not None and float(dd) >= DRAWDOWN_DISABLED_PCT:
        raise UsageError(f"a {broker} account may not disable the daily-drawdown halt "
                         f"(breaker.daily_drawdown_pct = {dd}); only paper accounts may")
