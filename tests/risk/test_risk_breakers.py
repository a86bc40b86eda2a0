"""Circuit breakers as plug-ins: every breaker implements the base and registers, the board's transitions and
checkpoint (moved from tests/test_engine_units.py), the trading state, externally driven breakers, and a breaker
defined here plugging into a real replay without touching the engine."""

from __future__ import annotations

import inspect
import json

import pytest

from ats.risk import breakers as brk
from ats.risk.breakers import BreakerBoard, TradingState
from ats.risk.settings import DEFAULTS, SETTINGS

SIX = {"manual_stop", "daily_drawdown", "consecutive_losses", "market_volatility", "velocity", "feed_anomaly"}


def test_breaker_board_transitions():
    b = BreakerBoard()
    b.get("velocity").observe(1000, "SOLUSDT", 9.0, 8.0, 60, 120)
    assert [s.breaker for s in b.blocking("SOLUSDT")] == ["velocity"] and not b.blocking("ETHUSDT")
    b.get("velocity").observe(1000 + 3600, "SOLUSDT", 1.0, 8.0, 60, 120)  # calm but within the 120 min cool-off
    assert b.is_tripped("velocity", "SOLUSDT")
    b.get("velocity").observe(1000 + 7200, "SOLUSDT", 1.0, 8.0, 60, 120)
    assert not b.is_tripped("velocity", "SOLUSDT")
    b.get("market_volatility").observe(5000, 160.0, 150.0, 0.8)
    b.get("market_volatility").observe(5100, 130.0, 150.0, 0.8)  # hysteresis: still tripped above 120
    assert b.is_tripped("market_volatility")
    b.get("market_volatility").observe(5200, 110.0, 150.0, 0.8)
    assert not b.is_tripped("market_volatility")
    for _ in range(6):
        b.record_trade(-1.0)
    b.get("consecutive_losses").observe(6000, 6, 720)
    assert b.is_tripped("consecutive_losses")
    b.get("consecutive_losses").observe(6000 + 720 * 60, 6, 720)
    assert not b.is_tripped("consecutive_losses") and b.loss_streak == 0
    b.get("daily_drawdown").observe(7000, 9_650.0, 10_000.0, 3.0)
    b.get("manual_stop").observe(7000, True)
    assert [s.breaker for s in b.blocking("ETHUSDT")] == ["manual_stop", "daily_drawdown"]
    b.get("daily_drawdown").observe(7100, 9_800.0, 9_650.0, 3.0)  # new UTC day: new reference
    b.get("manual_stop").observe(7100, False)
    assert not b.blocking("ETHUSDT")
    tr = b.drain()
    assert [(t.breaker, t.tripped) for t in tr] == [
        ("velocity", True), ("velocity", False), ("market_volatility", True), ("market_volatility", False),
        ("consecutive_losses", True), ("consecutive_losses", False), ("daily_drawdown", True), ("manual_stop", True),
        ("daily_drawdown", False), ("manual_stop", False)]
    assert all(t.cause for t in tr)
    again = BreakerBoard.from_dict(json.loads(json.dumps(b.to_dict())))
    assert again.to_dict() == b.to_dict()

def test_every_breaker_implements_the_base_and_registers():
    assert SIX <= set(brk.REGISTRY)
    assert set(brk.BREAKERS) == SIX  # the bar-loop breakers, in blocking priority
    for name in SIX:
        cls = brk.REGISTRY[name]
        assert issubclass(cls, brk.Breaker) and cls is not brk.Breaker and cls.name == name
        assert cls.scope in ("global", "symbol")
        assert cls.update is not brk.Breaker.update, name  # it really updates from the step inputs
        mod = inspect.getmodule(cls).__name__
        assert mod == f"ats.risk.breakers.{name}", mod  # one module per breaker, named after it
        for key, (default, desc) in cls.settings.items():  # its settings and defaults reach the settings table
            assert SETTINGS[key] == (default, desc) and DEFAULTS[key] == default and desc
    assert {c.scope for c in brk.REGISTRY.values() if c.name in SIX} == {"global", "symbol"}
    assert [b.name for b in BreakerBoard().breakers.values()][:6] == [
        "manual_stop", "daily_drawdown", "consecutive_losses", "market_volatility", "velocity", "feed_anomaly"]


def test_register_refuses_bad_or_duplicate_breakers():
    class NoName(brk.Breaker):
        pass

    with pytest.raises(ValueError):
        brk.register(NoName)

    class Clash(brk.Breaker):
        name = "velocity"

    with pytest.raises(ValueError):
        brk.register(Clash)
    assert brk.REGISTRY["velocity"].__name__ == "Velocity"


def test_trading_state_reducing_halted_and_external_breakers():
    b = BreakerBoard()
    assert b.trading_state() is TradingState.ACTIVE and b.trading_state("SOLUSDT") is TradingState.ACTIVE
    b.get("velocity").observe(1000, "SOLUSDT", 9.0, 8.0, 60, 120)
    assert b.trading_state("SOLUSDT") is TradingState.REDUCING and b.trading_state() is TradingState.ACTIVE
    assert b.trading_state("ETHUSDT") is TradingState.ACTIVE
    b.trip("reconciliation", "*", 2000, "positions differ from the venue", {"diff": 1}, halts_exits=True)
    assert b.trading_state() is TradingState.HALTED and b.trading_state("ETHUSDT") is TradingState.HALTED
    assert [s.breaker for s in b.blocking("ETHUSDT")] == ["reconciliation"]
    b.reset("reconciliation", "*", 3000, "reconciled")
    assert b.trading_state() is TradingState.ACTIVE and b.trading_state("SOLUSDT") is TradingState.REDUCING
    b.reset("reconciliation", "*", 3100, "again")  # not tripped: nothing happens
    ch = b.drain_state_changes()
    assert [(c.scope, c.old, c.new, c.breaker) for c in ch] == [
        ("SOLUSDT", TradingState.ACTIVE, TradingState.REDUCING, "velocity"),
        ("*", TradingState.ACTIVE, TradingState.HALTED, "reconciliation"),
        ("*", TradingState.HALTED, TradingState.ACTIVE, "reconciliation")]
    assert [(t.breaker, t.tripped) for t in b.drain()] == [
        ("velocity", True), ("reconciliation", True), ("reconciliation", False)]
    assert not b.has_news()


def test_old_checkpoint_format_still_loads():
    old = {"loss_streak": 3, "states": [
        {"breaker": "velocity", "scope": "SOLUSDT", "tripped": True, "since": 100, "cause": "fast",
         "context": {"move_pct": 9.0}, "until": 7300},
        {"breaker": "market_volatility", "scope": "*", "tripped": False, "since": 50, "cause": "calm",
         "context": {}, "until": None}]}
    b = BreakerBoard.from_dict(json.loads(json.dumps(old)))
    assert b.loss_streak == 3 and b.get("consecutive_losses").loss_streak == 3
    assert b.is_tripped("velocity", "SOLUSDT") and not b.is_tripped("market_volatility")
    assert b.trading_state("SOLUSDT") is TradingState.REDUCING
    assert b.to_dict() == old
    assert not b.drain() and not b.drain_state_changes()  # loading is not a transition
