"""A bad tick is not a split (issue 11 item 2): one corrupted field of one real bar is a ``bad_tick`` naming it.

The data are the real files of ../shared/data with exactly one field (or the open and the high together, as a
feed that derives the high from a bad open would print it) of one bar replaced; everything else is unchanged.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.market_data.anomalies import detect_anomalies, find_anomalies, list_anomalies
from ats.market_data.loaders import load_file

from _market_data_helpers import md_url  # noqa: F401

UTC = timezone.utc


def _corrupt_csv(src, dst, day: str, edit) -> dict:
    """Copy an equity CSV, applying ``edit(row, prev_row)`` to the row of ``day``; returns the edited row."""
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    k = next(n for n, r in enumerate(rows) if r["timestamp"] == day)
    edit(rows[k], rows[k - 1])
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows[k]


def _db(md_url):
    return psycopg.connect(md_url, row_factory=dict_row)


@pytest.fixture(scope="module")
def aapl_bad_open(md_url, shared_data, tmp_path_factory):
    """Real AAPL with 2019-03-12's open set to twice the previous close and its high to that open (low and close
    untouched), plus the real SPY as reference, scanned once."""
    d = tmp_path_factory.mktemp("aapl")

    def edit(row, prev):
        row["open"] = row["high"] = f"{2 * float(prev['close']):.4f}"

    edit_row = _corrupt_csv(shared_data / "equities/AAPL_1d.csv", d / "AAPL_1d.csv", "2019-03-12", edit)
    with _db(md_url) as c:
        load_file(c, d / "AAPL_1d.csv")
        load_file(c, shared_data / "equities/SPY_1d.csv")
        detect_anomalies(c, symbols=["AAPL", "SPY"], as_of="2021-04-01T00:00:00Z")
    return edit_row


def _on(rows, day):
    return [a for a in rows if a["open_time"].date().isoformat() == day]


def test_bad_open_is_a_bad_tick_not_a_reverse_split(md_url, aapl_bad_open):
    with _db(md_url) as c:
        rows = list_anomalies(c, symbol="AAPL")
        day = _on(rows, "2019-03-12")
        assert [a["kind"] for a in day] == ["bad_tick"], day
        d = day[0]["detail"]
        assert d["fields"] == ["open", "high"]
        assert d["values"]["open"] == pytest.approx(float(aapl_bad_open["open"]))
        assert d["move"]["open"] == pytest.approx(1.0, abs=0.05)  # about +100 % against the nearer neighbour
        assert d["prev_close"] == pytest.approx(178.90) and d["next_open"] == pytest.approx(182.29)
        # the real splits stay splits (no 1:2 reverse split appears), the next day is quiet
        splits = {a["open_time"].date().isoformat(): a["detail"]["clean_ratio"]
                  for a in rows if a["kind"] == "split"}
        assert splits == {"2000-06-21": "2:1", "2005-02-28": "2:1", "2014-06-09": "7:1", "2020-08-31": "4:1"}
        assert _on(rows, "2019-03-13") == []
        # every new anomaly is an event, the bad tick included
        ev = c.execute("SELECT ts, payload FROM system_events WHERE event_type = 'feed_anomaly' AND symbol = 'AAPL' "
                       "AND payload->>'kind' = 'bad_tick' AND payload->>'open_time' = '2019-03-12T00:00:00Z'"
                       ).fetchall()
        assert len(ev) == 1 and ev[0]["ts"] == datetime(2019, 3, 13, tzinfo=UTC)
        assert ev[0]["payload"]["detail"]["fields"] == ["open", "high"]


def test_real_crash_stays_a_spike_and_real_split_bars_keep_their_kind(md_url, aapl_bad_open):
    with _db(md_url) as c:
        rows = list_anomalies(c, symbol="AAPL")
    crash = _on(rows, "2000-09-29")
    assert [a["kind"] for a in crash] == ["spike"] and crash[0]["detail"]["return"] < -0.5
    for day, ratio in (("2014-06-09", 7), ("2020-08-31", 4)):
        split = _on(rows, day)
        assert [a["kind"] for a in split] == ["split"]
        assert split[0]["detail"]["persisted_bars"] == 2
        assert split[0]["detail"]["volume_ratio"] > 0.8 * ratio  # volume jumps by about the inverse ratio


def test_real_bad_low_print_in_the_file_is_a_bad_tick(md_url, aapl_bad_open):
    # the unmodified file has one: 2009-09-21 low 10.59 between a close of 185.02 and an open of 185.10
    with _db(md_url) as c:
        day = _on(list_anomalies(c, symbol="AAPL"), "2009-09-21")
    assert [a["kind"] for a in day] == ["bad_tick"] and day[0]["detail"]["fields"] == ["low"]
    assert day[0]["detail"]["move"]["low"] < -0.9


@pytest.mark.parametrize("field,factor,hour", [("close", 1.25, "2021-03-10T09:00"), ("low", 0.7, "2021-06-02T15:00"),
                                                ("high", 1.3, "2021-01-27T04:00")])
def test_one_corrupted_field_of_a_binance_1h_bar(md_url, shared_data, tmp_path, field, factor, hour):
    rows = json.loads((shared_data / "binance/ETH_USDT-1h.json").read_text())
    t = int(datetime.fromisoformat(hour).replace(tzinfo=UTC).timestamp() * 1000)
    k = next(n for n, r in enumerate(rows) if r[0] == t)
    col = {"open": 1, "high": 2, "low": 3, "close": 4}[field]
    rows[k][col] = round(rows[k][col] * factor, 2)
    if field == "close":  # keep the bar consistent (high >= close), as a feed that prints a bad close does
        rows[k][2] = max(rows[k][2], rows[k][4])
    src = tmp_path / "ETH_USDT-1h.json"
    src.write_text(json.dumps(rows))
    with _db(md_url) as c:
        c.execute("DELETE FROM candles WHERE symbol = 'ETHUSDT'")
        c.commit()
        load_file(c, src)
        load_file(c, shared_data / "binance/BTC_USDT-1h.json")
        found = find_anomalies(c, symbols=["ETHUSDT"], timeframes=["1h"], as_of="2021-07-18",
                               kinds=["bad_tick", "split", "spike"])
        c.rollback()
    at = [a for a in found if a["open_time"] == datetime.fromisoformat(hour).replace(tzinfo=UTC)]
    assert [a["kind"] for a in at] == ["bad_tick"], at
    fields = at[0]["detail"]["fields"]
    assert field in fields and set(fields) <= {field, "high"}
    assert at[0]["detail"]["values"][field] == pytest.approx(rows[k][col])
    assert at[0]["detail"]["reference"] == "BTCUSDT"
    # the bar after a bad close is not a reverting "spike", and nothing else in the file is a bad tick
    nxt = [a for a in found if a["open_time"] == datetime.fromisoformat(hour).replace(tzinfo=UTC).replace(
        hour=datetime.fromisoformat(hour).hour + 1)]
    assert nxt == []
    assert [a["open_time"] for a in found if a["kind"] == "bad_tick"] == [at[0]["open_time"]]


def test_the_engines_feed_anomaly_breaker_sees_the_bad_tick(md_url, aapl_bad_open):
    """The engine reads every anomaly kind (ats.engine.core.load_anomalies, no kind filter) and the feed-anomaly
    breaker trips on any of them: a bad tick halts new entries like a spike, because the price is doubtful."""
    from ats.engine.core import load_anomalies
    from ats.engine.runs import RunSpec

    start, end = datetime(2019, 3, 1, tzinfo=UTC), datetime(2019, 3, 31, tzinfo=UTC)
    spec = RunSpec(mode="replay", strategies=("sma_cross",), symbols=("AAPL",), timeframe="1d",
                   start=int(start.timestamp()), end=int(end.timestamp()))
    with _db(md_url) as c:
        rows, source = load_anomalies(c, spec, "1d")
    bad = [a for a in rows if a["kind"] == "bad_tick"]
    assert source == "anomalies_between" and [a["open_time"].date().isoformat() for a in bad] == ["2019-03-12"]
    # a replay through the engine over that month trips the feed-anomaly breaker for AAPL on the bad tick
    from _engine_helpers import memory_run

    with _db(md_url) as c:
        eng, sink = memory_run(c, ["momentum"], ["AAPL"], "2019-03-01", "2019-03-31", timeframe="1d")
    trips = [r for r in sink.rows["system_events"] if r[3] == "breaker_tripped" and r[5] == "AAPL"
             and (r[6] if isinstance(r[6], dict) else json.loads(r[6])).get("breaker") == "feed_anomaly"]
    assert trips, "the bad tick did not trip the feed-anomaly breaker"
    assert "bad_tick" in json.dumps(trips[0][6] if isinstance(trips[0][6], dict) else json.loads(trips[0][6]))
