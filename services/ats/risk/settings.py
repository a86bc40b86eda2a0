"""Risk, circuit-breaker and paper-broker settings: keys, documented defaults, point-in-time reads.

Every value lives in ``system_settings`` (per account, effective-dated; migration 0020 seeds these defaults with
effective_from 1970-01-01 so replays of any period find them). The engine reads the value in force at each bar
through ``SettingsView`` (which uses ``ats.db.config_store.setting_as_of`` and caches until the next change).
A missing key falls back to the default below. Percent values are percents (3.0 = 3 %); bps are basis points.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .breakers import breaker_settings

#: key -> (default, description)
SETTINGS: dict[str, tuple[object, str]] = {
    # ---- position and portfolio limits (checked before every entry/add) ----
    "risk.max_position_usd": (2500.0, "max notional of one position (USD, at the decision price)"),
    "risk.max_allocation_pct": (20.0, "max value of one position as % of equity"),
    "risk.max_open_positions": (8, "max open positions across all strategies and symbols"),
    "risk.max_gross_exposure_pct": (100.0, "max sum of |position values| as % of equity (1x: no leverage)"),
    "risk.correlation_threshold": (0.9, "block a new position whose return correlation with the existing "
                                        "same-direction exposure exceeds this (Pearson, -1..1)"),
    "risk.correlation_window_hours": (168, "window of returns for the correlation limit (hours)"),
    "risk.add_loser_limit_pct": (2.0, "no add to a position whose unrealized P&L is below -this %"),
    "risk.kelly_multiplier": (0.25, "fraction of the full Kelly bet (quarter Kelly)"),
    "risk.kelly_cap_pct": (10.0, "cap on the Kelly notional as % of equity"),
    "risk.kelly_min_trades": (20, "closed trades a strategy needs before Kelly sizing applies (before: "
                                  "trade_amount_usd)"),
    "risk.kelly_lookback_trades": (50, "closed trades per strategy used for the Kelly estimate"),
    "risk.kelly_floor_pct": (1.0, "probe size (% of equity) while the estimated edge is <= 0; 0 blocks entries"),
    "risk.min_order_usd": (10.0, "smallest order notional; smaller sizes are blocked"),
    # ---- circuit breakers (halt NEW entries and adds; exits continue): declared by each breaker module ----
    **breaker_settings(),
    # ---- paper broker ----
    "broker.slippage_bps": (5.0, "base slippage of a market order (bps of the fill bar's open)"),
    "broker.impact_bps_per_pct": (10.0, "volume-participation slippage: bps per 1 % of the decision bar's "
                                        "volume"),
    "broker.max_slippage_bps": (100.0, "reject a market order whose modelled slippage exceeds this (bps)"),
    "broker.taker_fee_bps": (10.0, "taker fee (market orders), bps of notional"),
    "broker.maker_fee_bps": (2.0, "maker fee (resting limit orders), bps of notional"),
    "broker.partial_fills": (False, "fill at most max_participation_pct of the decision bar's volume and "
                                    "cancel the rest"),
    "broker.max_participation_pct": (5.0, "participation cap used when partial fills are on (% of the decision "
                                          "bar's volume; 5 % -> 55 bps modelled slippage)"),
    "broker.funding_fallback_bps": (0.0, "funding rate (bps per 8 h, positive: longs pay shorts) the paper model "
                                         "uses when funding_rates has no row for a symbol and funding time; 0 = "
                                         "zero cost (each such payment is still a funding_payments row with "
                                         "rate_source fallback)"),
}

DEFAULTS = {k: v[0] for k, v in SETTINGS.items()}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def seed_settings(conn, *, account_id: str = "default") -> list[str]:
    """Insert every missing setting with its default (effective 1970-01-01). Does not commit.

    Parameters
    ----------
    conn : psycopg.Connection
        Database connection (dict rows).
    account_id : str
        Account.

    Returns
    -------
    list of str
        The keys inserted.
    """
    from ..db import config_store as cs

    have = {r["key"] for r in conn.execute("SELECT key FROM system_settings WHERE account_id=%s",
                                           (account_id,)).fetchall()}
    done = []
    for k, (v, desc) in SETTINGS.items():
        if k not in have:
            cs.set_setting(conn, k, v, account_id=account_id, description=desc, effective_from=EPOCH)
            done.append(k)
    return done


class SettingsView:
    """The settings in force at a time, cached until the next scheduled change.

    ``at(ts)`` (Unix seconds) returns a dict of every key in SETTINGS (the as-of value or the default).
    ``live=True`` re-reads on every call (a live session must see a STOP flag set a second ago).
    """

    def __init__(self, conn, *, account_id: str = "default", live: bool = False):
        self.conn, self.account_id, self.live = conn, account_id, live
        self._lo: int | None = None
        self._hi: int | None = None
        self._cur: dict = dict(DEFAULTS)

    def at(self, ts: int) -> dict:
        """The settings in force at ``ts``.

        Parameters
        ----------
        ts : int
            Unix s.

        Returns
        -------
        dict
            Every key of ``SETTINGS`` -> its as-of value or default. The same dict object is returned while the
            settings do not change (the engine caches derived values by its identity).
        """
        if not self.live and self._lo is not None and self._lo <= ts < self._hi:
            return self._cur
        from ..db import config_store as cs

        when = datetime.fromtimestamp(ts, tz=timezone.utc)
        cur = {}
        for k, default in DEFAULTS.items():
            cur[k] = cs.setting_as_of(self.conn, k, when, default=default, account_id=self.account_id)
        nxt = self.conn.execute(
            "SELECT min(valid_from) AS n FROM system_settings_history WHERE account_id=%s AND key = ANY(%s) "
            "AND valid_from > %s", (self.account_id, list(DEFAULTS), when)).fetchone()
        n = nxt["n"] if isinstance(nxt, dict) else nxt[0]
        self._cur, self._lo = cur, ts
        self._hi = int(n.timestamp()) if n is not None else 2 ** 62
        return cur

    def valid_until(self, ts: int) -> int:
        """Until when the dict ``at(ts)`` returned stays the settings in force.

        Parameters
        ----------
        ts : int
            Unix s.

        Returns
        -------
        int
            Unix s (exclusive) of the next scheduled change, or ``ts`` when it may change at any moment (live) or was
            never read.
        """
        if self.live or self._lo is None or not (self._lo <= ts < self._hi):
            return ts
        return self._hi
