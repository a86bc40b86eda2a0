"""The breakers' causal input series: velocity and realized volatility (from tests/test_engine_units.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _engine_helpers import raw_rows
from ats.risk.breakers import realized_vol_annual_pct, velocity_pct
from ats.strategies import Bars


@pytest.fixture(scope="module")
def btc(shared_data):
    return Bars.from_rows("BTCUSDT", "1h", raw_rows("BTC"))


def test_velocity_and_volatility_inputs(btc):
    v = velocity_pct(btc.high, btc.low, btc.close, 1)
    i = int(np.argmax(np.abs(v)))
    c, h, lo = btc.close[i], btc.high[i], btc.low[i]
    assert abs(v[i]) == pytest.approx(max((c / lo - 1) * 100, (1 - c / h) * 100))
    lr = np.diff(np.log(btc.close), prepend=np.nan)
    vol = realized_vol_annual_pct(lr, 12, 3600)
    assert vol[200] == pytest.approx(np.std(lr[189:201]) * math.sqrt(8760) * 100)
