"""Strategy configurations as of the bar time (the three gates and the params), cached between changes.

The authority is ``ats.db.config_store.strategy_as_of`` (latest history row with valid_from <= T). A replay asks
for the configuration at every bar; ``GateCache`` calls strategy_as_of once per configuration version and keeps
the answer until the next ``valid_from`` in the history (live sessions re-read on every bar).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ..db import config_store as cs
from ..strategies import get_strategy


@dataclass(frozen=True)
class StrategyConfig:
    """The configuration in force: gates, params (strategy defaults overlaid with the stored params and any run
    overrides), ``ikey`` (cache key of the indicator params) and ``valid_from`` (Unix s)."""

    name: str
    watchlist: bool
    buy: bool
    sell: bool
    params: dict
    ikey: str
    valid_from: int


class GateCache:
    """``get(name, ts)`` -> StrategyConfig in force at ``ts`` (Unix s) or None (not configured then)."""

    def __init__(self, conn, *, account_id: str = "default", overrides: dict | None = None, live: bool = False):
        self.conn, self.account_id, self.live = conn, account_id, live
        self.overrides = overrides or {}
        self._c: dict[str, tuple[int, int, StrategyConfig | None]] = {}

    def get(self, name: str, ts: int) -> StrategyConfig | None:
        """The configuration of strategy ``name`` in force at ``ts``.

        Parameters
        ----------
        name : str
            Strategy name.
        ts : int
            Unix s.

        Returns
        -------
        StrategyConfig or None
            Gates and params (defaults overlaid with the stored params and the run's overrides); None when the strategy
            has no configuration then. Cached until the next configuration change (re-read every call when live).
        """
        hit = self._c.get(name)
        if hit is not None and not self.live and hit[0] <= ts < hit[1]:
            return hit[2]
        when = datetime.fromtimestamp(ts, tz=timezone.utc)
        row = cs.strategy_as_of(self.conn, name, when, account_id=self.account_id)
        nxt = self.conn.execute(
            "SELECT min(valid_from) AS n FROM strategy_configurations_history WHERE account_id=%s "
            "AND strategy_name=%s AND valid_from > %s", (self.account_id, name, when)).fetchone()
        n = nxt["n"] if isinstance(nxt, dict) else nxt[0]
        hi = int(n.timestamp()) if n is not None else 2 ** 62
        cfg = None
        if row is not None:
            strat = get_strategy(name)
            params = strat.params({**(row["params"] or {}), **self.overrides.get(name, {})})
            cfg = StrategyConfig(name, bool(row["watchlist_enabled"]), bool(row["buy_enabled"]),
                                 bool(row["sell_enabled"]), params, strat.indicator_key(params),
                                 int(row["valid_from"].timestamp()))
        self._c[name] = (ts, hi, cfg)
        return cfg

    def valid_until(self, name: str, ts: int) -> int:
        """Until when ``get(name, ts)``'s answer stays in force.

        Parameters
        ----------
        name : str
            Strategy name.
        ts : int
            Unix s.

        Returns
        -------
        int
            Unix s (exclusive) of the next configuration change, or ``ts`` when unknown (live, or not read yet).
        """
        hit = self._c.get(name)
        if hit is None or self.live or not (hit[0] <= ts < hit[1]):
            return ts
        return hit[1]
