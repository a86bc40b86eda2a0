"""Live backfill (issue 3): Bybit paging and incremental start, retries, all-or-nothing writes, Alpaca, CLI.

Only the vendor client methods are replaced (pybit ``HTTP.get_kline``, alpaca-py ``get_stock_bars``); they
return payloads shaped exactly as those libraries return them.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from ats.cli import main as ats_main
from ats.db import config_store as cs
from ats.errors import AtsError
from ats.market_data.backfill import backfill, backfill_watchlist
from ats.market_data.loaders import load_file
from ats.market_data.store import read_candles

from _market_data_helpers import bybit_kline_response, db_fingerprint, md_conn, md_url, ms  # noqa: F401

UTC = timezone.utc
H = 3600_000


class FakeBybit:
    """Serves candles like Bybit's GET /v5/market/kline: rows with start <= t <= end, the newest ``limit`` of
    them, newest first, every value a string. ``fail`` = list of exceptions raised by successive calls."""

    def __init__(self, candles: dict[int, tuple], fail=None):
        self.candles = candles
        self.calls: list[dict] = []
        self.fail = list(fail or [])

    def __call__(self, http_self, **kw):
        self.calls.append(kw)
        if self.fail:
            exc = self.fail.pop(0)
            if exc is not None:
                raise exc
        ts = sorted(t for t in self.candles if kw["start"] <= t <= kw["end"])[-kw.get("limit", 200):]
        return bybit_kline_response(kw["symbol"], [(t, *self.candles[t]) for t in ts], category=kw["category"])


def real_btc_candles(shared_data, start: str, end: str) -> dict[int, tuple]:
    """The real Binance BTC 1h candles in [start, end) as Bybit would send them (strings), gaps included."""
    rows = json.loads((shared_data / "binance" / "BTC_USDT-1h.json").read_text())
    lo, hi = ms(start), ms(end)
    return {r[0]: tuple(repr(float(x)) for x in r[1:6]) for r in rows if lo <= r[0] < hi}


@pytest.fixture
def fake_bybit(monkeypatch):
    from pybit.unified_trading import HTTP

    def install(candles, fail=None):
        fake = FakeBybit(candles, fail)
        monkeypatch.setattr(HTTP, "get_kline", lambda self, **kw: fake(self, **kw))
        return fake
    return install


def test_bybit_paging_stores_every_candle_and_invents_none(md_conn, shared_data, fake_bybit):
    candles = real_btc_candles(shared_data, "2021-01-01", "2021-04-01")  # 2160 hours minus 2 outage hours
    fake = fake_bybit(candles)
    res = backfill(md_conn, "BTCUSDT", "1h", "2021-01-01", "2021-04-01", source="bybit")
    assert (res.pages, res.rows_fetched, res.rows_inserted) == (3, 2158, 2158)
    assert [c["start"] for c in fake.calls] == [ms("2021-01-01T00:00"), ms("2021-01-01T00:00") + 1000 * H,
                                                 ms("2021-01-01T00:00") + 2000 * H]
    assert [c["end"] for c in fake.calls] == [ms("2021-01-01T00:00") + 1000 * H - 1,
                                               ms("2021-01-01T00:00") + 2000 * H - 1, ms("2021-04-01T00:00") - 1]
    assert {(c["category"], c["interval"], c["limit"], c["symbol"]) for c in fake.calls} == {("spot", "60", 1000, "BTCUSDT")}
    df = read_candles(md_conn, "BTCUSDT", "1h", "2021-01-01", "2021-04-01", source="bybit")
    assert len(df) == 2158
    assert datetime(2021, 2, 11, 4, tzinfo=UTC) not in df.index  # the real outage stays a gap
    assert df.loc[datetime(2021, 1, 1, tzinfo=UTC), "open"] == float(candles[ms("2021-01-01T00:00")][0])


def test_incremental_start_after_last_stored_candle(md_conn, shared_data, fake_bybit):
    load_file(md_conn, shared_data / "binance" / "ETH_USDT-1h.json")  # ends 2021-07-17 20:00
    t0 = ms("2021-07-17T21:00")
    fake = fake_bybit({t0 + i * H: ("1900", "1910", "1890", "1905", "10") for i in range(60)})
    now = datetime(2021, 7, 18, 3, 30, tzinfo=UTC)
    res = backfill(md_conn, "ETHUSDT", "1h", source="bybit", now=now)
    assert fake.calls[0]["start"] == t0  # right after the last stored candle
    assert fake.calls[0]["end"] == ms("2021-07-18T03:00") - 1  # the forming 03:00 candle is not asked for
    assert (res.rows_inserted, res.start, res.end) == (6, datetime(2021, 7, 17, 21, tzinfo=UTC),
                                                       datetime(2021, 7, 18, 3, tzinfo=UTC))
    again = backfill(md_conn, "ETHUSDT", "1h", source="bybit", now=now)
    assert (again.pages, again.rows_inserted) == (0, 0) and len(fake.calls) == 1
    later = backfill(md_conn, "ETHUSDT", "1h", source="bybit", now=now + timedelta(hours=2))
    assert fake.calls[-1]["start"] == ms("2021-07-18T03:00") and later.rows_inserted == 2
    ev = md_conn.execute("SELECT payload FROM system_events WHERE event_type='backfill' AND symbol='ETHUSDT' "
                         "ORDER BY event_id").fetchall()
    assert [e["payload"]["rows_inserted"] for e in ev] == [6, 2]


def test_network_errors_retry_with_backoff(md_conn, fake_bybit):
    t0 = ms("2022-01-01T00:00")
    fake = fake_bybit({t0 + i * H: ("10", "11", "9", "10.5", "1") for i in range(5)},
                      fail=[requests.exceptions.ConnectionError("connection reset"),
                            requests.exceptions.ReadTimeout("read timed out")])
    sleeps = []
    res = backfill(md_conn, "RTYUSDT", "1h", "2022-01-01", "2022-01-01T05:00", sleep=sleeps.append)
    assert res.rows_inserted == 5 and sleeps == [1.0, 2.0] and len(fake.calls) == 3


def test_failed_page_writes_nothing(md_conn, fake_bybit):
    from pybit.exceptions import InvalidRequestError

    t0 = ms("2022-01-01T00:00")
    candles = {t0 + i * H: ("10", "11", "9", "10.5", "1") for i in range(1500)}
    # page 1 succeeds, page 2 keeps failing: nothing from page 1 may be committed
    fake_bybit(candles, fail=[None] + [requests.exceptions.ConnectionError("Max retries exceeded")] * 10)
    before = db_fingerprint(md_conn)
    with pytest.raises(AtsError, match=r"bybit get_kline spot FAILUSDT 1h page 2 .* failed after 3 attempts: "
                                       r"ConnectionError: Max retries exceeded; nothing was written") as exc:
        backfill(md_conn, "FAILUSDT", "1h", "2022-01-01", "2022-03-05", retries=2, sleep=lambda s: None)
    assert "\n" not in str(exc.value)
    assert db_fingerprint(md_conn) == before
    # a refusal by Bybit (bad symbol) is not retried
    err = InvalidRequestError(request="GET /v5/market/kline", message="Not supported symbols", status_code=10001,
                              time="12:00:00", resp_headers={})
    fake = fake_bybit(candles, fail=[err])
    with pytest.raises(AtsError, match="refused: InvalidRequestError: Not supported symbols"):
        backfill(md_conn, "NOPEUSDT", "1h", "2022-01-01", "2022-01-02", sleep=lambda s: None)
    assert len(fake.calls) == 1
    assert db_fingerprint(md_conn) == before


def test_watchlist_backfill_uses_setting_and_defaults(md_conn, fake_bybit):
    t0 = ms("2022-02-01T00:00")
    fake = fake_bybit({t0 + i * 4 * H: ("5", "6", "4", "5.5", "1") for i in range(6)})  # on the 4h grid
    results, errors = backfill_watchlist(md_conn, start="2022-02-01", end="2022-02-02")
    assert errors == [] and [r.symbol for r in results][:2] == ["BTCUSDT", "ETHUSDT"] and len(results) == 9
    cs.set_setting(md_conn, "watchlist", ["SOLUSDT", {"symbol": "ADAUSDT", "timeframe": "4h"}])
    md_conn.commit()
    fake.calls.clear()
    results, errors = backfill_watchlist(md_conn, start="2022-02-01", end="2022-02-02")
    assert errors == []
    assert [(r.symbol, r.timeframe, r.source) for r in results] == [("SOLUSDT", "1h", "bybit"),
                                                                     ("ADAUSDT", "4h", "bybit")]
    assert [c["interval"] for c in fake.calls] == ["60", "240"]


# ------------------------------------------------------------------------------------------- Alpaca

def test_alpaca_stock_backfill_needs_keys(md_conn, monkeypatch):
    for k in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(AtsError, match="alpaca: set ALPACA_API_KEY and ALPACA_SECRET_KEY") as exc:
        backfill(md_conn, "SPY", "1d", "2021-04-01", "2021-04-03", source="alpaca")
    assert "\n" not in str(exc.value)


def test_alpaca_stock_backfill_incremental(md_conn, shared_data, monkeypatch):
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.models import BarSet

    monkeypatch.setenv("ALPACA_API_KEY", "test-key")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "test-secret")
    load_file(md_conn, shared_data / "equities" / "SPY_1d.csv")  # ends 2021-03-31
    requests_seen = []

    def get_stock_bars(self, request_params):
        requests_seen.append(request_params)
        # Alpaca stamps daily bars at US/Eastern midnight; 2021-04-02 was Good Friday (no bar)
        return BarSet({"SPY": [
            {"t": "2021-04-01T04:00:00Z", "o": 398.4, "h": 400.67, "l": 398.18, "c": 400.61, "v": 99682870,
             "n": 519311, "vw": 399.9},
            {"t": "2021-04-05T04:00:00Z", "o": 403.46, "h": 406.94, "l": 403.38, "c": 406.36, "v": 91684764,
             "n": 478123, "vw": 405.6}]})

    monkeypatch.setattr(StockHistoricalDataClient, "get_stock_bars", get_stock_bars)
    res = backfill(md_conn, "SPY", "1d", source="alpaca", now=datetime(2021, 4, 6, 15, tzinfo=UTC))
    req = requests_seen[0]
    # alpaca-py turns aware datetimes into naive UTC
    assert req.start == datetime(2021, 4, 1) and req.end == datetime(2021, 4, 6)
    assert req.symbol_or_symbols == "SPY" and str(req.timeframe) == "1Day"
    assert (res.source, res.rows_inserted) == ("alpaca", 2)
    df = read_candles(md_conn, "SPY", "1d", "2021-03-31")
    assert list(df.index.date.astype(str)) == ["2021-03-31", "2021-04-01", "2021-04-05"]


def test_alpaca_network_failure_is_one_clear_line(md_conn, monkeypatch):
    from alpaca.data.historical import CryptoHistoricalDataClient

    def boom(self, request_params, feed=None):
        raise requests.exceptions.ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(CryptoHistoricalDataClient, "get_crypto_bars", boom)
    with pytest.raises(AtsError, match=r"alpaca bars BTC/USD 1h .* failed after 2 attempts: ConnectionError"):
        backfill(md_conn, "BTC/USD", "1h", "2022-01-01", "2022-01-02", source="alpaca", retries=1,
                 sleep=lambda s: None)


# ------------------------------------------------------------------------------------------- CLI (in-process)

def test_cli_backfill_and_errors(fresh_db_url, fake_bybit, capsys):
    t0 = ms("2022-03-01T00:00")
    fake_bybit({t0 + i * H: ("20", "21", "19", "20.5", "3") for i in range(48)})
    rc = ats_main(["data", "backfill", "--symbol", "BTCUSDT", "--timeframe", "1h", "--source", "bybit",
                   "--start", "2022-03-01", "--end", "2022-03-03"])
    out = capsys.readouterr()
    assert rc == 0 and "BTCUSDT 1h from bybit" in out.out and "48 new" in out.out
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        assert c.execute("SELECT count(*) AS n FROM candles WHERE source='bybit'").fetchone()["n"] == 48
    assert ats_main(["data", "backfill", "--timeframe", "1h"]) == 2
    assert "give --symbol" in capsys.readouterr().err


def test_cli_backfill_loop_is_incremental(fresh_db_url, fake_bybit, monkeypatch, capsys):
    import ats.market_data.backfill as bf
    import ats.market_data.cli as data_cli

    t0 = ms("2022-04-01T00:00")
    fake = fake_bybit({t0 + i * H: ("30", "31", "29", "30.5", "2") for i in range(10)})
    clock = iter([datetime(2022, 4, 1, 5, tzinfo=UTC), datetime(2022, 4, 1, 9, tzinfo=UTC)])
    monkeypatch.setattr(bf, "utcnow", lambda: next(clock))
    rounds = []

    def fake_sleep(seconds):
        rounds.append(seconds)
        if len(rounds) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(data_cli.time, "sleep", fake_sleep)
    rc = ats_main(["data", "backfill", "--symbol", "LOOPUSDT", "--start", "2022-04-01", "--end", "2022-04-01T05:00",
                   "--loop"])
    assert rc == 2  # --loop is incremental only
    rc = ats_main(["data", "backfill", "--symbol", "LOOPUSDT", "--timeframe", "1h", "--loop", "--interval", "60"])
    out = capsys.readouterr().out
    assert rc == 130 and rounds == [60.0, 60.0]
    # first round: DEFAULT_LOOKBACK_BARS back from 05:00; second round starts after the last stored candle (04:00)
    assert fake.calls[-1]["start"] == ms("2022-04-01T05:00") and fake.calls[-1]["end"] == ms("2022-04-01T09:00") - 1
    assert "5 new" in out and "4 new" in out


def test_backfill_commits_its_own_transaction(md_url, fake_bybit):
    t0 = ms("2022-05-01T00:00")
    fake_bybit({t0 + i * H: ("7", "8", "6", "7.5", "1") for i in range(3)})
    c = psycopg.connect(md_url)
    res = backfill(c, "OWNUSDT", "1h", end="2022-05-01T03:00")  # incremental: reads the store first
    assert res.rows_inserted == 3
    c.close()  # no commit by the caller: backfill owned the transaction and committed it
    with psycopg.connect(md_url) as c2:
        assert c2.execute("SELECT count(*) FROM candles WHERE symbol='OWNUSDT'").fetchone()[0] == 3
