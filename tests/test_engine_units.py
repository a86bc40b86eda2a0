"""Engine building blocks on real candle slices read directly from ../shared/data: indicators against naive
loops, no look-ahead in any strategy or in the regime, regime rules on real BTC, Kelly sizing, risk limits,
circuit breakers, the paper broker, portfolio accounting, and the 0021 seeds equal to the Python defaults."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from _engine_helpers import raw_rows
from ats.execution import Order, PaperBroker, client_order_id
from ats.portfolio.book import Portfolio, Position
from ats.regime import CODE, classify, pauses
from ats.risk.breakers import BreakerBoard, realized_vol_annual_pct, velocity_pct
from ats.risk.limits import check_entry
from ats.risk.settings import DEFAULTS, SETTINGS
from ats.risk.sizing import estimate, kelly_fraction
from ats.strategies import REGISTRY, SEEDED, Bars, default_params
from ats.strategies import indicators as ind


@pytest.fixture(scope="module")
def eth(shared_data):
    return Bars.from_rows("ETHUSDT", "1h", raw_rows("ETH"))


@pytest.fixture(scope="module")
def btc(shared_data):
    return Bars.from_rows("BTCUSDT", "1h", raw_rows("BTC"))


# ---------------------------------------------------------------- indicators
def _naive_rsi(c, n):
    ag = al = 0.0
    out = [math.nan] * len(c)
    for i in range(1, len(c)):
        d = c[i] - c[i - 1]
        ag += (max(d, 0.0) - ag) / n
        al += (max(-d, 0.0) - al) / n
        if i >= n:
            out[i] = 100.0 if al == 0 else 100 - 100 / (1 + ag / al)
    return out


def test_indicators_match_naive_loops(eth):
    c = eth.close[:600].tolist()
    rsi = ind.rsi(np.array(c), 14)
    nr = _naive_rsi(c, 14)
    assert np.isnan(rsi[:14]).all()
    assert np.allclose(rsi[14:], nr[14:], rtol=0, atol=1e-9)
    e = ind.ema(np.array(c), 20)
    v = c[0]
    for i in range(1, len(c)):
        v = v + (c[i] - v) * 2 / 21
        if i >= 19:
            assert e[i] == pytest.approx(v, rel=1e-12)
    lo, mid, up = ind.bollinger(np.array(c), 20, 2.0)
    w = c[100:120]
    m = sum(w) / 20
    sd = math.sqrt(sum((x - m) ** 2 for x in w) / 20)
    assert mid[119] == pytest.approx(m, rel=1e-12) and lo[119] == pytest.approx(m - 2 * sd, rel=1e-9)
    dh = ind.donchian_high(eth.high[:600], 48)
    assert dh[300] == max(eth.high[252:300]) and np.isnan(dh[47])


def test_strategies_and_regime_have_no_lookahead(eth, btc):
    """Every per-bar output at i must equal the one computed on the series truncated after bar i."""
    reg_full = classify(btc.t, btc.close, 3600)
    for cut in (700, 2500, 4400):
        reg_cut = classify(btc.t[:cut], btc.close[:cut], 3600)
        assert (reg_cut.effective == reg_full.effective[:cut]).all()
        assert (reg_cut.confirmed == reg_full.confirmed[:cut]).all()
    reg = reg_full.effective[: len(eth)]
    for name, strat in REGISTRY.items():
        p = strat.default_params
        full = strat.prepare(eth, p, reg)
        for cut in (800, 2600, 4500):
            part = strat.prepare(eth.upto(cut), p, reg[:cut])
            for a in ("entry", "exit_long", "exit_short"):
                assert (getattr(part, a) == getattr(full, a)[:cut]).all(), (name, a, cut)
            assert np.allclose(part.strength, full.strength[:cut], equal_nan=True), name


def test_regime_rules_on_real_btc(btc):
    rs = classify(btc.t, btc.close, 3600)
    t = {int(x): i for i, x in enumerate(btc.t)}

    def at(iso):
        from datetime import datetime
        return t[int(datetime.fromisoformat(iso + "+00:00").timestamp())]

    i0 = at("2020-12-02T00:00")  # warm-up (240 h): neutral, not confirmed
    assert rs.effective[i0] == CODE["neutral"] and not rs.confirmed[i0]
    i1 = at("2021-01-05T12:00")  # the January rally
    assert rs.effective[i1] in (CODE["bull"], CODE["strong_bull"]) and rs.confirmed[i1]
    i2 = at("2021-05-19T14:00")  # the crash
    assert rs.effective[i2] == CODE["strong_bear"] and rs.confirmed[i2]
    assert pauses("long", int(rs.effective[i2]), True) and not pauses("short", int(rs.effective[i2]), True)
    # hysteresis: every change of the effective regime happens after the raw regime held 12 bars
    changes = np.nonzero(np.diff(rs.effective.astype(int)))[0] + 1
    assert len(changes) > 10
    for k in changes:
        assert (rs.raw[k - 11:k + 1] == rs.effective[k]).all()
        assert rs.bars_in_raw[k] >= 12


# ---------------------------------------------------------------- sizing and limits
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


# ---------------------------------------------------------------- breakers
def test_breaker_board_transitions():
    b = BreakerBoard()
    b.update_velocity(1000, "SOLUSDT", 9.0, 8.0, 60, 120)
    assert [s.breaker for s in b.blocking("SOLUSDT")] == ["velocity"] and not b.blocking("ETHUSDT")
    b.update_velocity(1000 + 3600, "SOLUSDT", 1.0, 8.0, 60, 120)  # calm but within the 120 min cool-off
    assert b.is_tripped("velocity", "SOLUSDT")
    b.update_velocity(1000 + 7200, "SOLUSDT", 1.0, 8.0, 60, 120)
    assert not b.is_tripped("velocity", "SOLUSDT")
    b.update_market_vol(5000, 160.0, 150.0, 0.8)
    b.update_market_vol(5100, 130.0, 150.0, 0.8)  # hysteresis: still tripped above 120
    assert b.is_tripped("market_volatility")
    b.update_market_vol(5200, 110.0, 150.0, 0.8)
    assert not b.is_tripped("market_volatility")
    for _ in range(6):
        b.record_trade(-1.0)
    b.update_consecutive_losses(6000, 6, 720)
    assert b.is_tripped("consecutive_losses")
    b.update_consecutive_losses(6000 + 720 * 60, 6, 720)
    assert not b.is_tripped("consecutive_losses") and b.loss_streak == 0
    b.update_daily_drawdown(7000, 9_650.0, 10_000.0, 3.0)
    b.update_manual(7000, True)
    assert [s.breaker for s in b.blocking("ETHUSDT")] == ["manual_stop", "daily_drawdown"]
    b.update_daily_drawdown(7100, 9_800.0, 9_650.0, 3.0)  # new UTC day: new reference
    b.update_manual(7100, False)
    assert not b.blocking("ETHUSDT")
    tr = b.drain()
    assert [(t.breaker, t.tripped) for t in tr] == [
        ("velocity", True), ("velocity", False), ("market_volatility", True), ("market_volatility", False),
        ("consecutive_losses", True), ("consecutive_losses", False), ("daily_drawdown", True), ("manual_stop", True),
        ("daily_drawdown", False), ("manual_stop", False)]
    assert all(t.cause for t in tr)
    again = BreakerBoard.from_dict(json.loads(json.dumps(b.to_dict())))
    assert again.to_dict() == b.to_dict()


def test_velocity_and_volatility_inputs(btc):
    v = velocity_pct(btc.high, btc.low, btc.close, 1)
    i = int(np.argmax(np.abs(v)))
    c, h, lo = btc.close[i], btc.high[i], btc.low[i]
    assert abs(v[i]) == pytest.approx(max((c / lo - 1) * 100, (1 - c / h) * 100))
    lr = np.diff(np.log(btc.close), prepend=np.nan)
    vol = realized_vol_annual_pct(lr, 12, 3600)
    assert vol[200] == pytest.approx(np.std(lr[189:201]) * math.sqrt(8760) * 100)


# ---------------------------------------------------------------- paper broker
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


def test_client_order_id_is_deterministic_and_distinct():
    a = client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy")
    assert a == client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy")
    others = {client_order_id("replay-2", "momentum", "BTCUSDT", 1610000000, "open", "buy"),
              client_order_id("replay-1", "momentum", "BTCUSDT", 1610003600, "open", "buy"),
              client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "add", "buy")}
    assert a not in others and len(others) == 3


# ---------------------------------------------------------------- accounting
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


# ---------------------------------------------------------------- seeds
def test_migration_seeds_equal_python_defaults(conn):
    rows = conn.execute("""SELECT strategy_name, watchlist_enabled, buy_enabled, sell_enabled, params, effective_from
                             FROM strategy_configurations WHERE account_id='default'""").fetchall()
    got = {r["strategy_name"]: r for r in rows}
    assert set(SEEDED) <= set(got)
    for n in SEEDED:
        r = got[n]
        assert r["params"] == default_params(n), n
        assert r["watchlist_enabled"] and r["buy_enabled"] and r["sell_enabled"]
        assert r["effective_from"].year == 1970
    vals = {r["key"]: r["value"] for r in conn.execute(
        "SELECT key, value FROM system_settings WHERE account_id='default'").fetchall()}
    for k in SETTINGS:
        assert vals[k] == DEFAULTS[k], k


def test_compiled_copy_formatters_equal_the_reference():
    from ats.engine.sink import _SPEC, RawJson, format_row, formatter

    kinds = _SPEC["position_evaluations"][1]
    rows = [(1, "run\t1", 1610000000, 30000.125, float("nan"), None, 2.5, 3, 60.0, "hold", "a\\b\nc",
             {"best_price": 1.5, "x": float("inf")}),
            (2, "r", 1610003600, 1e-12, -0.0, 1, None, None, 0, "exit_tp", None, RawJson('{"best_price":2.0}'))]
    f = formatter(kinds)
    assert f(rows[0]) == format_row(rows[0], kinds)
    assert f(rows[0]).split("\t")[1] == "run\\t1" and "\\N" in f(rows[0]) and '"x":null' in f(rows[0])
    assert f(rows[1]).endswith('\t{"best_price":2.0}')


def test_risk_stop_resume_seed_and_strategies_cli(fresh_db_url):
    import psycopg
    from psycopg.rows import dict_row

    from conftest import run_cli

    env = {"ATS_DATABASE_URL": fresh_db_url}
    assert run_cli("risk", "stop", "--reason", "test", env=env).returncode == 0
    doc = json.loads(run_cli("risk", "breakers", "--json", env=env).stdout)
    assert doc["manual_stop"] is True and doc["run_id"] is None
    assert run_cli("risk", "resume", env=env).returncode == 0
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        ev = [r["event_type"] for r in c.execute(
            "SELECT event_type FROM system_events WHERE component='risk' ORDER BY event_id").fetchall()]
        assert ev == ["manual_stop_set", "manual_stop_cleared"]
        hist = c.execute("SELECT value FROM system_settings_history WHERE key='breaker.manual_stop' "
                         "ORDER BY history_id").fetchall()
        assert [h["value"] for h in hist] == [False, True, False]  # seed, stop, resume: effective-dated history
        c.execute("INSERT INTO accounts (account_id) VALUES ('acct2')")
        c.commit()
    out = run_cli("engine", "seed", "--account", "acct2", env=env)
    assert out.returncode == 0 and "seeded 7 strategy configuration(s)" in out.stdout
    assert "seeded 0 strategy" in run_cli("engine", "seed", "--account", "acct2", env=env).stdout
    st = json.loads(run_cli("risk", "settings", "--account", "acct2", "--json", env=env).stdout)
    assert st == DEFAULTS
    reg = json.loads(run_cli("engine", "strategies", "--json", env=env).stdout)
    assert set(reg) == set(REGISTRY) and all(v["rules"] and v["defaults"] for v in reg.values())
    assert [n for n, v in reg.items() if not v["seeded"]] == ["sma_cross"]
