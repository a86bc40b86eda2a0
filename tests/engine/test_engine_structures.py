"""The multi-leg path of the engine (``ats.engine.structures``) outside a venue with MLEG orders, and the iron condor's
leg choice: a replay with the paper broker blocks the condor as ``risk:multi_leg`` (never leg by leg)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
from psycopg.rows import dict_row


def _ts(iso):
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp())


def test_replay_on_the_paper_broker_blocks_a_multi_leg_strategy(fresh_db_url, shared_data):
    from ats.db import config_store as cs
    from ats.engine.replay import run_replay
    from ats.engine.runs import RunSpec
    from ats.market_data.loaders import load_file
    from ats.strategies import default_params

    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        load_file(c, shared_data / "equities" / "SPY_1d.csv")
        cs.upsert_strategy(c, "iron_condor", params=default_params("iron_condor"),
                           effective_from=datetime(1970, 1, 1, tzinfo=timezone.utc), watchlist_enabled=True,
                           buy_enabled=True, sell_enabled=True)
        c.commit()
    s = run_replay(RunSpec("replay", ("iron_condor",), ("SPY",), "1d", _ts("2013-06-01"), _ts("2013-08-01")),
                   url=fresh_db_url)
    with psycopg.connect(fresh_db_url, row_factory=dict_row) as c:
        blocked = c.execute("SELECT ts, gate, reason FROM blocked_signals WHERE run_id=%s ORDER BY ts",
                            (s["run_id"],)).fetchall()
        orders = c.execute("SELECT 1 FROM order_executions WHERE run_id=%s", (s["run_id"],)).fetchall()
    assert orders == []
    assert blocked and blocked[0]["ts"] == datetime(2013, 7, 17, tzinfo=timezone.utc)   # decided at the 07-16 close
    assert {b["gate"] for b in blocked} == {"risk:multi_leg"}
    assert "never trades leg by leg" in blocked[0]["reason"]


def test_choose_iron_condor_picks_listed_strikes_around_the_spot():
    from ats.execution.alpaca import OptionContractInfo, occ_symbol
    from ats.strategies.options import choose_iron_condor, condor_symbol

    chain = [OptionContractInfo(occ_symbol("SPY", e, k[0], s), "SPY", e, k, float(s))
             for e in ("2013-07-19", "2013-08-16", "2013-09-20") for k in ("call", "put") for s in range(140, 200)]
    p = {"dte_min_days": 20, "dte_max_days": 60, "short_otm_pct": 4.0, "wing_width_usd": 5.0}
    plan, why = choose_iron_condor(chain, 168.0, date(2013, 7, 17), p)
    assert why == "" and plan.expiry == "2013-08-16"          # the nearest expiry 20-60 days out (30 days)
    assert plan.strikes == (156.0, 161.0, 175.0, 180.0)        # 168 x 0.96 = 161.28 -> 161; 168 x 1.04 = 174.72
    assert plan.symbols == ("SPY130816P00156000", "SPY130816P00161000", "SPY130816C00175000", "SPY130816C00180000")
    q = {s: (1.0, 1.2) for s in plan.symbols}
    q[plan.symbols[1]] = q[plan.symbols[2]] = (2.0, 2.2)
    plan, _ = choose_iron_condor(chain, 168.0, date(2013, 7, 17), p, q)
    assert plan.credit_usd == 200.0 and plan.width_usd == 500.0 and plan.max_loss_usd == 300.0   # per condor
    assert condor_symbol(plan) == "SPY-IC-130816-156-161-175-180"
    none, why = choose_iron_condor(chain, 168.0, date(2013, 9, 10), p)
    assert none is None and "no listed expiry" in why
