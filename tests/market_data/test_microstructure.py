"""Microstructure loaders (issue 17): pybit-shaped payloads, malformed ones refused by row, nothing partial,
and a backfill through pybit pointed at a local server speaking Bybit v5's shapes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from ats.errors import AtsError
from ats.market_data import microstructure as ms

T0 = 1621382400000  # 2021-05-19 00:00 UTC


def resp(result):
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": T0}


OI = resp({"symbol": "BTCUSDT", "category": "linear", "list": [
    {"openInterest": "52931.63700000", "timestamp": str(T0 + 3600000)},
    {"openInterest": "51211.10400000", "timestamp": str(T0)}], "nextPageCursor": ""})
FUNDING = resp({"category": "linear", "list": [
    {"symbol": "BTCUSDT", "fundingRate": "-0.00057318", "fundingRateTimestamp": str(T0 + 8 * 3600000)},
    {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": str(T0)}]})
LS = resp({"list": [{"symbol": "BTCUSDT", "buyRatio": "0.4512", "sellRatio": "0.5488", "timestamp": str(T0)}],
           "nextPageCursor": ""})
TRADES = resp({"category": "linear", "list": [
    {"execId": "a", "symbol": "BTCUSDT", "price": "36512.5", "size": "0.250", "side": "Buy", "time": str(T0 + 10),
     "isBlockTrade": False},
    {"execId": "b", "symbol": "BTCUSDT", "price": "36510.0", "size": "1.000", "side": "Sell", "time": str(T0 + 20),
     "isBlockTrade": False},
    {"execId": "c", "symbol": "BTCUSDT", "price": "36400.0", "size": "0.500", "side": "Buy",
     "time": str(T0 + 3600000 + 5), "isBlockTrade": False}]})


@pytest.fixture
def db(fresh_db_url):
    c = psycopg.connect(fresh_db_url, row_factory=dict_row)
    yield c
    c.close()


def test_each_payload_loads_exactly_and_reloads_idempotently(db):
    assert ms.load_payload(db, "oi", OI, period="1h").inserted == 2
    assert ms.load_payload(db, "funding", FUNDING).inserted == 2
    assert ms.load_payload(db, "ls_ratio", LS, period="1h").inserted == 1
    t = ms.load_payload(db, "taker", TRADES, timeframe="1h")
    assert (t.rows, t.inserted) == (2, 2)
    assert ms.load_payload(db, "oi", OI, period="1h").inserted == 0
    assert ms.load_payload(db, "taker", TRADES, timeframe="1h").inserted == 0
    r = db.execute("SELECT open_interest::text AS v FROM open_interest ORDER BY ts").fetchall()
    assert [x["v"] for x in r] == ["51211.10400000", "52931.63700000"]  # the published decimals
    f = db.execute("SELECT funding_rate::text AS v FROM funding_rates ORDER BY ts").fetchall()
    assert [x["v"] for x in f] == ["0.0001", "-0.00057318"]
    tv = db.execute("SELECT buy_volume::text AS b, sell_volume::text AS s, trades FROM taker_volume ORDER BY "
                    "bucket_start").fetchall()
    assert tv == [{"b": "0.250", "s": "1.000", "trades": 2}, {"b": "0.500", "s": "0", "trades": 1}]
    cov = {(c["kind"], c["symbol"]): c["rows"] for c in ms.coverage(db)}
    assert cov == {("oi", "BTCUSDT"): 2, ("funding", "BTCUSDT"): 2, ("ls_ratio", "BTCUSDT"): 1,
                   ("taker", "BTCUSDT"): 2}


@pytest.mark.parametrize("kind, payload, msg", [
    ("oi", {"retCode": 10001, "retMsg": "params error", "result": {}}, "venue error retCode 10001"),
    ("oi", resp({"symbol": "BTCUSDT", "list": [{"openInterest": "1", "timestamp": str(T0)},
                                               {"openInterest": "abc", "timestamp": str(T0 + 1)}]}),
     "row 2: openInterest is not a decimal string"),
    ("oi", resp({"symbol": "BTCUSDT", "list": [{"openInterest": "-5", "timestamp": str(T0)}]}), "out of range"),
    ("funding", resp({"list": [{"symbol": "BTCUSDT", "fundingRate": "0.1", "fundingRateTimestamp": "1621382400"}]}),
     r"p.json row 1: fundingRateTimestamp 1621382400 is outside 2000..2100 \(milliseconds expected\)"),
    ("funding", resp({"list": [{"symbol": "BTCUSDT", "fundingRate": 0.0001, "fundingRateTimestamp": str(T0)}]}),
     "row 1: fundingRate is not a decimal string"),
    ("ls_ratio", resp({"list": [{"symbol": "BTCUSDT", "buyRatio": "0.7", "sellRatio": "0.7", "timestamp": str(T0)}]}),
     "is not 1"),
    ("taker", resp({"list": [{"symbol": "BTCUSDT", "price": "1", "size": "1", "side": "Long", "time": str(T0)}]}),
     "side \"Long\" is not Buy or Sell"),
    ("taker", resp({"list": [{"symbol": "BTCUSDT", "price": "1", "size": "1", "side": "Buy", "time": str(T0)},
                             {"symbol": "ETHUSDT", "price": "1", "size": "1", "side": "Buy", "time": str(T0)}]}),
     "several symbols"),
    ("funding", {"result": {"list": "nope"}}, "result.list is missing or not a list"),
])
def test_malformed_payloads_are_refused_by_row_and_write_nothing(db, kind, payload, msg):
    with pytest.raises(AtsError, match=msg):
        ms.load_payload(db, kind, payload, period="1h", where="p.json")
    for t in ("open_interest", "funding_rates", "long_short_ratios", "taker_volume"):
        assert db.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] == 0


def test_file_errors_name_the_file(db, tmp_path):
    p = tmp_path / "oi.json"
    p.write_text("{not json")
    with pytest.raises(AtsError, match=r"oi.json: not JSON \(line 1"):
        ms.load_file(db, "oi", p)
    p.write_text(json.dumps(OI))
    assert ms.load_file(db, "oi", p, period="1h").inserted == 2


def test_backfill_pages_through_pybit_against_a_local_server(db):
    from pybit.unified_trading import HTTP

    hits = []
    pages = {"": ("c1", [{"openInterest": "10", "timestamp": str(T0 + 7200000)}]),
             "c1": ("c2", [{"openInterest": "11", "timestamp": str(T0 + 3600000)}]),
             "c2": ("", [{"openInterest": "12", "timestamp": str(T0)}])}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            hits.append((u.path, q))
            cur, rows = pages[q.get("cursor", "")]
            body = json.dumps(resp({"symbol": q["symbol"], "category": "linear", "list": rows,
                                    "nextPageCursor": cur})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        s = HTTP(testnet=False)
        s.endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
        r = ms.backfill(db, s, "oi", "BTCUSDT", period="1h")
    finally:
        srv.shutdown()
    assert (r.rows, r.inserted) == (3, 3)
    assert [h[0] for h in hits] == ["/v5/market/open-interest"] * 3
    assert hits[0][1]["intervalTime"] == "1h" and hits[1][1]["cursor"] == "c1"
