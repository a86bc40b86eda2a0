"""``BreakerBoard``: the breakers of one run, their states, transitions and the trading state they produce.

Every trip and reset is a ``Transition``; every change of a scope's trading state is a ``StateChange``. The engine
writes each transition as a ``system_events`` row (component 'risk', event_type 'breaker_tripped' /
'breaker_reset') and upserts ``breaker_states``; each state change as a row with event_type 'trading_state'
(payload: old, new, scope, by, cause). Times are Unix seconds (engine clock).
"""

from __future__ import annotations

from dataclasses import asdict

from .base import REGISTRY, Breaker, BreakerState, SpanInputs, StateChange, StepInputs, TradingState, Transition

_RANK = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class BreakerBoard:
    """The state of every breaker of one run.

    Parameters
    ----------
    breakers : iterable of Breaker subclasses, optional
        The breakers of this board, in update order; default every class in ``REGISTRY`` at construction.

    Notes
    -----
    ``update(inputs)`` runs one step: global breakers first, then, per present symbol, each symbol-scoped breaker.
    ``drain()`` / ``drain_state_changes()`` return and clear what happened since the last call. Externally driven
    breakers (e.g. a live loop's ``reconciliation``) use ``trip`` / ``reset``.
    """

    def __init__(self, breakers=None):
        classes = list(REGISTRY.values()) if breakers is None else list(breakers)
        self.breakers: dict[str, Breaker] = {c.name: c(self) for c in classes}
        self._global = [b for b in self.breakers.values() if b.scope == "global" and not b.external]
        self._symbol = [b for b in self.breakers.values() if b.scope == "symbol" and not b.external]
        self.states: dict[tuple[str, str], BreakerState] = {}
        self._pending: list[Transition] = []
        self._changes: list[StateChange] = []
        self._tripped_keys: set[tuple[str, str]] = set()
        self._halts: set[str] = {b.name for b in self.breakers.values() if b.halts_exits}
        self._params_key = None
        self._params: dict = {}

    # ---- lookup ----
    def get(self, name: str) -> Breaker:
        """The breaker instance called ``name``.

        Raises
        ------
        KeyError
            When the board has no such breaker.
        """
        return self.breakers[name]

    def __getattr__(self, attr):
        # ``board.loss_streak``: the consecutive-loss streak (kept for readers of older code and checkpoints)
        if attr == "loss_streak" and "breakers" in self.__dict__ and "consecutive_losses" in self.breakers:
            return self.breakers["consecutive_losses"].loss_streak
        raise AttributeError(attr)

    def _priority(self, name: str) -> int:
        b = self.breakers.get(name)
        return b.priority if b is not None else getattr(REGISTRY.get(name), "priority", 99)

    # ---- transitions ----
    def set(self, breaker: str, scope: str, trip: bool, ts: int, cause: str, ctx: dict,
            until: int | None = None) -> None:
        """Trip (``trip=True``) or reset ``breaker`` in ``scope`` at ``ts``.

        A trip of a tripped breaker only extends ``until``; a reset of a never-tripped one does nothing. Every real
        change is queued as a ``Transition`` (and a ``StateChange`` when the scope's trading state changes).

        Parameters
        ----------
        breaker : str
            Breaker name.
        scope : str
            '*' or a symbol.
        trip : bool
            Trip or reset.
        ts : int
            Unix s.
        cause : str
            One line saying why.
        ctx : dict
            JSON-able values that caused it.
        until : int, optional
            Earliest reset time (Unix s) of cool-off breakers.
        """
        key = (breaker, scope)
        st = self.states.get(key)
        if st is not None and st.tripped == trip:
            if trip and until is not None:
                st.until = max(st.until or 0, until)
            return
        if st is None and not trip:
            return
        before = self.scope_state(scope)
        self.states[key] = BreakerState(breaker, scope, trip, ts, cause, ctx, until)
        if trip:
            self._tripped_keys.add(key)
        else:
            self._tripped_keys.discard(key)
        self._pending.append(Transition(breaker, scope, trip, ts, cause, ctx))
        after = self.scope_state(scope)
        if after != before:
            self._changes.append(StateChange(scope, before, after, ts, breaker, cause))

    def trip(self, name: str, scope: str, ts: int, cause: str, ctx: dict | None = None, *,
             until: int | None = None, halts_exits: bool | None = None) -> None:
        """Trip a breaker from outside the bar loop (scope '*' = account-wide, else a symbol).

        Parameters
        ----------
        name : str
            Breaker name (need not be registered; ``halts_exits`` then says whether it halts exits too).
        scope : str
            '*' or a symbol.
        ts : int
            Unix s.
        cause : str
            One line saying why (reaches ``system_events``).
        ctx : dict, optional
            JSON-able values that caused it.
        until : int, optional
            Earliest reset time (Unix s).
        halts_exits : bool, optional
            Override of the class attribute: True makes the scope HALTED while tripped.
        """
        if halts_exits is None:
            halts_exits = bool(getattr(self.breakers.get(name) or REGISTRY.get(name), "halts_exits", False))
        if halts_exits:
            self._halts.add(name)
        self.set(name, scope, True, ts, cause, dict(ctx or {}), until)

    def reset(self, name: str, scope: str, ts: int, cause: str, ctx: dict | None = None) -> None:
        """Reset an externally driven breaker (see ``trip``); nothing happens when it is not tripped.

        Parameters
        ----------
        name : str
            Breaker name.
        scope : str
            '*' or a symbol.
        ts : int
            Unix s.
        cause : str
            One line saying why.
        ctx : dict, optional
            JSON-able context.
        """
        self.set(name, scope, False, ts, cause, dict(ctx or {}))

    def is_tripped(self, breaker: str, scope: str = "*") -> bool:
        """True while ``breaker`` is tripped in ``scope``.

        Parameters
        ----------
        breaker : str
            Breaker name.
        scope : str
            '*' (default) or a symbol.

        Returns
        -------
        bool
        """
        return (breaker, scope) in self._tripped_keys

    def any_tripped(self) -> bool:
        """True while any breaker is tripped anywhere."""
        return bool(self._tripped_keys)

    def drain(self) -> list[Transition]:
        """The transitions since the last call, oldest first (and forget them)."""
        out, self._pending = self._pending, []
        return out

    def drain_state_changes(self) -> list[StateChange]:
        """The trading-state changes since the last call, oldest first (and forget them)."""
        out, self._changes = self._changes, []
        return out

    def has_news(self) -> bool:
        """True when transitions or state changes wait to be drained."""
        return bool(self._pending or self._changes)

    def blocking(self, symbol: str) -> list[BreakerState]:
        """Tripped breakers that block a new entry/add in ``symbol`` (account-wide ones too), in priority order."""
        if not self._tripped_keys:
            return []
        out = [self.states[k] for k in self._tripped_keys if k[1] in ("*", symbol)]
        out.sort(key=lambda s: (self._priority(s.breaker), s.scope))
        return out

    # ---- trading state ----
    def scope_state(self, scope: str) -> TradingState:
        """The trading state produced by the breakers tripped in exactly ``scope`` ('*' or a symbol)."""
        state = TradingState.ACTIVE
        for b, sc in self._tripped_keys:
            if sc == scope:
                if b in self._halts:
                    return TradingState.HALTED
                state = TradingState.REDUCING
        return state

    def trading_state(self, symbol: str | None = None) -> TradingState:
        """The state in force for ``symbol`` (account-wide and symbol breakers), or account-wide when None."""
        g = self.scope_state("*")
        if symbol is None or g is TradingState.HALTED:
            return g
        s = self.scope_state(symbol)
        return s if _RANK[s] > _RANK[g] else g

    # ---- step path ----
    def params(self, settings: dict, market) -> dict:
        """Per breaker, its ``prepare(settings, market)``, cached while the same settings dict is in force.

        Parameters
        ----------
        settings : dict
            Settings in force (``SettingsView.at`` returns the same object until they change).
        market : object
            The run's series (``ats.engine.series.MarketSeries``) or None.

        Returns
        -------
        dict
            Breaker name -> prepared parameters.
        """
        if self._params_key is not settings:
            self._params = {n: b.prepare(settings, market) for n, b in self.breakers.items()}
            self._params_key = settings
        return self._params

    def update(self, inputs: StepInputs) -> None:
        """Run one step: every global breaker, then per present symbol every symbol-scoped breaker."""
        inputs.params = self.params(inputs.settings, inputs.market)
        for b in self._global:
            b.update(inputs)
        if self._symbol:
            for sym, i in inputs.present:
                inputs.symbol, inputs.index = sym, i
                for b in self._symbol:
                    b.update(inputs)
            inputs.symbol = inputs.index = None

    def record_trade(self, pnl_usd: float) -> None:
        """Tell every breaker with an ``on_trade`` hook about a closed trade (net P&L in USD)."""
        for b in self.breakers.values():
            hook = getattr(b, "on_trade", None)
            if hook is not None:
                hook(pnl_usd)

    # ---- fast path ----
    def static_events(self, env, settings: dict, market):
        """OR of every breaker's ``static_events`` over the feed timeline.

        Parameters
        ----------
        env : object
            The replay's step index (``ats.engine.quiet.SpanEnv``).
        settings : dict
            Settings in force.
        market : object
            The run's series.

        Returns
        -------
        numpy.ndarray of bool, shape (K,), or None
            None when no breaker declares static events.
        """
        params = self.params(settings, market)
        ev = None
        for n, b in self.breakers.items():
            e = b.static_events(env, params[n])
            if e is not None:
                ev = e if ev is None else (ev | e)
        return ev

    def quiet_steps(self, span: SpanInputs) -> int:
        """Steps of ``span`` (from its first) in which no breaker trips or resets: 0 while any is tripped or
        any transition waits to be drained, else the minimum over the breakers' ``quiet_steps``."""
        if self._tripped_keys or self.has_news():
            return 0
        span.params = self.params(span.settings, span.market)
        n = span.W
        for b in self.breakers.values():
            if not b.external:
                n = min(n, b.quiet_steps(span))
                if n <= 0:
                    return 0
        return n

    # ---- checkpoint ----
    def to_dict(self) -> dict:
        """JSON-able state: the breakers' extra state (``loss_streak``) and ``states`` (a list of BreakerState)."""
        d: dict = {}
        for b in self.breakers.values():
            d.update(b.state_dict())
        d.setdefault("loss_streak", 0)
        d["states"] = [asdict(s) for s in self.states.values()]
        return d

    @classmethod
    def from_dict(cls, d: dict, breakers=None) -> "BreakerBoard":
        """Rebuild a board from ``to_dict`` output (also the checkpoints written before the plug-in board).

        Parameters
        ----------
        d : dict
            ``{'loss_streak': n, 'states': [BreakerState as dict, ...]}`` (plus any breaker's extra keys).
        breakers : iterable of Breaker subclasses, optional
            As in the constructor.

        Returns
        -------
        BreakerBoard
            Loading is not a transition: nothing is queued.
        """
        b = cls(breakers)
        for br in b.breakers.values():
            br.load_state(d)
        for s in d.get("states", []):
            st = BreakerState(**s)
            b.states[(st.breaker, st.scope)] = st
            if st.tripped:
                b._tripped_keys.add((st.breaker, st.scope))
        return b
