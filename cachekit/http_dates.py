"""HTTP dates exactly as RFC 9110 §5.6.7 defines them: IMF-fixdate, and the obsolete
rfc850 and asctime forms a recipient must still accept. Anything else is invalid.

One parser for `Date`, `Expires`, `Last-Modified`, `If-Modified-Since` and `If-Range`:
a lenient one would read `Expires: 0` or a date in another zone as a real time, and keep
a response fresh that the origin meant to expire (RFC 9111 §5.3 says: invalid = expired).
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Final

_DAY: Final = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY: Final = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_MONTH: Final = "(" + "|".join(_MONTHS) + ")"
_TIME: Final = r"(\d{2}):(\d{2}):(\d{2})"
# Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE: Final = re.compile(rf"{_DAY}, (\d{{2}}) {_MONTH} (\d{{4}}) {_TIME} GMT")
# Sunday, 06-Nov-94 08:49:37 GMT
_RFC850: Final = re.compile(rf"{_LONG_DAY}, (\d{{2}})-{_MONTH}-(\d{{2}}) {_TIME} GMT")
# Sun Nov  6 08:49:37 1994
_ASCTIME: Final = re.compile(rf"{_DAY} {_MONTH} (\d{{2}}| \d) {_TIME} (\d{{4}})")


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date as a POSIX timestamp; None when absent or not one of the three forms
    (surrounding whitespace aside: it is not part of a field value). `now` decides the
    century of an rfc850 date's two-digit year (RFC 9110 §5.6.7)."""
    if not value:
        return None
    text = value.strip(" \t")
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(text):
        day, month, short_year, hour, minute, second = match.groups()
        year = str(_full_year(int(short_year), now))
    elif match := _ASCTIME.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    clock = (int(hour), int(minute), int(second))
    return _timestamp(int(year), _MONTHS.index(month) + 1, int(day), clock)


def _full_year(two_digits: int, now: float | None) -> int:
    # "A timestamp that appears to be more than 50 years in the future" is in the past.
    current = time.gmtime(time.time() if now is None else now).tm_year
    year = current - current % 100 + two_digits
    return year - 100 if year > current + 50 else year


def _timestamp(year: int, month: int, day: int, clock: tuple[int, int, int]) -> float | None:
    hours, minutes, seconds = clock
    if not (1 <= day <= calendar.monthrange(year, month)[1] and hours < 24 and minutes < 60):
        return None
    if seconds > 60:  # 60: a leap second
        return None
    return float(calendar.timegm((year, month, day, hours, minutes, min(seconds, 59), 0, 0, 0)))
