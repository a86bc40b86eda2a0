"""The configuration in force at a time, looked up once per (strategy, time): the cache forensics and the
health-check audit share.

Bitemporal (:mod:`ats.db.config_store`): given the run's wall-clock start, a lookup answers "in force at the
decision's time *as the run knew it*" (``known_at_for(run_started_at, decision_ts)``), so a change back-dated
after the run does not rewrite what the run was told; without it, every change recorded so far counts
(hindsight).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from ..db import config_store as cs


class ConfigAsOf:
    """Callable ``cfg(strategy, at) -> dict | None``: :func:`ats.db.config_store.strategy_as_of`, memoised.

    One instance serves one report over one run: many trades share a bar time, and the history table is
    looked up once per distinct (strategy, time).

    Parameters
    ----------
    conn : psycopg.Connection
        Connection the lookups run on (the report's own, read-only is enough).
    account_id : str
        Account whose ``strategy_configurations_history`` is read (the run's ``engine_runs.account_id``).
    run_started_at : datetime, optional
        The run's ``engine_runs.started_at`` (wall clock): lookups are as known at
        ``known_at_for(run_started_at, at)``. None: as known now (every recorded change, back-dated ones included).
    """

    def __init__(self, conn: psycopg.Connection, account_id: str, run_started_at: datetime | None = None) -> None:
        self._conn = conn
        self._account_id = account_id
        self._started = run_started_at
        self._cache: dict[tuple[str, datetime], dict | None] = {}

    def __call__(self, strategy: str, at: datetime) -> dict | None:
        """The configuration row in force at ``at`` (UTC), or None when the strategy did not exist then.

        Parameters
        ----------
        strategy : str
            ``strategy_name``.
        at : datetime
            Timezone-aware UTC time (engine clock).

        Returns
        -------
        dict or None
            The history row (gates, ``params``, ``valid_from``) as returned by ``strategy_as_of``.
        """
        key = (strategy, at)
        if key not in self._cache:
            known = None if self._started is None else cs.known_at_for(self._started, at)
            self._cache[key] = cs.strategy_as_of(self._conn, strategy, at, account_id=self._account_id,
                                                 as_known_at=known)
        return self._cache[key]

    def prefetch(self, pairs: list[tuple[str, datetime]]) -> None:
        """Look up every ``(strategy, at)`` pair not cached yet in ONE statement (instead of one per pair).

        Each answer is exactly what :meth:`__call__` would return for the pair: the latest
        ``strategy_configurations_history`` row with ``valid_from <= at`` (and ``recorded_at`` as known then),
        None when none or a DELETE row.

        Parameters
        ----------
        pairs : list of (str, datetime)
            ``(strategy_name, at)`` with ``at`` timezone-aware UTC (engine clock). Duplicates are looked up once.
        """
        todo = list(dict.fromkeys(k for k in pairs if k not in self._cache))
        if not todo:
            return
        known = [None if self._started is None else cs.known_at_for(self._started, at) for _, at in todo]
        rows = self._conn.execute(
            """SELECT k.i, h.account_id, h.strategy_name, h.operation, h.watchlist_enabled, h.buy_enabled,
                      h.sell_enabled, h.params, h.valid_from
                 FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY AS k(s, at, known, i)
                 LEFT JOIN LATERAL (
                     SELECT account_id, strategy_name, operation, watchlist_enabled, buy_enabled, sell_enabled,
                            params, valid_from
                       FROM strategy_configurations_history
                      WHERE account_id = %s AND strategy_name = k.s AND valid_from <= k.at
                        AND (k.known IS NULL OR recorded_at <= k.known)
                      ORDER BY valid_from DESC, history_id DESC LIMIT 1) h ON true
                ORDER BY k.i""",
            ([s for s, _ in todo], [at for _, at in todo], known, self._account_id)).fetchall()
        for key, row in zip(todo, rows):
            row = dict(row)
            row.pop("i")
            if row["operation"] is None or row["operation"] == "DELETE":
                self._cache[key] = None
                continue
            row.pop("operation")
            self._cache[key] = row
