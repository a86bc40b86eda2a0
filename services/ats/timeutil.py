"""UTC time helpers shared by every module. All ATS timestamps are timezone-aware UTC datetimes.

Timeframes: '5m', '15m', '1h', '4h', '1d', '1w' (``TIMEFRAME_SECONDS``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .errors import UsageError

UTC = timezone.utc
TIMEFRAME_SECONDS = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400, "1w": 604800}


def parse_ts(value: str | datetime | int | float, *, what: str = "time") -> datetime:
    """Parse an ISO-8601 date/datetime (naive = UTC), a datetime, or Unix ms (int) into an aware UTC datetime.

    Raises UsageError naming ``what`` on an unparsable value.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    s = str(value).strip()
    if s.lower() == "now":
        return datetime.now(tz=UTC)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{what}: cannot parse {value!r} as an ISO-8601 date or datetime (UTC)") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def to_ms(dt: datetime) -> int:
    """Aware datetime -> Unix milliseconds (UTC)."""
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Unix milliseconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def timeframe_delta(tf: str) -> timedelta:
    """The length of one candle of timeframe ``tf``; UsageError on an unknown timeframe."""
    try:
        return timedelta(seconds=TIMEFRAME_SECONDS[tf])
    except KeyError as exc:
        raise UsageError(f"unknown timeframe {tf!r}; expected one of {', '.join(TIMEFRAME_SECONDS)}") from exc


def utcnow() -> datetime:
    """The current wall-clock time, aware UTC."""
    return datetime.now(tz=UTC)
