"""Client order ids: deterministic and distinct (moved from tests/test_engine_units.py), the compact form for a
venue's length limit (Bybit orderLinkId: 36 characters), and the engine passing a broker's limit through."""

from __future__ import annotations

import re

import pytest

from _engine_helpers import connect, engine_db, engine_template  # noqa: F401
from ats.execution import PaperBroker, client_order_id
from ats.execution.broker import run_tag


def test_client_order_id_is_deterministic_and_distinct():
    a = client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy")
    assert a == client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy")
    others = {client_order_id("replay-2", "momentum", "BTCUSDT", 1610000000, "open", "buy"),
              client_order_id("replay-1", "momentum", "BTCUSDT", 1610003600, "open", "buy"),
              client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "add", "buy")}
    assert a not in others and len(others) == 3

def test_replay_ids_unchanged_without_a_limit():
    a = client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy")
    assert a == "replay-1-momentum-BTCUSDT-202101070613-open-buy-" + a[-8:]
    assert a == client_order_id("replay-1", "momentum", "BTCUSDT", 1610000000, "open", "buy", max_len=None)


def test_compact_id_fits_the_venue_limit_and_charset():
    args = ("replay-cb5ecec93968-a-long-tag", "mean_reversion_short", "MATICUSDT", 1621400400, "close", "sell")
    ids = {n: client_order_id(*args, max_len=n) for n in (33, 36, 45, 64)}
    for n, cid in ids.items():
        assert len(cid) <= n and re.fullmatch(r"[A-Za-z0-9_-]+", cid), cid
        assert cid == client_order_id(*args, max_len=n)  # deterministic
    assert len(ids[36]) == 36 and ids[36].startswith(run_tag(args[0]) + "-cs202105190500-")  # names its run
    seen = set()
    for strat in ("momentum", "btc_trend"):
        for sym in ("BTCUSDT", "ETHUSDT"):
            for ts in (1610000000, 1610003600):
                for intent, side in (("open", "buy"), ("add", "buy"), ("close", "sell"), ("open", "sell")):
                    seen.add(client_order_id("live-1", strat, sym, ts, intent, side, max_len=36))
    assert len(seen) == 2 * 2 * 2 * 4  # distinct decisions -> distinct ids
    assert client_order_id("live-1", "m", "X", 1, "open", "buy", max_len=36) != \
        client_order_id("live-2", "m", "X", 1, "open", "buy", max_len=36)
    with pytest.raises(ValueError):
        client_order_id(*args, max_len=32)


class _ShortIdBroker(PaperBroker):
    """A paper broker declaring a venue's id limit (as the Bybit adapter does); keeps the orders it filled."""

    max_client_id_len = 36

    def __init__(self):
        super().__init__()
        self.filled = []

    def on_bar(self, *a, **kw):
        reps = super().on_bar(*a, **kw)
        self.filled += [r.order for r in reps if r.fills]
        return reps


def test_engine_passes_the_broker_limit(engine_db):
    """A real replay through a broker declaring ``max_client_id_len``: every order id is the compact form."""
    from ats.engine.core import Engine
    from ats.engine.feed import ReplayFeed
    from ats.engine.runs import make_spec, resolve
    from ats.engine.sink import MemorySink

    with connect(engine_db) as conn:
        spec = resolve(conn, make_spec("replay", strategies=["momentum", "btc_trend"], symbols=["BTCUSDT", "ETHUSDT"],
                                       timeframe="1h", start="2021-01-20", end="2021-02-10"))
        feed = ReplayFeed.load(conn, spec.symbols, "1h", spec.start, spec.end)
        sink = MemorySink(spec.run_id, spec.account_id)
        eng = Engine(conn, spec, sink=sink, feed=feed, broker=_ShortIdBroker())
        eng.run()
        conn.rollback()
    assert eng.stats["orders"] > 0 and eng.stats["fills"] > 0
    ids = [o.client_order_id for o in eng.broker.filled]
    assert ids and all(len(i) <= 36 and re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    assert len(set(ids)) == len(ids)
