"""The default-key URL memo (cachekit/url_memo.py) answers exactly what the plain function does.

URLs are built the ways aiohttp's two parsers build `rel_url` (yarl from raw parts, or from
a whole target, encoded or not) out of hostile pieces: separators and their escapes, a
literal `#` left in a path, dot segments, broken and non-UTF-8 escapes, non-ASCII text.
Sequences run through one memo, so URLs that follow each other share its slots; end to end
over sockets, `tests/test_key_parity.py` covers the same path with aiohttp's parsers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from cachekit import url_memo
from cachekit.ignored_query import IgnoredQuery
from cachekit.keys import url_component
from cachekit.memo import BoundedMemo
from cachekit.url_memo import memoized_narrowed_component, memoized_url_component

TOKENS = [
    "item", "1", "a", "b", "/", "//", "#", "?", "&", "=", ";", "%2F", "%3F", "%23", "%25",
    "%26", "%3D", ".", "..", "+", "%20", "%2B", "%ff", "%C3%A9", "%", "~", "é", "\x00", " ",
    "utm_a", "utm%5Fb", "a*",
]  # fmt: skip
#: Settings the memo is shared between (one memo for every app of a process).
IGNORED = [None, IgnoredQuery(("utm_*", "fbclid")), IgnoredQuery(("a", "b*")), None]
pieces = st.lists(st.sampled_from(TOKENS), max_size=8).map("".join)


def _from_parts(path: str, query: str, fragment: str) -> URL | None:
    try:
        return URL.build(path="/" + path, query_string=query, fragment=fragment, encoded=True)
    except ValueError:
        return None


def _from_target(target: str, encoded: bool) -> URL | None:
    try:
        url = URL("/" + target, encoded=encoded)
    except ValueError:
        return None
    return url.relative() if url.absolute else url


urls = st.one_of(
    st.builds(_from_parts, pieces, pieces, pieces),
    st.builds(_from_target, pieces, st.booleans()),
).filter(lambda url: url is not None)


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(url_memo, "_COMPONENTS", BoundedMemo("test URLs", 64 << 10))


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(urls, min_size=1, max_size=12))
def test_the_memo_answers_what_the_function_does(sequence: list[URL]) -> None:
    url_memo._COMPONENTS.clear()
    for url in sequence + sequence[::-1]:
        assert memoized_url_component(url) == url_component(url)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(urls, st.sampled_from(IGNORED)), min_size=1, max_size=12))
def test_with_ignored_parameters_the_memo_answers_what_the_narrowed_url_gives(
    sequence: list[tuple[URL, IgnoredQuery | None]],
) -> None:
    url_memo._COMPONENTS.clear()
    for url, ignored in sequence + sequence[::-1]:
        # The key functions the handlers use read the memo inline: the same answers, first
        # seen or not, in either order with the component functions.
        request: Any = _Request(url)
        if ignored is None:
            assert url_memo.default_key("h:", request) == "h:" + url_component(url)
            assert memoized_url_component(url) == url_component(url)
        else:
            expected = url_component(ignored.apply(url) or url)
            assert memoized_narrowed_component(url, ignored) == expected
            assert url_memo.narrowed_default_key("h:", ignored, request) == "h:" + expected


class _Request:
    """What the key functions read of a request."""

    def __init__(self, url: URL) -> None:
        self.rel_url = url


def test_a_literal_hash_in_the_path_is_not_a_fragment() -> None:
    """aiohttp can hand a handler the path `/item/1#x` with a query: the memo must not take
    it for path `/item/1` with fragment `x?evil` (nor the reverse)."""
    in_path = URL.build(path="/item/1#x", query_string="evil=1", encoded=True)
    as_fragment = URL.build(path="/item/1", fragment="x?evil=1", encoded=True)
    first = memoized_url_component(in_path)
    second = memoized_url_component(as_fragment)
    assert first == url_component(in_path) and second == url_component(as_fragment)
    assert first != second


def test_the_memo_stays_within_its_budget() -> None:
    for n in range(5_000):
        memoized_url_component(URL(f"/items/{n}?utm_source={'x' * 400}&n={n}"))
    memo = url_memo._COMPONENTS
    assert 0 < memo.used_bytes <= memo.max_bytes
    assert url_memo.URL_COMPONENTS_MAX_BYTES == 1 << 20
