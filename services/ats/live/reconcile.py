"""Reconciliation: the venue's open orders, positions and balance against the database and the engine.

Compared (per run): every open position in ``positions`` (long = spot holding of the base coin, short = linear
perpetual, negative) against the venue's positions; the venue's open orders against the orders the broker knows;
the venue's equity against the engine's (cash + marked positions). A difference is never "fixed": the caller
trips the ``reconciliation`` circuit breaker (entries halt) and writes the differences to ``system_events``.

Tolerances: linear quantities exact; spot holdings may exceed the database by less than ``dust_steps`` lot steps
(spot buy fees are charged in the base coin and the remainder below one lot step cannot be sold: it is booked
as fee, see ats.execution.bybit); equity within ``equity_tol_pct`` % (marks are the last close vs the venue's
price now).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Reconciliation:
    """Outcome of one reconciliation. ``diffs``: one dict per difference (what, symbol, venue, database)."""

    ok: bool
    diffs: list = field(default_factory=list)
    venue_positions: dict = field(default_factory=dict)
    db_positions: dict = field(default_factory=dict)
    venue_equity_usd: float | None = None
    engine_equity_usd: float | None = None


def default_category(symbol: str, side: str) -> str:
    """Bybit's mapping of a database position to a venue category: long -> ``spot``, short -> ``linear``."""
    return "spot" if side == "long" else "linear"


def db_positions(conn, run_id: str, adapter=None) -> dict:
    """{(symbol, category): signed qty} of the run's open positions.

    Parameters
    ----------
    conn : psycopg.Connection
    run_id : str
    adapter : VenueAdapter, optional
        When it has ``category_for(symbol, side)`` (Alpaca: ``equity`` | ``option``), that names the category;
        otherwise :func:`default_category` (long -> spot, short -> linear).

    Returns
    -------
    dict
        {(symbol, category): Decimal signed base qty (short < 0)}; a multi-leg structure position
        (``context.structure``, ``ats.engine.structures``) counts per leg: qty x ratio, bought legs +, sold -.
    """
    cat = getattr(adapter, "category_for", None) or default_category
    rows = conn.execute("SELECT symbol, side, qty, context->'structure' AS structure FROM positions "
                        "WHERE run_id=%s AND status='open'", (run_id,)).fetchall()
    out: dict = {}
    for r in rows:
        q = Decimal(str(r["qty"]))
        st = r["structure"]
        if isinstance(st, dict) and st.get("legs"):  # a multi-leg structure: the venue holds its legs
            for lg in st["legs"]:
                key = (lg["symbol"], cat(lg["symbol"], lg["side"]))
                lq = q * Decimal(str(lg.get("ratio_qty", 1)))
                out[key] = out.get(key, Decimal(0)) + (lq if lg["side"] == "buy" else -lq)
            continue
        key = (r["symbol"], cat(r["symbol"], r["side"]))
        out[key] = out.get(key, Decimal(0)) + (q if r["side"] == "long" else -q)
    return out


def reconcile(conn, adapter, run_id: str, symbols, *, known_client_ids=(), engine_equity_usd: float | None = None,
              in_flight: dict | None = None, known_prefix: str | None = None, dust_steps: int = 50, equity_tol_pct: float = 2.0) -> Reconciliation:
    """Compare the venue with the database (read-only on both sides).

    Parameters
    ----------
    conn : psycopg.Connection
    adapter : VenueAdapter
        With ``positions(symbols)``, ``open_orders()``, ``balance()`` (and ``instrument()`` for lot steps).
    run_id : str
    symbols : sequence of str
    known_client_ids : iterable of str
        Client order ids the broker has pending (a venue open order outside this set is a difference).
    known_prefix : str, optional
        This run's client order id prefix: its own open orders sent after the last checkpoint are not a difference
        (they are re-adopted by orderLinkId when the bar is re-decided).
    in_flight : dict, optional
        {(symbol, category): signed qty} executed at the venue but not yet reported to the engine.
    engine_equity_usd : float, optional
        The engine's equity (USD) to compare with the venue's; skipped when None.

    Returns
    -------
    Reconciliation
    """
    venue = {}
    for p in adapter.positions(tuple(symbols)):
        if p.symbol in symbols or p.category == "option":  # the adapter keeps options on these underlyings
            venue[(p.symbol, p.category)] = venue.get((p.symbol, p.category), Decimal(0)) + p.qty
    db = db_positions(conn, run_id, adapter)
    for key, q in (in_flight or {}).items():  # sent at the last close, fills not in the database yet
        db[key] = db.get(key, Decimal(0)) + q
    diffs = []
    for key in sorted(set(venue) | set(db)):
        v, d = venue.get(key, Decimal(0)), db.get(key, Decimal(0))
        sym, cat = key
        if cat == "spot":
            step = adapter.instrument(sym, "spot")["step"] if hasattr(adapter, "instrument") else Decimal("1e-6")
            if not (-step / 2 <= v - d < step * dust_steps):
                diffs.append({"what": "position", "symbol": sym, "category": cat, "venue": str(v), "database": str(d)})
        elif abs(v - d) > Decimal("1e-12"):
            diffs.append({"what": "position", "symbol": sym, "category": cat, "venue": str(v), "database": str(d)})
    known = set(known_client_ids)
    for o in adapter.open_orders():
        ours = known_prefix is not None and o.client_order_id.startswith(known_prefix)
        if o.symbol in symbols and o.client_order_id not in known and not ours:
            diffs.append({"what": "open_order", "symbol": o.symbol, "client_order_id": o.client_order_id,
                          "venue_order_id": o.venue_order_id, "status": o.status})
    bal = adapter.balance()
    veq = float(bal.equity_usd)
    if engine_equity_usd is not None and engine_equity_usd > 0:
        dev = abs(veq - engine_equity_usd) / engine_equity_usd * 100.0
        if dev > equity_tol_pct:
            diffs.append({"what": "equity", "venue": round(veq, 4), "database": round(engine_equity_usd, 4),
                          "deviation_pct": round(dev, 3)})
    return Reconciliation(not diffs, diffs, {f"{k[0]}:{k[1]}": str(v) for k, v in venue.items()},
                          {f"{k[0]}:{k[1]}": str(v) for k, v in db.items()}, veq, engine_equity_usd)
