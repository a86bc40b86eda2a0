"""No look-ahead in any strategy or in the regime it reads: outputs at bar i equal those computed on the
series truncated after i (from tests/test_engine_units.py)."""

from __future__ import annotations

import numpy as np
import pytest

from _engine_helpers import raw_rows
from ats.regime import classify
from ats.strategies import REGISTRY, Bars


@pytest.fixture(scope="module")
def eth(shared_data):
    return Bars.from_rows("ETHUSDT", "1h", raw_rows("ETH"))


@pytest.fixture(scope="module")
def btc(shared_data):
    return Bars.from_rows("BTCUSDT", "1h", raw_rows("BTC"))


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
