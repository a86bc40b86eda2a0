"""Strategy registry: name -> Strategy, default parameters, the book of eleven and the seed configurations.

``BOOK`` is the book of eleven, in order: long (growth_potential, momentum, mean_reversion, btc_trend), short on
linear perpetuals at 1x (trend_breakdown, momentum_short, mean_reversion_short, btc_trend_short), specialty
(range_fade_long, range_fade_short, btc_swing). ``REFERENCE`` strategies (volatility_breakout, range_fade,
sma_cross, and the multi-leg iron_condor of ``ats.strategies.options``) are registered and usable in backtests and sweeps (``--strategies``) but are not in the book, not
seeded for new accounts and not run by the demo.

``SEEDED`` = ``BOOK``: what ``seed_defaults`` writes for an account and what migrations 0021 + 0150 leave enabled
for the default account (all three gates on, ``effective_from`` = 1970-01-01 so replays of any past period find
them). Migration 0150 closed the default account's range_fade / volatility_breakout rows (watchlist and buy gates
off, sell gate on, effective from the migration) -- configure one with ``ats config strategy set NAME --buy on``
to trade it again.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import COMMON_PARAMS, Bars, Prepared, Strategy  # noqa: F401
from .book import BOOK_ADDITIONS
from .library import ALL as LIBRARY
from .options import ALL_OPTIONS

BOOK = ("growth_potential", "momentum", "mean_reversion", "btc_trend",
        "trend_breakdown", "momentum_short", "mean_reversion_short", "btc_trend_short",
        "range_fade_long", "range_fade_short", "btc_swing")
#: registered outside the book: backtests, sweeps and (iron_condor) the multi-leg live path; never seeded
REFERENCE = ("volatility_breakout", "range_fade", "sma_cross", *(s.name for s in ALL_OPTIONS))
_ALL = {s.name: s for s in [*LIBRARY, *BOOK_ADDITIONS, *ALL_OPTIONS]}
#: every registered strategy, the book first (in BOOK order), then the references
REGISTRY: dict[str, Strategy] = {n: _ALL[n] for n in (*BOOK, *REFERENCE)}
SEEDED = BOOK
assert set(REGISTRY) == set(_ALL), "every strategy is in BOOK or REFERENCE"


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; UsageError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None


def default_params(name: str) -> dict:
    """The documented default params of strategy ``name`` (what migrations 0021 / 0150 seed)."""
    return get_strategy(name).default_params


def seed_defaults(conn, *, account_id: str = "default", names=SEEDED) -> list[str]:
    """Insert the default configuration (gates on, default params, effective 1970-01-01) for every strategy in
    ``names`` (default: the book) that has no configuration yet for ``account_id``; returns the names inserted.
    Does not commit."""
    from datetime import datetime, timezone

    from ..db import config_store as cs

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    done = []
    for n in names:
        exists = conn.execute("SELECT 1 FROM strategy_configurations WHERE account_id=%s AND strategy_name=%s",
                              (account_id, n)).fetchone()
        if exists:
            continue
        cs.upsert_strategy(conn, n, account_id=account_id, params=default_params(n), effective_from=epoch,
                           watchlist_enabled=True, buy_enabled=True, sell_enabled=True)
        done.append(n)
    return done
