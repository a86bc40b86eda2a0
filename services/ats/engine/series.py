"""The causal series of one run that the breakers and the fast path read: velocity, market volatility, feed
anomalies (per symbol, from ats.market_data plus the engine's own stream gaps), cached per window.

Times are Unix seconds (bar open times); percent values are percents.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from ..risk import breakers as brk


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


class MarketSeries:
    """Cached per-window series over a run's bars.

    Parameters
    ----------
    bars : dict
        Symbol -> ``ats.strategies.Bars`` (arrays t, open, high, low, close, volume; shape (n,)).
    reference : Bars or None
        The market reference (BTC) used for the market volatility, or None (equal-weight index).
    tf_s : int
        Timeframe (s).
    logret : dict
        Symbol -> log returns per bar, shape (n,) (NaN first).
    anomalies : dict
        Symbol -> sorted [(start, end, info)] market-data anomalies (Unix s; see ``anomaly_intervals``).
    ref_j : dict
        Step open time -> index into ``reference`` (precomputed over the feed timeline; may be empty).
    """

    def __init__(self, bars: dict, reference, tf_s: int, logret: dict, anomalies: dict, ref_j: dict):
        self.bars, self.reference, self.tf_s = bars, reference, tf_s
        self.logret, self.anomalies, self.ref_j = logret, anomalies, ref_j
        self.symbols = list(bars)
        self._vel: dict = {}
        self._vol: dict = {}
        self._vol_j: dict = {}
        self._anom_at: dict = {}

    def velocity(self, sym: str, minutes: float) -> np.ndarray:
        """Signed fastest move per bar of ``sym`` (``ats.risk.breakers.velocity_pct``).

        Parameters
        ----------
        sym : str
            Symbol.
        minutes : float
            Window (minutes).

        Returns
        -------
        numpy.ndarray, shape (n,)
            Percent per bar (cached per window in bars).
        """
        k = brk.window_bars(minutes, self.tf_s)
        v = self._vel.get((sym, k))
        if v is None:
            b = self.bars[sym]
            v = self._vel[(sym, k)] = brk.velocity_pct(b.high, b.low, b.close, k)
        return v

    def market_vol(self, minutes: float):
        """(times (Unix s), annualized volatility %, source) of the reference or of the equal-weight index."""
        k = brk.window_bars(minutes, self.tf_s)
        hit = self._vol.get(k)
        if hit is None:
            ref = self.reference
            if ref is not None and len(ref):
                t, lr = ref.t, np.diff(np.log(ref.close), prepend=np.nan)
                src = ref.symbol
            else:
                import pandas as pd

                df = pd.DataFrame({s: pd.Series(self.logret[s], index=b.t) for s, b in self.bars.items()})
                t, lr = df.index.to_numpy(dtype=np.int64), df.mean(axis=1, skipna=True).to_numpy()
                src = "equal-weight index"
            hit = self._vol[k] = (t, brk.realized_vol_annual_pct(lr, k, self.tf_s), src)
        return hit

    def vol_index(self, vt: np.ndarray, T: int) -> int:
        """Index of the last bar of the volatility series opening at or before ``T``.

        Parameters
        ----------
        vt : numpy.ndarray
            Times of the series (Unix s) as ``market_vol`` returned them.
        T : int
            Unix s.

        Returns
        -------
        int
            Index, -1 when none.
        """
        j = self.ref_j.get(T) if vt is getattr(self.reference, "t", None) else None
        if j is not None:
            return j
        key = (id(vt), T)
        j = self._vol_j.get(key)
        if j is None:
            j = self._vol_j[key] = int(np.searchsorted(vt, T, side="right") - 1)
        return j

    def anomaly_index(self, sym: str, win: int) -> np.ndarray:
        """Per bar of ``sym``: the market-data anomaly active at the bar's close.

        Parameters
        ----------
        sym : str
            Symbol.
        win : int
            Window after the anomaly's end (s): active while a0 < close <= a1 + win.

        Returns
        -------
        numpy.ndarray of int64, shape (n,)
            Index into ``anomalies[sym]``, -1 when none.
        """
        key = (sym, win)
        arr = self._anom_at.get(key)
        if arr is None:
            closes = self.bars[sym].t + self.tf_s
            arr = np.full(len(closes), -1, dtype=np.int64)
            for n, (a0, a1, _info) in enumerate(self.anomalies.get(sym, ())):
                lo = int(np.searchsorted(closes, a0, side="right"))
                hi = int(np.searchsorted(closes, a1 + win, side="right"))
                seg = arr[lo:hi]
                seg[seg < 0] = n
            self._anom_at[key] = arr
        return arr


def anomaly_intervals(anomalies: list[dict], symbols, timeframe: str, tf_s: int) -> dict[str, list]:
    """Per symbol, sorted (start, end, info) intervals of the market-data anomalies of ``timeframe``.

    Parameters
    ----------
    anomalies : list of dict
        Rows with symbol, timeframe, open_time (datetime or Unix s), kind, detail.
    symbols : iterable of str
        The run's symbols (others are dropped).
    timeframe : str
        The run's timeframe (rows of another timeframe are dropped).
    tf_s : int
        Its length in s.

    Returns
    -------
    dict
        Symbol -> [(start, end, info)]: end = start + missing bars x tf_s (``detail`` keys missing_bars / missing /
        bars / count / n_missing; 1 bar when none); info: kind, open_time (ISO), source 'feed_anomalies', detail.
    """
    out: dict[str, list] = {s: [] for s in symbols}
    for a in anomalies:
        sym = a.get("symbol")
        if sym not in out or a.get("timeframe") not in (None, timeframe):
            continue
        t0 = int(a["open_time"].timestamp()) if isinstance(a["open_time"], datetime) else int(a["open_time"])
        det = a.get("detail") or {}
        nbars = 1
        for k in ("missing_bars", "missing", "bars", "count", "n_missing"):
            if isinstance(det.get(k), (int, float)) and det[k] > 0:
                nbars = int(det[k])
                break
        out[sym].append((t0, t0 + nbars * tf_s, {"kind": a.get("kind"), "open_time": _iso(t0),
                                                 "source": "feed_anomalies", "detail": det}))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def load_anomalies(conn, spec, timeframe: str) -> tuple[list[dict], str]:
    """Feed anomalies for the run's symbols and window (from 2 days before the start) from the market-data service.

    Uses ``ats.market_data.anomalies.anomalies_between`` when that module exists, else the ``feed_anomalies``
    table when it exists, else nothing.

    Returns
    -------
    tuple of (list of dict, str)
        The anomalies (symbol, timeframe, open_time, kind, detail) and the source name.
    """
    start = datetime.fromtimestamp(spec.start, tz=timezone.utc) - timedelta(days=2)
    end = datetime.fromtimestamp(spec.end, tz=timezone.utc)
    try:
        from ..market_data.anomalies import anomalies_between  # type: ignore
    except ImportError:
        anomalies_between = None
    if anomalies_between is not None:
        rows = anomalies_between(conn, start, end, symbols=list(spec.symbols))
        return [r for r in rows if r.get("timeframe") in (None, timeframe)], "anomalies_between"
    exists = conn.execute("SELECT to_regclass('feed_anomalies') IS NOT NULL AS e").fetchone()
    if not (exists["e"] if isinstance(exists, dict) else exists[0]):
        return [], "none"
    rows = conn.execute("""SELECT symbol, timeframe, open_time, kind, detail FROM feed_anomalies
                            WHERE open_time >= %s AND open_time < %s AND symbol = ANY(%s) AND timeframe = %s
                            ORDER BY open_time""", (start, end, list(spec.symbols), timeframe)).fetchall()
    return [dict(r) for r in rows], "feed_anomalies"
