"""Position and portfolio limits: each gate of check_entry (from tests/test_engine_units.py)."""

from __future__ import annotations

import pytest

from ats.risk.limits import check_entry
from ats.risk.settings import DEFAULTS
from ats.risk.sizing import estimate


def _check(**kw):
    base = dict(intent="open", position_side="long", equity=10_000.0, cash=10_000.0, gross_exposure_usd=0.0,
                open_positions=0, position_value_usd=0.0, position_pnl_pct=None, position_adds=0,
                params={"trade_amount_usd": 500.0, "max_adds": 1},
                kelly=estimate([], multiplier=0.25, cap_pct=10, min_trades=20), correlation=None,
                settings=dict(DEFAULTS), taker_fee_bps=10.0)
    base.update(kw)
    return check_entry(**base)


def test_risk_limits_each_gate():
    assert _check().ok and _check().notional == 500.0
    assert _check(open_positions=8).gate == "risk:max_open_positions"
    assert _check(intent="add", position_adds=1).gate == "risk:max_adds"
    assert _check(intent="add", position_pnl_pct=-2.5, position_value_usd=500).gate == "risk:add_to_loser"
    assert _check(intent="add", position_pnl_pct=-1.0, position_value_usd=500).ok
    assert _check(intent="add", position_pnl_pct=1.0, position_value_usd=2495.0).gate == "risk:max_position_size"
    assert _check(equity=2_000.0, cash=2_000.0, intent="add", position_pnl_pct=1.0,
                  position_value_usd=395.0).gate == "risk:max_allocation"
    assert _check(correlation=0.95).gate == "risk:correlation"
    assert _check(correlation=0.5).ok
    assert _check(gross_exposure_usd=9_995.0).gate == "risk:gross_exposure"
    assert _check(cash=5.0).gate == "risk:cash"
    assert _check(position_side="short", cash=5.0).ok  # a 1x short needs margin (gross exposure), not cash
    k = estimate([0.005, -0.02] * 15, multiplier=0.25, cap_pct=10, floor_pct=0, min_trades=20)
    assert _check(kelly=k).gate == "risk:kelly"
    k = estimate([0.005, -0.02] * 15, multiplier=0.25, cap_pct=10, floor_pct=1, min_trades=20)
    assert _check(kelly=k).notional == pytest.approx(100.0)  # probe: 1 % of equity
