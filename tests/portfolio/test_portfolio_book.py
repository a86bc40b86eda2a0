"""Portfolio accounting: the equity identity for longs and shorts (from tests/test_engine_units.py)."""

from __future__ import annotations

import pytest

from ats.portfolio.book import Portfolio, Position


def test_portfolio_equity_identity_long_and_short():
    pf = Portfolio.new(10_000.0)
    lg = Position(1, "s", "BTC", "long", 0)
    sh = Position(2, "s", "ETH", "short", 0)
    pf.positions = {("s", "BTC"): lg, ("s", "ETH"): sh}
    pf.apply_entry(lg, 0.01, 30_000.0, 0.3)
    pf.apply_entry(lg, 0.01, 32_000.0, 0.32)
    pf.apply_entry(sh, 1.0, 1_000.0, 1.0)
    marks = {"BTC": 31_500.0, "ETH": 950.0}
    assert lg.avg_entry == pytest.approx(31_000.0)
    eq = pf.equity(marks)
    assert eq == pytest.approx(10_000 + pf.realized_usd + pf.unrealized(marks), abs=1e-9)
    pnl = pf.apply_exit(lg, 0.005, 33_000.0, 0.165)
    assert pnl == pytest.approx((33_000 - 31_000) * 0.005 - 0.62 / 4 - 0.165)
    pnl_s = pf.apply_exit(sh, 1.0, 900.0, 0.9)
    assert pnl_s == pytest.approx(100.0 - 1.0 - 0.9) and sh.qty == 0
    marks = {"BTC": 29_000.0, "ETH": 900.0}
    del pf.positions[("s", "ETH")]
    assert pf.equity(marks) == pytest.approx(10_000 + pf.realized_usd + pf.unrealized(marks), abs=1e-9)
    assert pf.fees_usd == pytest.approx(0.3 + 0.32 + 1.0 + 0.165 + 0.9)
