"""The pure side of key counting (cachekit/key_growth.py): the parts of real keys, the
growth rule as a decision table, and the report's JSON shape."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from yarl import URL

from cachekit import keys
from cachekit.key_growth import (
    GROWTH_WINDOWS,
    MIN_NEW_KEYS,
    RECENT_WINDOWS,
    WINDOW_SECONDS,
    KeyFigures,
    WindowCount,
    growth,
    key_parts,
    part_label,
    report,
)

PREFIX = keys.default_key_prefix("get_product")


class FakeRequest:
    """What a key is built from (`keys.KeyedRequest`)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.rel_url = URL(url)
        self.headers = CIMultiDict(headers or {})
        self.match_info: dict[str, str] = {}
        self.host = "shop.example"
        self.scheme = "https"


def stored_key(url: str, vary: tuple[str, ...] = ("host",), **headers: str) -> str:
    request = FakeRequest(url, {name.replace("_", "-"): value for name, value in headers.items()})
    base = keys.default_key("get_product", request.rel_url)
    return keys.request_key(base, request, vary, 250)


def test_the_parts_of_a_default_key() -> None:
    key = stored_key(
        "/p/7?utm_source=news+letter&page=2&page=3&flag",
        ("host", "accept-language"),
        accept_language="fr",
    )
    parts = key_parts(key, PREFIX)
    assert parts == [
        ("q:flag", ""),
        ("q:page", "2"),
        ("q:page", "3"),
        ("q:utm%5Fsource", "news%20letter"),
        ("h:host", "https~shop.example"),
        ("h:accept-language", "fr"),
    ]
    assert part_label("q:utm%5Fsource") == ("query", "utm_source")
    assert part_label("h:accept-language") == ("header", "accept-language")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/p/7", []),
        ("/p/7?", []),
        ("/a?b/c?d=1", [("q:b%2Fc%3Fd", "1")]),  # "?" and "/" in the query are escaped
        ("/p/7?x=1#frag", [("q:x", "1")]),  # a fragment (`~frag`) is no query part
        ("/p/a&b=c", []),  # "&" and "=" in the path are not query parts
    ],
)
def test_query_parts_come_only_from_the_query(url: str, expected: list[tuple[str, str]]) -> None:
    assert key_parts(stored_key(url, ()), PREFIX) == expected


def test_a_shortened_key_loses_only_the_parameter_it_was_cut_in() -> None:
    url = "/p/7?a=1&b=2&z=" + "x" * 400
    base = keys.bound_length(keys.default_key("get_product", URL(url)), 120)
    assert keys.HASHED_MARKER in base
    assert key_parts(base, PREFIX) == [("q:a", "1"), ("q:b", "2")]


def test_template_keys_have_no_query_parts_and_hashed_suffixes_no_headers() -> None:
    assert key_parts("product:7?x=1#lang=fr", None) == [("h:lang", "fr")]
    assert key_parts("other_handler:/p?x=1", PREFIX) == []  # not this handler's default key
    long_suffix = keys.compose("product:7", "#lang=" + "f" * 500, 100)
    assert key_parts(long_suffix, None) == []


def windows(*counts: tuple[int, int]) -> tuple[WindowCount, ...]:
    """Complete windows (distinct, new), oldest first, then an empty current one."""
    made = [WindowCount(i * WINDOW_SECONDS, d, n) for i, (d, n) in enumerate(counts)]
    return (*made, WindowCount(len(counts) * WINDOW_SECONDS, 0, 0))


GROWING = ((500, 480), (600, 590), (550, 549))
UTM = {"q:utm%5Fsource": 1_800, "q:page": 3, "h:host": 1}


@pytest.mark.parametrize(
    ("recent", "parts", "grows", "names"),
    [
        # enough windows, each mostly new keys, enough of them: growing
        (GROWING, UTM, True, "'utm_source' has ~1,800 distinct values"),
        # only the last GROWTH_WINDOWS complete windows are read
        (((5, 0), *GROWING), UTM, True, "utm_source"),
        # too few complete windows (a handler counted for 20 minutes)
        (GROWING[1:], UTM, False, None),
        # one window with mostly old keys: a working set that repeats
        (((500, 480), (600, 200), (550, 549)), UTM, False, None),
        # half new is still growth; just under half is not
        (((500, 250), (600, 300), (550, 275)), UTM, True, "utm_source"),
        (((500, 249), (600, 300), (550, 275)), UTM, False, None),
        # too few new keys to matter
        (((99, 99), (99, 99), (99, 99)), UTM, False, None),
        (((100, 100), (100, 100), (100, 100)), {"q:x": 300}, True, "'x'"),
        # no part with values reaching half the new keys: the paths differ
        (GROWING, {"q:page": 3, "h:host": 1}, True, "no query parameter or Vary header"),
        (GROWING, {}, True, "no query parameter or Vary header"),
        # a Vary header, or the host, at fault
        (GROWING, {"h:accept-language": 900, "q:page": 3}, True, "vary on 'accept-language'"),
        (GROWING, {"h:host": 1_000}, True, "the host has ~1,000 distinct values"),
    ],
)
def test_the_growth_rule(
    recent: tuple[tuple[int, int], ...], parts: dict[str, int], grows: bool, names: str | None
) -> None:
    figures = KeyFigures(10_000, windows(*recent), parts)
    found = growth(figures)
    assert (found is not None) == grows
    if found is not None:
        assert names is not None and names in found.message
        assert found.message.startswith("keys keep growing: ~")


def test_the_current_window_is_not_read() -> None:
    # Two complete growing windows plus a busy current one: not yet three complete ones.
    partial = (*windows(*GROWING[:2])[:-1], WindowCount(2 * WINDOW_SECONDS, 900, 900))
    assert growth(KeyFigures(5_000, partial, UTM)) is None
    assert GROWTH_WINDOWS == 3 and MIN_NEW_KEYS == 100


def test_the_cause_names_the_part_with_most_values() -> None:
    found = growth(KeyFigures(9_000, windows(*GROWING), {"q:a": 700, "q:b": 1_600, "h:x": 900}))
    assert found is not None and found.cause == "q:b" and found.cause_values == 1_600
    assert found.new_per_window == (480 + 590 + 549) // 3


def test_the_report() -> None:
    figures = KeyFigures(1_234, windows(*GROWING)[-RECENT_WINDOWS:], UTM)
    shown = report(figures)
    assert shown["distinct_keys"] == 1_234 and shown["growing"] is True
    assert "utm_source" in shown["warning"]
    assert shown["windows"][0] == {
        "start": "1970-01-01T00:00:00+00:00",
        "distinct_keys": 500,
        "new_keys": 480,
    }
    assert shown["key_parts"] == [
        {"kind": "query", "name": "utm_source", "distinct_values": 1_800},
        {"kind": "query", "name": "page", "distinct_values": 3},
        {"kind": "header", "name": "host", "distinct_values": 1},
    ]
    quiet = report(KeyFigures(3, windows((3, 3)), {}))
    assert quiet["growing"] is False and quiet["warning"] is None
