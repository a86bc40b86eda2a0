"""Regime rules on real BTC: warm-up, the January rally, the May crash, hysteresis (from tests/test_engine_units.py)."""

from __future__ import annotations

import numpy as np
import pytest

from _engine_helpers import raw_rows
from ats.regime import CODE, classify, pauses
from ats.strategies import Bars


@pytest.fixture(scope="module")
def btc(shared_data):
    return Bars.from_rows("BTCUSDT", "1h", raw_rows("BTC"))


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
