"""Options strategies: multi-leg, defined-risk structures traded as ONE multi-leg order (reference strategies,
outside the book; they trade live on a venue with MLEG orders - Alpaca - and are blocked elsewhere).

``iron_condor``: on an underlying's bar in a quiet, trendless regime, sell a short iron condor from the venue's
option chain (buy put K1 < sell put K2 < spot < sell call K3 < buy call K4, one expiry), sized by its maximum loss.
The signal is computed on the underlying's candles like any strategy (``prepare``); the legs are chosen at the
decision from the chain and quotes the venue serves (:func:`choose_iron_condor`), and the engine's multi-leg path
(``ats.engine.structures``) runs the same gates, breakers and risk sizing as every entry, then submits one MLEG
order. Its position is valued at the legs' mid (USD per condor), its exits (take profit / stop loss on that value,
max hold, expiry, volatility expansion) close it through the venue's ``close_position``.

Units: percents are percents (50.0 = 50 %); strikes and widths USD per share; credit, max loss and the position's
price USD per condor (per share x 100); days are calendar days; volatility is annualised, percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from . import indicators as ind
from .base import Bars, Prepared, Strategy

CONTRACT_MULTIPLIER = 100


class IronCondor(Strategy):
    """Short iron condor in a low-volatility, trendless regime (a credit structure: the position side is short).

    Parameters (``strategy_configurations.params``)
    ----------
    vol_bars : int
        Bars of the realised volatility (close-to-close log returns, population std).
    bars_per_year : float
        Annualisation of that std (252 for daily US equity bars).
    vol_max_pct : float
        Entry only when the annualised realised volatility is at or below this, percent.
    vol_exit_pct : float
        The strategy's exit signal: volatility at or above this, percent.
    trend_bars : int
        SMA period of the trend filter.
    trend_max_pct : float
        Entry only when |close / SMA - 1| is at or below this, percent (no strong trend).
    dte_min_days, dte_max_days : int
        The expiry: the nearest listed expiration with this many calendar days left at the decision.
    short_otm_pct : float
        Short strikes: the nearest listed strikes at least this far out of the money, percent of the spot.
    wing_width_usd : float
        Long strikes at least this far beyond the short strikes, USD per share.
    min_credit_pct : float
        Refuse a condor whose mid credit is below this percent of its wider wing (``risk:min_credit``).
    exit_dte_days : float
        Close when the expiry is this many calendar days away or less (``exit_expiry``).
    max_contracts : int
        At most this many condors per entry.
    tp_pct, sl_pct : float
        Take profit when the condor's value fell by ``tp_pct`` % of the credit; stop loss when it rose by
        ``sl_pct`` % (the engine's short-side TP/SL on the position's price, USD per condor).
    trade_amount_usd : float
        The risk budget: condors = floor(min(budget, the risk limits' notional) / max loss per condor).
    """

    name = "iron_condor"
    direction = "short"
    kind = "reference"
    multi_leg = "iron_condor"   # the engine routes its entries and exits through ats.engine.structures
    description = "sell a defined-risk iron condor on the underlying when volatility is low and there is no trend"
    rules = ("entry: annualised realised vol(vol_bars) <= vol_max_pct and |close / SMA(trend_bars) - 1| <= "
             "trend_max_pct (edge) -> short iron condor: nearest expiry with dte in [dte_min_days, dte_max_days], "
             "short strikes >= short_otm_pct % out of the money, wings >= wing_width_usd, credit >= "
             "min_credit_pct % of the wing, condors = floor(risk notional / max loss); exits: value <= credit x "
             "(1 - tp_pct %), value >= credit x (1 + sl_pct %), max hold, dte <= exit_dte_days, vol >= vol_exit_pct")
    own_params = {"vol_bars": 20, "bars_per_year": 252.0, "vol_max_pct": 16.0, "vol_exit_pct": 30.0,
                  "trend_bars": 20, "trend_max_pct": 3.0, "dte_min_days": 20, "dte_max_days": 60,
                  "short_otm_pct": 4.0, "wing_width_usd": 5.0, "min_credit_pct": 10.0, "exit_dte_days": 2.0,
                  "max_contracts": 10}
    common_overrides = {"tp_pct": 50.0, "sl_pct": 100.0, "trailing_pct": 0.0, "trailing_activation_pct": 0.0,
                        "trade_amount_usd": 1000.0, "cooldown_min": 3 * 1440, "max_hold_hours": 21 * 24,
                        "max_adds": 0, "regime_pause": False}

    def prepare(self, bars: Bars, p: dict, regime=None) -> Prepared:
        c = bars.close
        n = len(c)
        lr = np.full(n, np.nan)
        if n > 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                lr[1:] = np.diff(np.log(c))
        vol = ind.rolling_std(lr, int(p["vol_bars"])) * math.sqrt(float(p["bars_per_year"])) * 100.0
        sma = ind.sma(c, int(p["trend_bars"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            trend = np.abs(c / sma - 1.0) * 100.0
            cond = (vol <= p["vol_max_pct"]) & (trend <= p["trend_max_pct"])
            ex = vol >= p["vol_exit_pct"]
        entry = -ind.edge(cond).astype(np.int8)
        strength = np.clip(np.nan_to_num(1.0 - vol / float(p["vol_max_pct"]), nan=0.0), 0.0, 1.0)
        return Prepared(entry, np.zeros(n, dtype=bool), np.asarray(ex, dtype=bool), strength,
                        {"vol_pct": vol, "trend_pct": trend})


@dataclass(frozen=True)
class CondorPlan:
    """The legs chosen for one iron condor and what one condor risks (USD per condor unless named)."""

    underlying: str
    expiry: str
    strikes: tuple[float, float, float, float]     # K1 < K2 < K3 < K4, USD per share
    symbols: tuple[str, str, str, str]             # OCC: put K1, put K2, call K3, call K4
    credit_usd: float                              # mid credit received per condor
    width_usd: float                               # the wider wing x 100
    max_loss_usd: float                            # width - credit

    def as_dict(self) -> dict:
        """JSON-ready (the signal's and the order's audit context)."""
        return {"underlying": self.underlying, "expiry": self.expiry, "strikes": list(self.strikes),
                "symbols": list(self.symbols), "credit_usd": round(self.credit_usd, 4),
                "width_usd": round(self.width_usd, 4), "max_loss_usd": round(self.max_loss_usd, 4)}


def pick_expiry(expiries, today: date, dte_min: float, dte_max: float) -> str | None:
    """The nearest expiry ``YYYY-MM-DD`` with ``dte_min <= (expiry - today).days <= dte_max``, or None."""
    ok = sorted(e for e in set(expiries) if dte_min <= (date.fromisoformat(e) - today).days <= dte_max)
    return ok[0] if ok else None


def choose_iron_condor(chain, spot: float, today: date, params: dict, quotes: dict | None = None):
    """Choose the four legs of a short iron condor from a venue's option chain.

    Parameters
    ----------
    chain : list of OptionContractInfo
        Listed contracts of the underlying (``symbol``, ``expiry``, ``kind`` call | put, ``strike``).
    spot : float
        The underlying's price at the decision (USD).
    today : datetime.date
        The decision's date (UTC).
    params : dict
        ``dte_min_days``, ``dte_max_days``, ``short_otm_pct``, ``wing_width_usd`` (see :class:`IronCondor`).
    quotes : dict, optional
        {OCC symbol: (bid, ask)} USD per share; when given the plan carries the mid credit and the max loss.

    Returns
    -------
    tuple of (CondorPlan or None, str)
        The plan and ``""``, or None and why no condor fits (no expiry in the window, no strikes far enough out).
    """
    exp = pick_expiry([c.expiry for c in chain], today, float(params["dte_min_days"]),
                      float(params["dte_max_days"]))
    if exp is None:
        return None, (f"no listed expiry {params['dte_min_days']}-{params['dte_max_days']} days after "
                      f"{today.isoformat()}")
    puts = {c.strike: c.symbol for c in chain if c.expiry == exp and c.kind == "put"}
    calls = {c.strike: c.symbol for c in chain if c.expiry == exp and c.kind == "call"}
    otm, wing = float(params["short_otm_pct"]) / 100.0, float(params["wing_width_usd"])
    k2 = max((k for k in puts if k <= spot * (1 - otm)), default=None)
    k3 = min((k for k in calls if k >= spot * (1 + otm)), default=None)
    k1 = None if k2 is None else max((k for k in puts if k <= k2 - wing), default=None)
    k4 = None if k3 is None else min((k for k in calls if k >= k3 + wing), default=None)
    if None in (k1, k2, k3, k4):
        return None, (f"expiry {exp}: no put/call strikes {otm * 100:g} % out of the money with a {wing:g} USD wing "
                      f"around spot {spot:g}")
    syms = (puts[k1], puts[k2], calls[k3], calls[k4])
    width = max(k2 - k1, k4 - k3) * CONTRACT_MULTIPLIER
    credit = float("nan")
    if quotes is not None:
        mids = [sum(quotes[s]) / 2 if s in quotes else float("nan") for s in syms]
        credit = (mids[1] - mids[0] + mids[2] - mids[3]) * CONTRACT_MULTIPLIER
    plan = CondorPlan(syms[0][:-15], exp, (k1, k2, k3, k4), syms, credit, width,
                      width - credit)
    return plan, ""


def condor_symbol(plan: CondorPlan) -> str:
    """The engine's symbol of a condor position: ``<UNDERLYING>-IC-<YYMMDD>-<K1>-<K2>-<K3>-<K4>``
    (e.g. ``SPY-IC-990416-120-125-135-140``): distinct from the underlying, so its marks never mix with the
    underlying's price."""
    d = date.fromisoformat(plan.expiry)
    return f"{plan.underlying}-IC-{d:%y%m%d}-" + "-".join(f"{k:g}" for k in plan.strikes)


ALL_OPTIONS = (IronCondor(),)
