"""Live candles: at each bar close fetch the closed candles through the venue adapter and store them in
``candles`` (source = the venue) in one transaction, with the market-data loader's upsert
(``ats.market_data.loaders.write_candles``)."""

from __future__ import annotations

from ..market_data.loaders import write_candles


def store_venue_candles(conn, source: str, candles) -> int:
    """Upsert :class:`~ats.execution.venue.VenueCandle` rows (any symbols/timeframes) in one transaction.

    Parameters
    ----------
    conn : psycopg.Connection
        Not in a transaction on entry (this call commits, or rolls back and re-raises).
    source : str
        ``candles.source`` (``bybit`` | ``alpaca``).
    candles : iterable of VenueCandle

    Returns
    -------
    int
        Candles inserted (new); updated ones are not counted.
    """
    groups: dict[tuple[str, str], list] = {}
    for c in candles:
        groups.setdefault((c.symbol, c.timeframe), []).append(
            [c.open_time_ms, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume)])
    n = 0
    with conn.transaction():
        for (sym, tf), rows in groups.items():
            n += write_candles(conn, sym, tf, source, rows)[0]
    return n
