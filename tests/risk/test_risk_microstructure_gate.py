"""The microstructure entry gate (ats.risk.microstructure_gate): conditions evaluated AS OF the decision bar on
data loaded through the pybit-shaped loaders, a failed condition blocked with its values, missing data blocked as
microstructure:no_data, and in a real replay: the blocked_signals rows, the values in the audit context, and one
load per run and symbol."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from _engine_helpers import connect, engine_db, engine_template, memory_run, raw_by_time  # noqa: F401
from ats.market_data import microstructure as ms
from ats.risk.microstructure_gate import MicroData, evaluate

H = 3600
T0 = int(datetime(2021, 1, 1, tzinfo=timezone.utc).timestamp())


def funding_payload(symbol: str, rates: dict[int, str]) -> dict:
    """get_funding_rate_history's response (newest first) for {funding time (Unix s): rate text}."""
    rows = [{"symbol": symbol, "fundingRate": r, "fundingRateTimestamp": str(t * 1000)}
            for t, r in sorted(rates.items(), reverse=True)]
    return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows}, "retExtInfo": {}}


def oi_payload(symbol: str, values: dict[int, str]) -> dict:
    rows = [{"openInterest": v, "timestamp": str(t * 1000)} for t, v in sorted(values.items(), reverse=True)]
    return {"retCode": 0, "retMsg": "OK", "result": {"symbol": symbol, "category": "linear", "list": rows,
                                                     "nextPageCursor": ""}}


@pytest.fixture
def db(fresh_db_url):
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    yield c
    c.close()


def test_funding_floor_as_of_the_bar_with_values_and_no_data(db):
    ms.load_payload(db, "funding", funding_payload("ETHUSDT", {T0: "0.0001", T0 + 8 * H: "-0.00025",
                                                               T0 + 16 * H: "0.0003"}))
    md = MicroData(db)
    p = {"funding_min_bps": -1.0}
    # 09:00: the 08:00 rate (-2.5 bps) is the last settled one -> below the floor, values in the detail
    which, reason, d = evaluate(md, ("funding_floor",), p, "ETHUSDT", T0 + 9 * H)
    assert which == "funding_floor" and reason.startswith("microstructure:funding_floor:")
    assert d["funding_floor"] == {"funding_bps": -2.5, "funding_ts": "2021-01-01 08:00", "threshold_bps": -1.0}
    # 15:59 still sees 08:00 (no look-ahead to the 16:00 row); 16:00 sees +3 bps and passes
    assert evaluate(md, ("funding_floor",), p, "ETHUSDT", T0 + 16 * H - 60)[0] == "funding_floor"
    which, _, d = evaluate(md, ("funding_floor",), p, "ETHUSDT", T0 + 16 * H)
    assert which is None and d["funding_floor"]["funding_bps"] == 3.0
    # 07:59 sees 00:00 (+1 bp) and passes; the cap condition for longs blocks above its cap
    assert evaluate(md, ("funding_floor",), p, "ETHUSDT", T0 + 8 * H - 60)[0] is None
    assert evaluate(md, ("funding_cap",), {"funding_max_bps": 2.0}, "ETHUSDT", T0 + 17 * H)[0] == "funding_cap"
    # before the first row, 9 h after the last one, another symbol: no data -> blocked, never a silent pass
    for sym, C in (("ETHUSDT", T0 - H), ("ETHUSDT", T0 + 25 * H + 1), ("SOLUSDT", T0 + 9 * H)):
        which, reason, d = evaluate(md, ("funding_floor",), p, sym, C)
        assert which == "no_data" and reason.startswith("microstructure:no_data:") and sym in reason
    # a null threshold switches the condition off; an unknown condition is refused
    assert evaluate(md, ("funding_floor",), {"funding_min_bps": None}, "SOLUSDT", T0)[0] is None
    with pytest.raises(ValueError, match="unknown condition 'funding_flor'"):
        evaluate(md, ("funding_flor",), p, "ETHUSDT", T0)
    assert md.queries == 2  # one load per (kind, symbol), whatever the number of questions


def test_open_interest_rising_with_price(db):
    ms.load_payload(db, "oi", oi_payload("SOLUSDT", {T0 + k * H: str(1000 + 10 * k) for k in range(30)}),
                    period="1h")
    md = MicroData(db)
    p = {"oi_rise_min_pct": 2.0, "oi_lookback_hours": 24}
    C = T0 + 26 * H
    which, _, d = evaluate(md, ("oi_rising_with_price",), p, "SOLUSDT", C, 110.0, lambda ts: 100.0)
    oi = d["oi_rising_with_price"]
    assert which is None and oi["oi_now"] == 1260.0 and oi["oi_then"] == 1020.0
    assert oi["oi_change_pct"] == pytest.approx((1260 / 1020 - 1) * 100, abs=1e-6)
    assert oi["price_change_pct"] == pytest.approx(10.0)
    # OI up but price down: blocked with the values
    which, reason, d = evaluate(md, ("oi_rising_with_price",), p, "SOLUSDT", C, 95.0, lambda ts: 100.0)
    assert which == "oi_rising_with_price" and "price -5%" in reason
    # OI up less than the minimum
    which, _, _ = evaluate(md, ("oi_rising_with_price",), {**p, "oi_rise_min_pct": 30.0}, "SOLUSDT", C, 110.0,
                           lambda ts: 100.0)
    assert which == "oi_rising_with_price"
    # no OI point 24 h before the first one: no data
    assert evaluate(md, ("oi_rising_with_price",), p, "SOLUSDT", T0 + 5 * H, 110.0, lambda ts: 100.0)[0] == "no_data"


def test_replay_blocks_with_values_and_no_data(engine_db):
    """momentum_short on real ETH and SOL candles, funding loaded for ETH only: ETH signals blocked by the funding
    floor carry the rate; SOL signals are blocked as no_data; ETH signals with a rate above the floor pass."""
    start, end = datetime(2021, 1, 20, tzinfo=timezone.utc), datetime(2021, 3, 1, tzinfo=timezone.utc)
    t0, t1 = int(start.timestamp()), int(end.timestamp())
    rates = {t: ("-0.0003" if (t // (8 * H)) % 3 == 0 else "0.0001") for t in range(t0 - 8 * H, t1, 8 * H)}
    with connect(engine_db) as c:
        ms.load_payload(c, "funding", funding_payload("ETHUSDT", rates))
        eng, sink = memory_run(c, ["momentum_short"], ["ETHUSDT", "SOLUSDT"], "2021-01-20", "2021-03-01")
    assert eng.micro.queries == 2  # ETH and SOL funding, each read once for the whole run
    sig = {r[0]: r for r in sink.rows["signals"]}
    blocked = [r for r in sink.rows["blocked_signals"] if r[5] and r[6] == "microstructure"]
    eth = [r for r in blocked if r[4] == "ETHUSDT"]
    sol = [r for r in blocked if r[4] == "SOLUSDT"]
    assert eth and sol
    assert all(r[7].startswith("microstructure:no_data:") and r[8]["microstructure"]["condition"] == "no_data"
               for r in sol)
    assert not any(r[4] == "SOLUSDT" and r[13] == "accepted" for r in sig.values())
    for r in eth:  # the rate quoted is the one settled last before the decision, and it is below the floor
        ts = r[5]
        f = r[8]["microstructure"]["funding_floor"]
        last = max(t for t in rates if t <= ts)
        assert f["funding_bps"] == pytest.approx(float(rates[last]) * 1e4) and f["funding_bps"] < -1.0
        assert f["funding_ts"] == datetime.fromtimestamp(last, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    passed = [r for r in sig.values() if r[4] == "ETHUSDT" and "microstructure" in r[14]
              and r[14]["microstructure"]["funding_floor"]["funding_bps"] >= -1.0]
    assert passed and all(r[14]["microstructure"]["funding_floor"]["funding_bps"] == pytest.approx(1.0) for r in passed)
    assert any(r[13] == "accepted" for r in passed)
    # blocked later (breakers, risk limits) after passing the gate: the values seen are kept in the context
    later = [r for r in sink.rows["blocked_signals"] if r[6] != "microstructure" and "microstructure" in r[8]]
    assert all(r[8]["microstructure"]["funding_floor"]["funding_bps"] >= -1.0 for r in later)
