"""One JSON-safe form of database and report values, shared by the reports (forensics) and the read-only
query tool of the ats-postgres MCP server."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

UTC = timezone.utc
_EXACT_INT = 2**53  # larger integers lose precision as a JSON number read by a double
_SAFE = frozenset({str, int, bool, type(None)})  # exact types jsonable returns unchanged
_UTC_ZONES = {UTC}  # zones whose offset is always zero (datetime.isoformat gives '+00:00' for them)
try:
    from zoneinfo import ZoneInfo

    _UTC_ZONES.update(ZoneInfo(k) for k in ("UTC", "Etc/UTC"))
except Exception:  # noqa: BLE001 - no tz database: timezone.utc alone
    pass


def iso_utc(ts: datetime) -> str:
    """An aware datetime as ISO-8601 UTC (``2021-05-19T13:00:00+00:00``); naive values are taken as UTC.

    Parameters
    ----------
    ts : datetime
        Aware (any zone) or naive (taken as UTC).

    Returns
    -------
    str
        ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``.
    """
    tz = ts.tzinfo
    if tz is None:
        ts = ts.replace(tzinfo=UTC)
    elif tz in _UTC_ZONES:  # already UTC (psycopg's session zone): the same text without the conversion
        return ts.isoformat()
    return ts.astimezone(UTC).isoformat()


def jsonable(value: Any, *, integral_decimals_as_int: bool = False) -> Any:
    """Recursively convert a value loaded by psycopg (or computed by a report) to a JSON-serialisable one.

    Rules: ``Decimal`` (NUMERIC) -> float (or int, see below); timestamps -> ISO-8601 **UTC** strings (naive ones
    taken as UTC); dates and times -> ISO strings; intervals -> seconds (float); bytea -> ``'\\x<hex>'``;
    UUID -> str; NaN and +/-inf (float or NUMERIC) -> None (JSON has no such numbers); numpy scalars -> their
    Python value; dicts (keys made strings), lists, tuples and sets recursively; anything else -> ``str()``.

    Parameters
    ----------
    value : Any
        The value to convert.
    integral_decimals_as_int : bool
        Give an integral NUMERIC below 2**53 as an int (``100``, not ``100.0``): the read-only query tool
        shows values as stored. Reports keep the default (float), so their JSON twins do not change.

    Returns
    -------
    Any
        None, bool, int, float, str, list or dict.
    """
    conv = _conv_int if integral_decimals_as_int else _conv
    return conv(value)


def _make_conv(integral_decimals_as_int: bool):
    """The converter behind :func:`jsonable` for one setting of ``integral_decimals_as_int``: exact-type fast
    paths for what psycopg loads (str, int, None, dict, list, Decimal, datetime, float), then the general
    rules (:func:`_general`) for everything else, subclasses included."""
    def conv(value: Any) -> Any:
        t = type(value)
        if t is str or t is int or value is None or t is bool:
            return value
        if t is dict:  # values that are already JSON-safe are taken as they are, without a call
            return {(k if type(k) is str else str(k)): (v if type(v) in _SAFE else conv(v)) for k, v in value.items()}
        if t is list:
            return [v if type(v) in _SAFE else conv(v) for v in value]
        if t is Decimal:
            if not value.is_finite():
                return None
            if integral_decimals_as_int and value == value.to_integral_value() and abs(value) < _EXACT_INT:
                return int(value)
            return float(value)
        if t is datetime:
            return iso_utc(value)
        if t is float:
            return value if math.isfinite(value) else None
        return _general(value, integral_decimals_as_int)
    return conv


def _general(value: Any, integral_decimals_as_int: bool) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if integral_decimals_as_int and value == value.to_integral_value() and abs(value) < _EXACT_INT:
            return int(value)
        return float(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, integral_decimals_as_int=integral_decimals_as_int) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v, integral_decimals_as_int=integral_decimals_as_int) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        try:
            return jsonable(value.item(), integral_decimals_as_int=integral_decimals_as_int)
        except Exception:  # noqa: BLE001 - not a numpy scalar after all: fall through to str()
            pass
    return str(value)


_conv = _make_conv(False)
_conv_int = _make_conv(True)
