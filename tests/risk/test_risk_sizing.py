"""Fractional-Kelly sizing: the formula and the estimate (from tests/test_engine_units.py)."""

from __future__ import annotations

import pytest

from ats.risk.sizing import estimate, kelly_fraction


def test_kelly_formula_and_estimate():
    assert kelly_fraction(0.5, 1.0, 1.0) == 0.0
    assert kelly_fraction(0.6, 1.0, 1.0) == pytest.approx(0.2)  # Kelly 1956: p - q for even odds
    assert kelly_fraction(0.5, 0.04, 0.02) == pytest.approx(0.5 / 0.02 - 0.5 / 0.04)  # Thorp general bet
    few = estimate([0.01] * 5, multiplier=0.25, cap_pct=10, floor_pct=1, min_trades=20)
    assert few.fraction is None and few.n_trades == 5
    thin = estimate([0.012, -0.01] * 15, multiplier=0.25, cap_pct=10, floor_pct=1, min_trades=20)
    f = 0.5 / 0.01 - 0.5 / 0.012
    assert thin.f_star == pytest.approx(f) and thin.fraction == pytest.approx(min(0.25 * f, 0.10))
    losing = estimate([0.005, -0.02] * 15, multiplier=0.25, cap_pct=10, floor_pct=1, min_trades=20)
    assert losing.f_star < 0 and losing.fraction == pytest.approx(0.01)  # probe floor
    blocked = estimate([0.005, -0.02] * 15, multiplier=0.25, cap_pct=10, floor_pct=0, min_trades=20)
    assert blocked.fraction == 0
