"""Institutional memory in the entry path: the lessons consulted before every entry, and the consensus gate.

Both run inside :func:`ats.engine.entries.on_entry_signal`, so replays and live sessions take the same path.

- :class:`LessonSource` holds the run's :class:`ats.knowledge.lessons.LessonBook`: loaded once per run; a live run
  re-checks at most once per decision time whether the lessons changed (``count(*)``, ``max(lesson_id)`` of the LL
  rows: one index-only query) and reloads the book when they did.
- :func:`trade_context` builds the :class:`ats.knowledge.lessons.TradeContext` of an entry candidate (strategy,
  symbol, side, order type / class / legs from the strategy's optional ``order_type`` / ``order_class`` / ``legs``
  attributes, BTC regime, venue = the broker's ``name``, tripped breakers).
- :class:`ConsensusGate` applies ``ats.risk.consensus`` to the strategies listed in ``consensus.strategies``:
  mode ``off`` (replays by default: skipped, the signal's audit says ``consensus: off``), ``replay`` (the votes
  recorded for the same candidate, ``recorded_decision``; never a model call) or ``live`` (``vote_on``, every vote
  written to ``consensus_votes`` on its own autocommit connection, so the audit of a model call survives whatever
  happens to the run's batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ..knowledge.lessons import LessonBook, TradeContext
from ..regime.rules import NAME as REGIME_NAME

MODES = ("off", "replay", "live")
_SIG_SQL = "SELECT count(*) AS n, max(lesson_id) AS m FROM lessons WHERE ll_number IS NOT NULL"


class LessonSource:
    """The lessons in force for one engine run.

    Parameters
    ----------
    conn : psycopg.Connection
        The engine's connection (dict rows).
    live : bool
        Re-check for new lessons (at most once per decision time) and reload when they changed.
    """

    def __init__(self, conn, *, live: bool = False):
        self.conn, self.live = conn, live
        self._checked_at: int | None = None
        self._sig = self._signature()
        self.book = LessonBook.load(conn)
        self.reloads = 0

    def _signature(self) -> tuple:
        r = self.conn.execute(_SIG_SQL).fetchone()
        return (r["n"], r["m"])

    def at(self, C: int) -> LessonBook:
        """The book to consult at decision time ``C`` (Unix s); a live run reloads it when the lessons changed."""
        if self.live and self._checked_at != C:
            self._checked_at = C
            sig = self._signature()
            if sig != self._sig:
                self._sig, self.book = sig, LessonBook.load(self.conn)
                self.reloads += 1
        return self.book

    def titles(self) -> dict[str, str]:
        """LL-NNN -> title of the lessons in the book (for the consensus prompt)."""
        return {r["ll"]: r["title"] for r in self.book.lessons}


def trade_context(eng, ctx, cand, blocking) -> TradeContext:
    """The lessons' view of an entry candidate.

    Parameters
    ----------
    eng : Engine
        The engine (broker, regime).
    ctx : StepContext
        The step (regime code).
    cand : EntryCandidate
        The candidate.
    blocking : list of BreakerState
        The breakers tripped for the candidate's symbol (``BreakerBoard.blocking``).

    Returns
    -------
    TradeContext
    """
    s = cand.strat
    return TradeContext(
        strategy=s.name, symbol=cand.sym, side=cand.pside, order_type=getattr(s, "order_type", "market"),
        order_class=getattr(s, "order_class", "simple"), legs=int(getattr(s, "legs", 1) or 1),
        regime=REGIME_NAME.get(ctx.reg_code) if eng.regime is not None else None,
        venue=getattr(eng.broker, "name", "paper"), breakers=tuple(sorted({b.breaker for b in blocking})))


@dataclass
class ConsensusSettings:
    """``consensus.*`` settings of the account: voters, supermajority (fraction), timeout (s), strategies."""

    voters: list
    supermajority: float
    timeout_s: float
    strategies: frozenset


def load_consensus_settings(conn, account_id: str, when: int | None = None) -> ConsensusSettings:
    """Read the ``consensus.*`` settings in force at ``when`` (Unix s; None = the current values); UsageError on a
    bad ``consensus.models``."""
    from ..db import config_store as cs
    from ..risk.consensus import voters_from_setting

    t = datetime.fromtimestamp(when, tz=timezone.utc) if when is not None else None
    get = lambda k, d: cs.setting_as_of(conn, k, t, default=d, account_id=account_id)  # noqa: E731
    return ConsensusSettings(voters_from_setting(get("consensus.models", [])),
                             float(get("consensus.supermajority", 0.6667)), float(get("consensus.timeout_s", 30)),
                             frozenset(get("consensus.strategies", []) or []))


class ConsensusGate:
    """The consensus gate of one engine run.

    Parameters
    ----------
    conn : psycopg.Connection
        The engine's connection (settings, recorded votes).
    account_id, run_id : str
        The run's account and id.
    mode : {'off', 'replay', 'live'}
        See the module docstring.
    live : bool
        A live session: re-read the settings at most once per decision time.
    url : str, optional
        Database URL of the vote writer (default ``ATS_DATABASE_URL``).

    Raises
    ------
    UsageError
        Unknown mode, or malformed ``consensus.models``.
    """

    def __init__(self, conn, *, account_id: str, run_id: str, mode: str, live: bool = False, url: str | None = None):
        from ..errors import UsageError

        if mode not in MODES:
            raise UsageError(f"--consensus {mode!r}: expected one of {', '.join(MODES)}")
        self.conn, self.account_id, self.run_id, self.mode, self.live, self.url = \
            conn, account_id, run_id, mode, live, url
        self.cfg = load_consensus_settings(conn, account_id)
        self._read_at: int | None = None
        self._wconn = None

    def applies(self, strategy: str, C: int) -> bool:
        """True when ``strategy``'s entries need the vote (``consensus.strategies``) at decision time ``C``."""
        if self.live and self._read_at != C:
            self._read_at = C
            self.cfg = load_consensus_settings(self.conn, self.account_id, C)
        return strategy in self.cfg.strategies

    def decide(self, candidate: dict, lessons: list[dict], C: int):
        """The decision for one candidate (``ats.risk.consensus.Decision``); live votes are recorded.

        Parameters
        ----------
        candidate : dict
            strategy, symbol, side, price (USD), regime, decision_time (ISO-8601 UTC), context.
        lessons : list of dict
            ``{ll, title}`` of the lessons retrieved for it.
        C : int
            Decision time, Unix s (the recorded votes' ``ts``).
        """
        from ..risk import consensus as cz

        cfg = self.cfg
        if self.mode == "off":
            return cz.Decision(True, (), {}, "consensus: off (--consensus off)", off=True)
        ts = datetime.fromtimestamp(C, tz=timezone.utc)
        if self.mode == "replay":
            return cz.recorded_decision(self.conn, account_id=self.account_id, ts=ts,
                                        strategy=candidate["strategy"], symbol=candidate["symbol"],
                                        n_voters=len(cfg.voters), supermajority=cfg.supermajority)
        d = cz.vote_on(candidate, cfg.voters, supermajority=cfg.supermajority, timeout_s=cfg.timeout_s,
                       lessons=lessons)
        if d.votes:
            cz.record(self._writer(), d, run_id=self.run_id, account_id=self.account_id, ts=ts,
                      strategy=candidate["strategy"], symbol=candidate["symbol"], side=candidate["side"])
        return d

    def _writer(self):
        if self._wconn is None:
            from ..db.connection import connect, database_url

            self._wconn = connect(self.url or database_url(), application_name=f"ats-consensus:{self.run_id}"[:60])
            self._wconn.autocommit = True
        return self._wconn

    def close(self) -> None:
        """Close the vote writer's connection (if one was opened)."""
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None


def decision_audit(d, mode: str) -> dict:
    """The ``consensus`` part of the signal's audit context: mode, enter, summary, the votes (voter, vote, error)."""
    return {"mode": mode, "enter": d.enter, "summary": d.summary, "params": d.params,
            "votes": [{"voter": v.voter, "vote": v.vote, "latency_ms": round(v.latency_ms, 1),
                       **({"error": v.error} if v.error else {})} for v in d.votes]}
