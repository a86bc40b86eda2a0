"""BybitBroker through pybit against the local simulator: ambiguous outcomes, partial fills, rejections, rate
limits, lot-step rounding and risk:min_qty, duplicates after a restart, 1x leverage."""

from __future__ import annotations

import pytest

from _live_helpers import KEY, SECRET, start_sim


@pytest.fixture
def venue(shared_data):
    from ats.execution.bybit import BybitBroker

    sim, srv, url = start_sim(shared_data, speed=1.0)
    b = BybitBroker(KEY, SECRET, base_url=url, backoff_s=0.01)
    yield sim, b
    srv.shutdown()


def _order(oid, side="buy", pside="long", intent="open", qty=0.01, t=None, sim=None):
    from ats.execution.broker import Order

    t = t or sim.now_ms() // 1000
    return Order(oid, f"live-0123456789ab-momentum-BTCUSDT-202105100000-{intent}-{side}-{oid:08x}", "momentum",
                 "BTCUSDT", side, pside, intent, qty, 50000.0, 100.0, t)


def _settle(b, sim):
    return b.on_bar("BTCUSDT", sim.now_ms() // 1000 + 3600, 0, 0, 0, 0, 0, {})


def test_dropped_response_is_looked_up_not_resent(venue):
    sim, b = venue
    sim.faults["drop"] = 1
    o = _order(1, sim=sim)
    b.submit(o)
    assert len(sim.orders) == 1 and sim.counts["/v5/order/create"] == 1
    assert sim.counts.get("/v5/order/history", 0) + sim.counts.get("/v5/order/realtime", 0) >= 1
    rep = _settle(b, sim)
    assert [r.status for r in rep] == ["filled"] and len(sim.orders) == 1
    assert list(sim.by_link) == [o.client_order_id] and len(o.client_order_id) <= 36


def test_partial_fill_reports_the_executed_quantity(venue):
    sim, b = venue
    sim.faults["partial"] = 0.4
    o = _order(2, sim=sim, qty=0.02)
    b.submit(o)
    (rep,) = _settle(b, sim)
    assert rep.status == "partially_filled"
    ex = sim.execs[-1]
    from decimal import Decimal

    # spot buy: the booked quantity is execQty minus the base-coin fee, on the lot step
    assert Decimal(repr(rep.fills[0].qty)) <= Decimal(ex["execQty"]) - Decimal(ex["execFee"])
    assert Decimal(ex["execQty"]) == Decimal("0.008")
    assert rep.fills[0].fee_usd > 0


def test_rejection_is_a_rejected_order(venue):
    sim, b = venue
    sim.faults["reject"] = 1
    o = _order(3, sim=sim)
    b.submit(o)
    (rep,) = _settle(b, sim)
    assert rep.status == "rejected" and "170131" in rep.reject_reason and not sim.orders


def test_rate_limit_backs_off_and_places_once(venue):
    sim, b = venue
    sim.faults["rate_limit"] = 2
    o = _order(4, sim=sim)
    b.submit(o)
    assert sim.counts["/v5/order/create"] == 3 and len(sim.orders) == 1
    assert [r.status for r in _settle(b, sim)] == ["filled"]


def test_lot_step_and_min_qty(venue):
    sim, b = venue
    o = _order(5, sim=sim, qty=0.1 + 0.02)  # 0.12000000000000001: rounded down to the lot step
    b.submit(o)
    assert sim.orders[next(iter(sim.orders))]["qty"] == "0.12"
    tiny = _order(6, sim=sim, qty=0.00001)
    b.submit(tiny)
    (_, rep) = _settle(b, sim)
    assert rep.status == "rejected" and rep.reject_reason.startswith("risk:min_qty")
    assert len(sim.orders) == 1  # the tiny order never reached the venue


def test_resubmission_after_restart_is_a_duplicate_not_a_second_order(venue, shared_data):
    from ats.execution.bybit import BybitBroker

    sim, b = venue
    o = _order(7, sim=sim)
    b.submit(o)
    b2 = BybitBroker(KEY, SECRET, base_url=b.base_url)  # a restarted process re-decides the same bar
    o2 = _order(7, sim=sim)
    b2.submit(o2)
    assert o2.client_order_id == o.client_order_id and len(sim.orders) == 1
    assert [r.status for r in _settle(b2, sim)] == ["filled"]


def test_short_uses_linear_at_1x_and_leverage_not_modified_is_fine(venue):
    sim, b = venue
    sim.linear["leverage"] = "1"  # 110043 on set_leverage: not an error
    o = _order(8, side="sell", pside="short", sim=sim, qty=0.01)
    b.submit(o)
    assert [r.status for r in _settle(b, sim)] == ["filled"]
    assert str(sim.linear["size"]) == "-0.010" or float(sim.linear["size"]) == -0.01
    c = _order(9, side="buy", pside="short", intent="close", sim=sim, qty=0.01)
    b.submit(c)
    assert [r.status for r in _settle(b, sim)] == ["filled"] and float(sim.linear["size"]) == 0
    assert sim.orders[max(sim.orders)]["reduceOnly"] is True


def test_signature_is_checked(shared_data):
    from ats.errors import AtsError
    from ats.execution.bybit import BybitBroker

    sim, srv, url = start_sim(shared_data)
    try:
        with pytest.raises(AtsError, match="10004"):
            BybitBroker(KEY, "wrong-secret", base_url=url).balance()
    finally:
        srv.shutdown()
