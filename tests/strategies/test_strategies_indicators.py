"""Indicators against naive loops on real ETH candles (from tests/test_engine_units.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _engine_helpers import raw_rows
from ats.strategies import Bars
from ats.strategies import indicators as ind


@pytest.fixture(scope="module")
def eth(shared_data):
    return Bars.from_rows("ETHUSDT", "1h", raw_rows("ETH"))


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
