"""consecutive_losses: ``breaker.consecutive_losses`` losing closed trades in a row (net of fees) halt new entries
account-wide for ``breaker.consecutive_losses_cooloff_minutes``; then the streak restarts from zero."""

from __future__ import annotations

from .base import Breaker, SpanInputs, StepInputs, register


@register
class ConsecutiveLosses(Breaker):
    """Counts losing closed trades (``on_trade``); tripped from the limit until the cool-off elapsed."""

    name = "consecutive_losses"
    scope = "global"
    priority = 2
    settings = {
        "breaker.consecutive_losses": (6, "trip after this many losing closed trades in a row (account-wide)"),
        "breaker.consecutive_losses_cooloff_minutes": (720, "the consecutive-loss breaker resets after this long"),
    }

    def __init__(self, board):
        super().__init__(board)
        self.loss_streak = 0

    def prepare(self, settings: dict, market) -> tuple[int, float]:
        """Settings-derived parameters, recomputed only when the settings in force change.

        Parameters
        ----------
        settings : dict
            Settings in force.
        market : object
            Unused.

        Returns
        -------
        tuple of (int, float)
            (limit in trades, cool-off in minutes).
        """
        return (int(self.setting(settings, "breaker.consecutive_losses")),
                float(self.setting(settings, "breaker.consecutive_losses_cooloff_minutes")))

    def on_trade(self, pnl_usd: float) -> None:
        """Count a closed trade toward the streak (a loss: ``pnl_usd`` < 0, net of fees)."""
        self.loss_streak = self.loss_streak + 1 if pnl_usd < 0 else 0

    def update(self, inputs: StepInputs) -> None:
        """Trip at the limit, reset after the cool-off (only evaluated when either can happen)."""
        limit, cool = inputs.params[self.name]
        if limit > 0 and (self.loss_streak >= limit or self.is_tripped()):
            self.observe(inputs.ts, limit, cool)

    def observe(self, ts: int, limit: int, cooloff_min: float) -> None:
        """Trip when the streak reached ``limit`` (until ts + cool-off); reset (streak to 0) once ``ts`` >= until.

        Parameters
        ----------
        ts : int
            Unix s.
        limit : int
            Losing trades in a row that trip it (0 disables).
        cooloff_min : float
            Minutes until the reset.
        """
        st = self.board.states.get((self.name, "*"))
        if st is not None and st.tripped:
            if st.until is not None and ts >= st.until:
                self.loss_streak = 0
                self.board.set(self.name, "*", False, ts, f"cool-off of {cooloff_min:g} min elapsed",
                               {"limit": limit})
            return
        if limit > 0 and self.loss_streak >= limit:
            self.board.set(self.name, "*", True, ts, f"{self.loss_streak} consecutive losing trades >= {limit}",
                           {"streak": self.loss_streak, "limit": limit}, until=ts + int(cooloff_min * 60))

    def quiet_steps(self, span: SpanInputs) -> int:
        """0 when the streak already reached the limit (it trips at the next step), else the whole span."""
        limit = span.params[self.name][0]
        return 0 if limit > 0 and self.loss_streak >= limit else span.W

    def state_dict(self) -> dict:
        """``{'loss_streak': n}`` (the board checkpoint's top-level key since version 1)."""
        return {"loss_streak": self.loss_streak}

    def load_state(self, d: dict) -> None:
        """Restore the streak (0 when absent)."""
        self.loss_streak = int(d.get("loss_streak", 0))
