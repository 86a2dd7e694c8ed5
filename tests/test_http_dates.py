"""HTTP dates (RFC 9110 §5.6.7): the three valid forms, and everything else invalid."""

from __future__ import annotations

import calendar
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit import policy
from cachekit.http_dates import parse_http_date

SUNDAY = float(calendar.timegm((1994, 11, 6, 8, 49, 37)))
NOW = float(calendar.timegm((2026, 12, 3, 0, 0, 0)))


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
        "  Sun, 06 Nov 1994 08:49:37 GMT\t",  # optional whitespace around a field value
    ],
)
def test_the_three_forms_of_rfc_9110(value: str) -> None:
    assert parse_http_date(value, NOW) == SUNDAY


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 UTC",  # another zone name
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37 gmt",  # GMT is case-sensitive
        "Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in IMF-fixdate
        "Sun 06 Nov 1994 08:49:37 GMT",  # missing comma
        "Sun,  06 Nov 1994 08:49:37 GMT",  # extra space
        "Sun, 06-Nov-1994 08:49:37 GMT",  # dashes in IMF-fixdate
        "Sun, 06 Nov 1994 08.49.37 GMT",  # dots in the time
        "Sun, 06 Nov 1994 8:49:37 GMT",  # one-digit hour
        "Sun, 6 Nov 1994 08:49:37 GMT",  # one-digit day in IMF-fixdate
        "Sunday, 06 Nov 1994 08:49:37 GMT",  # long day name in IMF-fixdate
        "Sun, 06-Nov-94 08:49:37 GMT",  # short day name in RFC 850
        "Sun Nov 6 08:49:37 1994",  # asctime needs the day padded with a space
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "0",
        "-1",
        "",
        "tomorrow",
    ],
)
def test_everything_else_is_invalid(value: str) -> None:
    assert parse_http_date(value, NOW) is None


def test_rfc850_years_more_than_50_years_ahead_are_in_the_past() -> None:
    # In 2026: 2090 would be more than 50 years ahead, so "90" is 1990; "70" is 2070.
    assert parse_http_date("Monday, 01-Jan-90 00:00:00 GMT", NOW) == calendar.timegm(
        (1990, 1, 1, 0, 0, 0)
    )
    in_2070 = parse_http_date("Wednesday, 01-Jan-70 00:00:00 GMT", NOW)
    assert in_2070 == calendar.timegm((2070, 1, 1, 0, 0, 0))


def test_a_leap_second_is_read_as_the_second_before() -> None:
    leap = parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT", NOW)
    assert leap == calendar.timegm((2016, 12, 31, 23, 59, 59))


@given(st.integers(0, 4_000_000_000))
def test_what_email_utils_formats_reads_back(timestamp: int) -> None:
    assert parse_http_date(email.utils.formatdate(timestamp, usegmt=True)) == timestamp


class TestThroughThePolicy:
    """RFC 9111 §5.3 and §5.1, as the lifetime decision applies them."""

    def test_an_invalid_expires_means_already_expired(self) -> None:
        for bad in ["Sun, 06 Nov 2094 08:49:37 UTC", "0", "Sun, 06 Nov 94 08:49:37 GMT"]:
            assert policy.response_ttl([("Expires", bad)], NOW) == 0.0

    def test_an_invalid_date_falls_back_to_now(self) -> None:
        expires = email.utils.formatdate(NOW + 60, usegmt=True)
        lines = [("Date", "yesterday"), ("Expires", expires)]
        assert policy.response_ttl(lines, NOW) == 60.0

    @pytest.mark.parametrize(("age", "seconds"), [("7200, 0", 7200.0), (" 30 ,5", 30.0)])
    def test_the_first_age_of_a_list_counts(self, age: str, seconds: float) -> None:
        assert policy.received_age([("Age", age)]) == seconds
        assert policy.received_age([("Age", age), ("Age", "1")]) == seconds


class TestExamples:
    def test_parse_http_date_formats(self) -> None:
        expected = 784111777.0
        assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected
        assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected

    @pytest.mark.parametrize("value", [None, "", "0", "-1", "yesterday", "Sun, 99 Foo 1994"])
    def test_parse_http_date_rejects_garbage(self, value: str | None) -> None:
        assert parse_http_date(value) is None
