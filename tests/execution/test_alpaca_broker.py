"""AlpacaBroker through the real alpaca-py clients against the local Alpaca simulator on 127.0.0.1.

Each test drives the simulated venue clock bar by bar over real SPY daily bars and checks what the venue recorded
(orders, legs, positions, endpoints hit) as well as what the broker reported to the engine.
"""

from __future__ import annotations

import logging
import os
import traceback
from decimal import Decimal

import pytest

from ats.errors import AtsError
from ats.execution.alpaca import (AlpacaBroker, RetryPolicy, check_multi_leg, iron_condor_legs, load_keys,
                                  venue_check_failures, venue_client_id)
from ats.execution.broker import Broker, Order
from ats.execution.venue import VenueAdapter
from ats.execution.venue_sim.alpaca import AlpacaSim, load_bars, option_price

KEY, SECRET = "PKSIMTESTKEY0000000001", "simsecret-PLANTED-9f8e7d6c5b4a"
I0 = 300          # decision bar index in SPY_1d.csv (1999-03)


@pytest.fixture(scope="module")
def spy(shared_data):
    return load_bars(shared_data / "equities" / "SPY_1d.csv")


@pytest.fixture
def sim(spy):
    s = AlpacaSim([spy], KEY, SECRET, start_ms=spy.t[I0] + spy.tf_ms, pattern_day_trader=True).start()
    yield s
    s.stop()


@pytest.fixture
def waits():
    return []


@pytest.fixture
def broker(sim, waits):
    return AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id="t1",
                        retry=RetryPolicy(max_retries=4, backoff_s=0.25, timeout_s=5, sleep=waits.append))


def close_of(spy, i):
    """Unix ms of the close of bar i (= its open + 1 day)."""
    return spy.t[i] + spy.tf_ms


def order(cid, *, side="buy", qty=10.0, intent="open", spy=None, i=I0, otype="market", limit=None, ctx=None):
    long_ = (side == "buy") != (intent == "close")       # a close sells a long / buys back a short
    return Order(1, cid, "trend", "SPY", side, "long" if long_ else "short", intent, qty,
                 spy.rows[i][3], spy.rows[i][4], close_of(spy, i) // 1000, order_type=otype, limit_price=limit,
                 context=ctx or {})


def bar(broker, spy, sim, i):
    """Let bar i close at the venue, then hand it to the broker as the engine does."""
    sim.set_now(close_of(spy, i) + 1000)
    o, h, lo, c, v = spy.rows[i]
    return broker.on_bar("SPY", spy.t[i] // 1000, o, h, lo, c, v, {})


def posts(sim):
    return [c for c in sim.calls if c == ("POST", "/v2/orders")]


def test_protocols(broker):
    assert isinstance(broker, Broker) and isinstance(broker, VenueAdapter)
    assert broker.max_client_id_len == 48 and broker.venue == "alpaca"


def test_equity_market_order_carries_our_client_order_id_and_fills_next_open(broker, sim, spy):
    cid = "t1-trend-SPY-199903-open-buy-1a2b3c4d"
    broker.submit(order(cid, spy=spy))
    assert [o.client_order_id for o in sim.orders] == [cid]
    reps = bar(broker, spy, sim, I0 + 1)
    assert len(reps) == 1 and reps[0].status == "filled"
    f = reps[0].fills[0]
    assert f.qty == 10 and f.price == spy.rows[I0 + 1][0] and f.slippage_bps == 0 and f.fee_usd == 0
    assert f.ts >= close_of(spy, I0) // 1000
    assert broker.pending() == [] and cid in broker.sent_at
    assert [(p.symbol, p.qty, p.category) for p in broker.positions()] == [("SPY", Decimal(10), "equity")]
    fills = broker.fills_since(spy.t[I0])
    assert [(x.client_order_id, x.qty, x.price) for x in fills] == [(cid, Decimal(10),
                                                                     Decimal(str(spy.rows[I0 + 1][0])))]
    bal = broker.balance()
    assert bal.cash_usd == Decimal(str(round(100_000 - 10 * spy.rows[I0 + 1][0], 2)))


def test_long_client_order_id_is_shortened_deterministically(broker, sim, spy):
    cid = "run-20261201-abcdef-trend_following-SPY-199903010000-open-buy-1a2b3c4d"
    assert len(cid) > 48
    vid = venue_client_id(cid)
    assert len(vid) == 48 and vid == venue_client_id(cid) and vid != venue_client_id(cid + "x")
    broker.submit(order(cid, spy=spy, otype="limit", limit=round(spy.rows[I0 + 1][2] * 0.9, 2)))
    assert [o.client_order_id for o in sim.orders] == [vid]
    assert [o.client_order_id for o in broker.open_orders()] == [cid]      # reconciliation sees the engine's id
    assert bar(broker, spy, sim, I0 + 1)[0].order.client_order_id == cid and broker.open_orders() == []


@pytest.mark.parametrize("fault", ["drop_next_order_response", "error500_next_order"])
def test_ambiguous_outcome_is_looked_up_not_resubmitted(broker, sim, spy, fault):
    setattr(sim.faults, fault, True)
    cid = "t1-trend-SPY-199903-open-buy-drop0001"
    broker.submit(order(cid, spy=spy))
    assert len(sim.orders) == 1 and len(posts(sim)) == 1          # accepted once, never sent again
    assert ("GET", "/v2/orders:by_client_order_id") in sim.calls
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "filled" and reps[0].fills[0].qty == 10
    assert [p.qty for p in broker.positions()] == [Decimal(10)]


def test_timeout_is_looked_up_not_resubmitted(sim, spy, waits):
    b = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id="t1",
                     retry=RetryPolicy(backoff_s=0.01, timeout_s=0.3, sleep=waits.append))
    sim.faults.delay_next_order_response = 1.0
    b.submit(order("t1-trend-SPY-199903-open-buy-slow0001", spy=spy))
    assert len(sim.orders) == 1 and len(posts(sim)) == 1
    assert ("GET", "/v2/orders:by_client_order_id") in sim.calls
    assert bar(b, spy, sim, I0 + 1)[0].status == "filled"


def test_order_the_venue_never_accepted_is_resent_once(broker, sim, spy):
    sim.faults.unavailable_next_order = True        # 503 and nothing accepted: the lookup finds nothing
    broker.submit(order("t1-trend-SPY-199903-open-buy-5030001", spy=spy))
    assert len(posts(sim)) == 2 and len(sim.orders) == 1
    assert bar(broker, spy, sim, I0 + 1)[0].status == "filled"


def test_second_submission_of_the_same_decision_is_adopted_not_doubled(broker, sim, spy):
    cid = "t1-trend-SPY-199903-open-buy-resend01"
    broker.submit(order(cid, spy=spy))
    broker.submit(order(cid, spy=spy))          # the same decision again (e.g. after a restart)
    assert len(sim.orders) == 1 and len(posts(sim)) == 2          # the venue answered 422 duplicate
    reps = bar(broker, spy, sim, I0 + 1)
    assert [r.status for r in reps] == ["filled"] and reps[0].fills[0].qty == 10


def test_partial_fill_reports_the_filled_part_and_cancels_the_rest(broker, sim, spy):
    sim.faults.partial_next_order = 0.4
    broker.submit(order("t1-trend-SPY-199903-open-buy-part0001", spy=spy, qty=100))
    assert broker.in_flight() == {("SPY", "equity"): Decimal(40)}     # executed, not yet reported
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "partially_filled" and [f.qty for f in reps[0].fills] == [40]
    assert sim.orders[0].status == "canceled" and sim.orders[0].filled_qty == 40
    assert [p.qty for p in broker.positions()] == [Decimal(40)] and broker.pending() == []


def test_rejection_is_reported_at_the_next_bar_with_the_venue_reason(broker, sim, spy):
    sim.faults.reject_next_order = "insufficient buying power"
    broker.submit(order("t1-trend-SPY-199903-open-buy-rej00001", spy=spy))
    assert sim.orders == []
    again = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id="t1")
    again.restore([Order.from_dict(o.to_dict()) for o in broker.pending()])   # the loop restores every bar
    assert len(posts(sim)) == 1                                                 # a refused order is not resent
    reps = bar(again, spy, sim, I0 + 1)
    assert reps[0].status == "rejected" and "insufficient buying power" in reps[0].reject_reason
    assert broker.positions() == []


def test_rate_limit_is_backed_off_and_the_order_sent_once(broker, sim, spy, waits):
    sim.faults.rate_limit_next = 3
    broker.submit(order("t1-trend-SPY-199903-open-buy-rl000001", spy=spy))
    assert waits == [0.25, 0.5, 1.0]
    assert len(sim.orders) == 1
    sim.faults.rate_limit_next = 99
    with pytest.raises(AtsError, match="429"):
        broker.balance()


def test_limit_order_rests_one_bar_then_is_cancelled(broker, sim, spy):
    lim = round(spy.rows[I0 + 1][2] * 0.9, 2)      # far below the next bar's low
    cid = "t1-trend-SPY-199903-open-buy-lim00001"
    broker.submit(order(cid, spy=spy, otype="limit", limit=lim))
    assert [(o.client_order_id, o.status) for o in broker.open_orders()] == [(cid, "new")]
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "cancelled" and reps[0].fills == []
    assert sim.orders[0].status == "canceled" and broker.positions() == [] and broker.open_orders() == []


def test_limit_order_fills_at_the_limit_when_the_bar_reaches_it(broker, sim, spy):
    o, h, lo, c, v = spy.rows[I0 + 1]
    lim = round((o + lo) / 2, 2)
    assert lo <= lim < o
    broker.submit(order("t1-trend-SPY-199903-open-buy-lim00002", spy=spy, otype="limit", limit=lim))
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "filled" and reps[0].fills[0].price == lim


def test_exit_goes_through_close_position_not_a_counter_order(broker, sim, spy):
    broker.submit(order("t1-trend-SPY-199903-open-buy-ex000001", spy=spy))
    bar(broker, spy, sim, I0 + 1)
    broker.submit(order("t1-trend-SPY-199903-close-sell-ex000001", side="sell", intent="close", spy=spy,
                        i=I0 + 1))
    assert ("DELETE", "/v2/positions/SPY") in sim.calls
    assert len(posts(sim)) == 1                                   # only the entry was a POST /v2/orders
    reps = bar(broker, spy, sim, I0 + 2)
    assert reps[0].status == "filled" and reps[0].fills[0].price == spy.rows[I0 + 2][0]
    assert broker.positions() == []
    assert sim.orders[-1].source == "close_position"


def test_close_after_a_restart_adopts_the_close_already_sent(broker, sim, spy, waits):
    broker.submit(order("t1-trend-SPY-199903-open-buy-ex000002", spy=spy))
    bar(broker, spy, sim, I0 + 1)
    close = order("t1-trend-SPY-199903-close-sell-ex000002", side="sell", intent="close", spy=spy, i=I0 + 1)
    saved = Order.from_dict(close.to_dict())             # checkpointed before the close was sent
    broker.submit(close)
    fresh = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id="t1",
                         retry=RetryPolicy(sleep=waits.append))
    fresh.restore([saved])
    assert [c for c in sim.calls if c[0] == "DELETE"] == [("DELETE", "/v2/positions/SPY")]
    assert bar(fresh, spy, sim, I0 + 2)[0].status == "filled" and fresh.positions() == []


def test_close_of_the_wrong_side_is_refused(broker, sim, spy):
    broker.submit(order("t1-trend-SPY-199903-open-buy-ex000003", spy=spy))
    bar(broker, spy, sim, I0 + 1)
    with pytest.raises(AtsError, match="holds SPY long"):
        broker.submit(order("t1-trend-SPY-199903-close-buy-ex000003", side="buy", intent="close", spy=spy,
                            i=I0 + 1))
    assert not any(m == "DELETE" for m, _ in sim.calls)


def _condor(spy, i):
    s = spy.rows[i][3]
    k = round(s)
    return iron_condor_legs("SPY", "1999-04-16", (k - 10, k - 5, k + 5, k + 10), 2)


def test_iron_condor_is_one_mleg_order_with_four_legs(broker, sim, spy):
    ic = _condor(spy, I0)
    broker.submit(order("t1-ic-SPY-199903-open-sell-ic000001", side="sell", qty=2, spy=spy,
                        ctx={"structure": ic}))
    assert len(posts(sim)) == 1 and len(sim.orders) == 1
    o = sim.orders[0]
    assert o.order_class == "mleg" and len(o.legs) == 4
    assert [(lg.symbol, lg.side) for lg in o.legs] == [(lg.symbol, lg.side) for lg in ic.legs]
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "filled" and reps[0].fills[0].qty == 2      # structures
    spot = spy.rows[I0 + 1][0]
    net = sum(option_price(lg.symbol, spot, spy.t[I0 + 1]) * (1 if lg.side == "buy" else -1) for lg in ic.legs)
    assert net < 0                                                         # a credit per share
    assert reps[0].fills[0].price == pytest.approx(-net * 100)            # USD per condor, received by the sell
    assert [f["symbol"] for f in reps[0].order.context["leg_fills"]] == [lg.symbol for lg in ic.legs]
    pos = {p.symbol: p.qty for p in broker.positions()}
    assert pos == {lg.symbol: Decimal(2) * (1 if lg.side == "buy" else -1) for lg in ic.legs}
    assert all(p.category == "option" for p in broker.positions())
    assert len(broker.positions(("SPY",))) == 4 and broker.positions(("AAPL",)) == []
    # the exit: close_position on each leg, no hand-built counter-order
    broker.submit(order("t1-ic-SPY-199903-close-buy-ic000001", side="buy", qty=2, intent="close", spy=spy,
                        i=I0 + 1, ctx={"structure": ic}))
    assert len(posts(sim)) == 1
    assert sorted(p for m, p in sim.calls if m == "DELETE") == sorted(f"/v2/positions/{lg.symbol}"
                                                                      for lg in ic.legs)
    assert bar(broker, spy, sim, I0 + 2)[0].status == "filled" and broker.positions() == []


def test_mleg_rejected_by_the_venue_leaves_no_position(broker, sim, spy):
    sim.faults.reject_next_mleg = "options buying power exceeded"
    broker.submit(order("t1-ic-SPY-199903-open-sell-ic000002", side="sell", qty=2, spy=spy,
                        ctx={"structure": _condor(spy, I0)}))
    reps = bar(broker, spy, sim, I0 + 1)
    assert reps[0].status == "rejected" and reps[0].fills == []
    assert broker.positions() == [] and sim.positions == {}
    assert all(lg.status == "rejected" and lg.filled_qty == 0 for lg in sim.orders[0].legs)


def test_pre_trade_check_refuses_a_multi_leg_structure_not_sent_as_mleg(broker, sim, spy):
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest, OptionLegRequest

    ic = _condor(spy, I0)
    leg = ic.legs[0]
    simple = MarketOrderRequest(symbol=leg.symbol, qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.DAY)
    with pytest.raises(AtsError, match="iron_condor on SPY has 4 legs .*not mleg"):
        check_multi_leg(ic, simple)
    three = MarketOrderRequest(qty=2, order_class=OrderClass.MLEG, time_in_force=TimeInForce.DAY,
                               legs=[OptionLegRequest(symbol=lg.symbol, side=OrderSide(lg.side), ratio_qty=1)
                                     for lg in ic.legs[:3]])
    with pytest.raises(AtsError, match="iron_condor"):
        check_multi_leg(ic, three)
    assert sim.order_calls() == []


def test_preflight_is_read_only_and_reports_the_account(broker, sim):
    f = broker.preflight()
    assert sim.order_calls() == [] and {m for m, _ in sim.calls} == {"GET"}
    assert (f.venue, f.endpoint_kind, f.account_status) == ("alpaca", "local", "active")
    assert f.equity_usd == Decimal(100000) and f.buying_power_usd == Decimal(200000)
    assert f.margin_multiplier == Decimal(2) and f.shorting_enabled is True
    assert f.checks["pattern_day_trader"] is True and f.checks["trading_blocked"] is False
    assert f.key_permissions == "trade" and f.position_mode == "one_way"


def test_preflight_refuses_a_blocked_small_pattern_day_trader(spy, waits):
    s = AlpacaSim([spy], KEY, SECRET, start_ms=spy.t[I0] + spy.tf_ms, cash_usd=20_000, pattern_day_trader=True,
                  trading_blocked=True, status="ACCOUNT_UPDATED").start()
    try:
        b = AlpacaBroker(KEY, SECRET, base_url=s.url, data_url=s.url, run_id="t1",
                         retry=RetryPolicy(sleep=waits.append))
        lines = venue_check_failures(b.preflight())
        assert s.order_calls() == []
    finally:
        s.stop()
    assert len(lines) == 3
    assert "ACCOUNT_UPDATED" in lines[0] and "trading_blocked" in lines[1] and "pattern day trader" in lines[2]


def test_preflight_passes_a_healthy_account(broker):
    assert venue_check_failures(broker.preflight()) == []


def test_venue_clock_and_closed_candles(broker, sim, spy):
    assert abs(broker.server_time_ms() - sim.now_ms()) < 5000
    now = sim.now_ms()
    got = broker.closed_candles("SPY", "1d", spy.t[I0 - 4], now)
    assert [c.open_time_ms for c in got] == spy.t[I0 - 4: I0 + 1]           # bar I0 just closed; I0+1 not
    assert got[-1].close == Decimal(str(spy.rows[I0][3])) and got[-1].volume == Decimal(str(spy.rows[I0][4]))
    with pytest.raises(AtsError, match="timeframe"):
        broker.closed_candles("SPY", "2d", 0, now)


def test_market_calendar_says_which_bars_are_due(broker, sim, spy):
    from datetime import datetime, timezone

    fri = next(t for t in spy.t[I0:] if datetime.fromtimestamp(t / 1000, tz=timezone.utc).weekday() == 4)
    assert broker.expects_bar("SPY", "1d", fri) is True
    assert broker.expects_bar("SPY", "1d", fri + 86_400_000) is False               # Saturday
    assert broker.expects_bar("SPY", "1d", spy.t[5000]) is True                    # another year: refetched
    assert sim.order_calls() == []


def test_restart_restores_pending_orders_without_a_second_order(broker, sim, spy, waits):
    cid = "t1-trend-SPY-199903-open-buy-rs000001"
    broker.submit(order(cid, spy=spy))
    saved = [Order.from_dict(o.to_dict()) for o in broker.pending()]
    lost = order("t1-trend-SPY-199903-open-buy-rs000002", spy=spy)     # checkpointed, never reached the venue
    fresh = AlpacaBroker(KEY, SECRET, base_url=sim.url, data_url=sim.url, run_id="t1",
                         retry=RetryPolicy(sleep=waits.append))
    fresh.restore(saved + [lost])
    assert sorted(o.client_order_id for o in sim.orders) == sorted([cid, lost.client_order_id])
    assert len(posts(sim)) == 2
    reps = bar(fresh, spy, sim, I0 + 1)
    assert sorted(r.status for r in reps) == ["filled", "filled"]


def test_planted_key_never_in_logs_or_exceptions(sim, spy, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    bad = AlpacaBroker(KEY, SECRET + "-wrong", base_url=sim.url, data_url=sim.url, run_id="t1",
                       retry=RetryPolicy(sleep=lambda s: None))
    texts = [repr(bad)]
    for call in (bad.preflight, bad.balance, bad.positions, lambda: bad.closed_candles("SPY", "1d", 0, 1)):
        with pytest.raises(AtsError) as ei:
            call()
        texts += [str(ei.value), "".join(traceback.format_exception(ei.value))]
    bad.submit(order("t1-trend-SPY-199903-open-buy-key00001", spy=spy))
    texts += [r.reject_reason or "" for r in bar(bad, spy, sim, I0 + 1)]
    assert any("401" in t for t in texts)
    blob = "\n".join(texts) + caplog.text
    assert SECRET not in blob and KEY not in blob
    env = tmp_path / "alpaca.env"
    env.write_text(f"ALPACA_API_KEY={KEY}\nALPACA_SECRET_KEY={SECRET}\n")
    env.chmod(0o644)
    old = {k: os.environ.pop(k, None) for k in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")}
    try:
        with pytest.raises(AtsError, match="mode 0644") as ei:
            load_keys(env)
        assert SECRET not in str(ei.value) and KEY not in str(ei.value)
        env.chmod(0o600)
        assert load_keys(env) == (KEY, SECRET)
    finally:
        os.environ.update({k: v for k, v in old.items() if v is not None})


def test_option_chain_and_quotes_through_alpaca_py(broker, sim, spy):
    from datetime import date, datetime, timezone

    from ats.execution.venue_sim.alpaca import option_quote

    now = datetime.fromtimestamp(sim.now_ms() / 1000, tz=timezone.utc).date()    # 1999-03 (bar I0's close)
    chain = broker.option_chain("SPY", now.isoformat(), date(now.year, now.month + 2, 28).isoformat(),
                                strike_gte=100, strike_lte=160)
    exps = sorted({c.expiry for c in chain})
    assert exps and all(date.fromisoformat(e).weekday() == 4 and 15 <= date.fromisoformat(e).day <= 21
                        for e in exps)                                         # monthly: third Fridays
    puts = [c.strike for c in chain if c.kind == "put" and c.expiry == exps[0]]
    assert puts == sorted(puts) and all(b - a == 1.0 for a, b in zip(puts, puts[1:])) and 100 <= puts[0]
    assert all(c.size == 100 and c.underlying == "SPY" for c in chain)
    assert ("GET", "/v2/options/contracts") in sim.calls
    ic = _condor(spy, I0)
    q = broker.option_quotes([lg.symbol for lg in ic.legs])
    spot = spy.rows[I0 + 1][0]                          # the session bar at the venue's now
    assert q == {lg.symbol: option_quote(lg.symbol, spot, sim.now_ms()) for lg in ic.legs}
    assert all(b < a for b, a in q.values())
    v = broker.structure_value(ic)
    mid = sum((q[lg.symbol][0] + q[lg.symbol][1]) / 2 * (1 if lg.side == "buy" else -1) for lg in ic.legs)
    assert v == pytest.approx(mid * 100) and v < 0     # a credit structure: closing it costs -v USD
    assert broker.option_quotes(["QQQ990416P00100000", "SPY990219P00120000"]) == {}   # unknown, expired
    assert sim.order_calls() == []                                           # read-only
