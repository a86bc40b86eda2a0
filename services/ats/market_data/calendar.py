"""Trading calendars for coverage: 24/7 (crypto) and the NYSE trading-day calendar (US equities/ETFs).

NYSE trading days are weekdays minus NYSE full-day holidays, computed by rule (valid 1990 onwards):
New Year's Day (Sunday -> Monday; Saturday -> no holiday: NYSE rule 7.2 does not close the prior Friday when it
ends a year), Martin Luther King Jr. Day (3rd Monday of January, from 1998), Washington's Birthday (3rd Monday
of February), Good Friday, Memorial Day (last Monday of May), Juneteenth (June 19, from 2022), Independence Day,
Labor Day (1st Monday of September), Thanksgiving (4th Thursday of November) and Christmas (Saturday -> Friday,
Sunday -> Monday), plus the unscheduled closures in ``NYSE_SPECIAL_CLOSURES`` (9/11, presidential funerals,
Hurricane Sandy). Early-close days are full trading days.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

NYSE_SPECIAL_CLOSURES = frozenset({
    date(2001, 9, 11), date(2001, 9, 12), date(2001, 9, 13), date(2001, 9, 14),  # September 11
    date(2004, 6, 11),                                                           # Reagan funeral
    date(2007, 1, 2),                                                            # Ford funeral
    date(2012, 10, 29), date(2012, 10, 30),                                      # Hurricane Sandy
    date(2018, 12, 5),                                                           # G. H. W. Bush funeral
    date(2025, 1, 9),                                                            # Carter funeral
})


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741
    m = (a + 11 * h + 22 * l) // 451
    month = (h + l - 7 * m + 114) // 31
    day = ((h + l - 7 * m + 114) % 31) + 1
    return date(year, month, day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    d = date(year, month, 1)
    d += timedelta(days=(weekday - d.weekday()) % 7)
    return d + timedelta(weeks=n - 1)


def _last_weekday(year: int, month: int, weekday: int) -> date:
    d = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - weekday) % 7)


def _observed(d: date, *, saturday_to_friday: bool = True) -> date | None:
    if d.weekday() == 5:
        return d - timedelta(days=1) if saturday_to_friday else None
    if d.weekday() == 6:
        return d + timedelta(days=1)
    return d


@lru_cache(maxsize=None)
def nyse_holidays(year: int) -> frozenset[date]:
    """NYSE full-day closures (weekdays) of ``year``, rules as in the module docstring."""
    days = {
        _observed(date(year, 1, 1), saturday_to_friday=False),
        _nth_weekday(year, 2, 0, 3),
        _easter(year) - timedelta(days=2),
        _last_weekday(year, 5, 0),
        _observed(date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),
        _nth_weekday(year, 11, 3, 4),
        _observed(date(year, 12, 25)),
    }
    if year >= 1998:
        days.add(_nth_weekday(year, 1, 0, 3))
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))
    days |= {d for d in NYSE_SPECIAL_CLOSURES if d.year == year}
    return frozenset(d for d in days if d is not None and d.weekday() < 5)


def is_nyse_trading_day(d: date) -> bool:
    """True on a weekday that is not an NYSE holiday or special closure."""
    return d.weekday() < 5 and d not in nyse_holidays(d.year)


def nyse_trading_days(first: date, last: date) -> list[date]:
    """NYSE trading days in ``[first, last]`` (inclusive), ascending."""
    out = []
    d = first
    while d <= last:
        if is_nyse_trading_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out
