"""The BTC regime along the engine's steps: classification once per run, the state at each decision time, and
its audit rows (``btc_market_state_history`` on every change, the ``btc_market_state`` singleton)."""

from __future__ import annotations

import numpy as np

from ..regime.rules import NAME as REGIME_NAME
from ..regime.rules import classify


def setup(eng) -> None:
    """Classify the regime reference (BTC) once and map it onto every symbol's bars.

    Sets ``eng.regime`` (``ats.regime.rules.classify`` result or None without a reference), ``eng.reg_sym``
    (symbol -> (effective codes, confirmed) per bar) and ``eng._ref_j`` (step open time -> reference index).

    Parameters
    ----------
    eng : Engine
        The engine (feed, bars, timeframe).
    """
    ref = eng.feed.reference
    eng.regime = None
    eng.reg_sym = {}
    if ref is None or len(ref) == 0:
        return
    eng.regime = classify(ref.t, ref.close, eng.tf_s)
    tl = getattr(eng.feed, "timeline", None)
    if tl is not None and len(tl):
        js = np.searchsorted(ref.t, tl, side="right") - 1
        eng._ref_j = dict(zip(tl.tolist(), js.tolist()))
    for s, b in eng.bars.items():
        j = np.searchsorted(ref.t, b.t, side="right") - 1
        ok = j >= 0
        codes = np.zeros(len(b), dtype=np.int8)
        conf = np.zeros(len(b), dtype=bool)
        codes[ok] = eng.regime.effective[j[ok]]
        conf[ok] = eng.regime.confirmed[j[ok]]
        eng.reg_sym[s] = (codes, conf)


def step(eng, T: int, C: int) -> tuple[int, bool]:
    """The regime at decision time C; writes ``btc_market_state_history`` on a change and refreshes the
    ``btc_market_state`` singleton (on a change, else every 24 steps).

    Parameters
    ----------
    eng : Engine
        The engine.
    T, C : int
        Bar open and decision time, Unix s.

    Returns
    -------
    tuple of (int, bool)
        (effective regime code, confirmed); (0, False) without a regime.
    """
    if eng.regime is None:
        return 0, False
    rs = eng.regime
    j = eng._ref_j.get(T)
    if j is None:
        j = int(np.searchsorted(rs.t, T, side="right") - 1)
    if j < 0:
        return 0, False
    code, conf = int(rs.effective[j]), bool(rs.confirmed[j])
    cur = (code, conf)
    if cur != eng.regime_last:
        prior = None if eng.regime_last is None else REGIME_NAME[eng.regime_last[0]]
        metrics = rs.metrics(j)
        eng.sink.add("btc_market_state_history", (C, REGIME_NAME[code], prior, conf, metrics, eng.run_id))
        eng.sink.regime({"ts": C, "regime": REGIME_NAME[code], "confirmed": conf, "metrics": metrics})
        eng.regime_last = cur
    elif eng.steps_done % 24 == 0:
        eng.sink.regime({"ts": C, "regime": REGIME_NAME[code], "confirmed": conf, "metrics": rs.metrics(j)})
    return code, conf


def regime_name(eng) -> str | None:
    """Name of the last regime seen by ``eng`` (None before the first)."""
    return None if eng.regime_last is None else REGIME_NAME[eng.regime_last[0]]
