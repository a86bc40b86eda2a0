"""manual_stop: the operator's STOP flag (setting ``breaker.manual_stop``) halts new entries account-wide.

Replays and backtests read the flag as of each bar from the effective-dated setting; a running live loop
re-reads it every bar (``SettingsView(live=True)``).
"""

from __future__ import annotations

from .base import Breaker, SpanInputs, StepInputs, manual_on, register


@register
class ManualStop(Breaker):
    """Tripped while the setting ``breaker.manual_stop`` is on (see ``manual_on``); scope global."""

    name = "manual_stop"
    scope = "global"
    priority = 0
    settings = {"breaker.manual_stop": (False, "manual STOP flag: true halts all new entries until set false")}

    def update(self, inputs: StepInputs) -> None:
        """Follow the flag in force at ``inputs.ts``."""
        self.observe(inputs.ts, self.setting(inputs.settings, "breaker.manual_stop"))

    def observe(self, ts: int, flag) -> None:
        """Trip when ``flag`` reads as on, reset when it reads as off.

        Parameters
        ----------
        ts : int
            Unix s.
        flag : object
            The setting's value (see ``manual_on``).
        """
        on = manual_on(flag)
        if on == self.is_tripped():
            return
        self.board.set(self.name, "*", on, ts, "manual STOP flag set" if on else "manual STOP flag cleared",
                       {"setting": "breaker.manual_stop", "value": flag})

    def quiet_steps(self, span: SpanInputs) -> int:
        """0 while the flag is on (a change of the setting ends the span on its own: settings valid_until)."""
        return 0 if manual_on(self.setting(span.settings, "breaker.manual_stop")) else span.W
