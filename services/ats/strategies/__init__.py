"""Strategy registry: name -> Strategy, default parameters and the seed configurations.

``SEEDED`` are the strategies migration 0020 seeds into ``strategy_configurations`` for the default account
(all three gates on, ``effective_from`` = 1970-01-01 so replays of any past period find them). ``sma_cross`` is
a reference strategy for benchmarks and backtests: it is not seeded (configure it with ``ats config strategy set
sma_cross --buy on``).
"""

from __future__ import annotations

from ..errors import UsageError
from .base import COMMON_PARAMS, Bars, Prepared, Strategy  # noqa: F401
from .library import ALL

REGISTRY: dict[str, Strategy] = {s.name: s for s in ALL}

# --- options: multi-leg reference strategies outside the book (ats.strategies.options; alpaca branch) ---
from .options import ALL_OPTIONS  # noqa: E402

REGISTRY.update({s.name: s for s in ALL_OPTIONS})
# --- end options ---
SEEDED = ("momentum", "mean_reversion", "volatility_breakout", "btc_trend", "trend_breakdown",
          "mean_reversion_short", "range_fade")


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; UsageError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None


def default_params(name: str) -> dict:
    """The documented default params of strategy ``name`` (what migration 0020 seeds)."""
    return get_strategy(name).default_params


def seed_defaults(conn, *, account_id: str = "default", names=SEEDED) -> list[str]:
    """Insert the default configuration (gates on, default params, effective 1970-01-01) for every strategy in
    ``names`` that has no configuration yet for ``account_id``; returns the names inserted. Does not commit."""
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
