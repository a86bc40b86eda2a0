"""The paper broker's fill model: next-open fills, slippage, fees, rejects, partial fills, limits, contingent
orders (from tests/test_engine_units.py)."""

from __future__ import annotations

import pytest

from ats.execution import Order, PaperBroker
from ats.risk.settings import DEFAULTS


def _order(side="buy", qty=1.0, vol=1000.0, **kw):
    return Order(order_id=1, client_order_id=kw.pop("coid", "c1"), strategy="s", symbol="X", side=side,
                 position_side="long", intent="open" if side == "buy" else "close", qty=qty, decision_price=100.0,
                 decision_volume=vol, submitted_at=3600, **kw)


S = dict(DEFAULTS)


def test_paper_broker_fill_model():
    b = PaperBroker()
    o = _order(qty=10.0, vol=1000.0)  # 1 % participation -> 5 + 10 x 1 = 15 bps
    b.submit(o)
    assert b.on_bar("X", 0, 100, 101, 99, 100, 1, S) == []  # a bar opening before the decision closed: not yet
    rep = b.on_bar("X", 3600, 200.0, 210, 190, 205, 500, S)
    f = rep[0].fills[0]
    assert rep[0].status == "filled" and f.ts == 3600
    assert f.slippage_bps == pytest.approx(15.0) and f.price == pytest.approx(200.0 * 1.0015)
    assert f.fee_usd == pytest.approx(10 * f.price * 10 / 1e4) and f.liquidity == "taker"
    s2 = b.on_bar("X", 7200, 1, 1, 1, 1, 1, S)
    assert s2 == []
    sell = _order(side="sell", qty=10.0, vol=1000.0, coid="c2")
    b.submit(sell)
    f = b.on_bar("X", 3600, 200.0, 210, 190, 205, 500, S)[0].fills[0]
    assert f.price == pytest.approx(200.0 * (1 - 0.0015))


def test_paper_broker_reject_partial_limit_and_contingent():
    b = PaperBroker()
    big = _order(qty=200.0, vol=1000.0)  # 20 % participation -> 205 bps > 100 bps limit
    b.submit(big)
    rep = b.on_bar("X", 3600, 100, 101, 99, 100, 1000, S)[0]
    assert rep.status == "rejected" and "slippage" in rep.reject_reason and not rep.fills
    s = {**S, "broker.partial_fills": True}
    part = _order(qty=200.0, vol=1000.0, coid="p")
    b.submit(part)
    rep = b.on_bar("X", 3600, 100, 101, 99, 100, 1000, s)[0]
    assert rep.status == "partially_filled" and rep.fills[0].qty == pytest.approx(50.0)  # 5 % of volume
    assert rep.fills[0].slippage_bps == pytest.approx(55.0) and part.filled_qty == pytest.approx(50.0)
    lim = _order(qty=1.0, order_type="limit", limit_price=99.5, coid="l")
    b.submit(lim)
    rep = b.on_bar("X", 3600, 100, 101, 99, 100, 1000, S)[0]
    assert rep.fills[0].price == 99.5 and rep.fills[0].liquidity == "maker"
    assert rep.fills[0].fee_usd == pytest.approx(99.5 * 2 / 1e4)
    parent = _order(qty=200.0, coid="parent")  # will be rejected
    child = _order(qty=1.0, coid="child", parent_client_order_id="parent")
    b.submit(parent)
    b.submit(child)
    reps = b.on_bar("X", 3600, 100, 101, 99, 100, 1000, S)
    assert [r.status for r in reps] == ["rejected", "cancelled"] and "parent" in reps[1].reject_reason
