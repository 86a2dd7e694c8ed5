"""Parsing of the caching header fields (cachekit.directives): Cache-Control, Vary,
Connection, delta-seconds, and which header lines are stored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit import directives
from cachekit.directives import (
    connection_listed,
    delta_seconds,
    header_values,
    parse_cache_control,
    storable_headers,
    vary_names,
)

# ------------------------------------------------------------------ Cache-Control parsing


class TestParseCacheControl:
    @pytest.mark.parametrize("value", [None, "", "   ", ",", " , ,"])
    def test_empty_values_give_no_directives(self, value: str | None) -> None:
        assert parse_cache_control(value) == {}

    def test_names_are_lower_cased_and_values_kept(self) -> None:
        assert parse_cache_control("Public, MAX-AGE=60, No-Transform") == {
            "public": None,
            "max-age": "60",
            "no-transform": None,
        }

    def test_whitespace_around_names_and_values_is_ignored(self) -> None:
        assert parse_cache_control("  max-age = 30 ,\tpublic  ") == {
            "max-age": "30",
            "public": None,
        }

    def test_quoted_values_are_unquoted(self) -> None:
        assert parse_cache_control('max-age="120"') == {"max-age": "120"}

    def test_commas_inside_quotes_do_not_split_directives(self) -> None:
        parsed = parse_cache_control('no-cache="Set-Cookie, X-Foo", max-age=5')
        assert parsed == {"no-cache": "Set-Cookie, X-Foo", "max-age": "5"}

    def test_value_case_is_preserved(self) -> None:
        assert parse_cache_control('private="X-Secret"') == {"private": "X-Secret"}

    def test_empty_argument_differs_from_no_argument(self) -> None:
        assert parse_cache_control("max-age=") == {"max-age": ""}
        assert parse_cache_control("max-age") == {"max-age": None}

    def test_only_the_first_equals_sign_splits(self) -> None:
        assert parse_cache_control("ext=a=b") == {"ext": "a=b"}

    def test_nameless_parts_are_skipped(self) -> None:
        assert parse_cache_control("=5, public") == {"public": None}

    @given(
        st.lists(
            st.tuples(
                st.from_regex(r"[a-z][a-z-]{0,10}", fullmatch=True),
                st.none() | st.from_regex(r"[0-9]{1,6}", fullmatch=True),
            ),
            max_size=6,
            unique_by=lambda pair: pair[0],
        )
    )
    def test_round_trip_of_generated_directives(
        self, directives: list[tuple[str, str | None]]
    ) -> None:
        text = ", ".join(name if value is None else f"{name}={value}" for name, value in directives)
        assert parse_cache_control(text.upper()) == dict(directives)


class TestSmallHelpers:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("0", 0), ("60", 60), ("007", 7), ("31536000", 31536000)],
    )
    def test_delta_seconds_accepts_digits(self, value: str, expected: int) -> None:
        assert delta_seconds(value) == expected

    @pytest.mark.parametrize("value", [None, "", "-1", "+5", "1.5", "abc", " 5", "5s", "٣", "1e3"])
    def test_delta_seconds_rejects_malformed(self, value: str | None) -> None:
        assert delta_seconds(value) is None

    def test_header_values_is_case_insensitive_and_ordered(self) -> None:
        lines = [("Vary", "a"), ("X", "1"), ("vary", "b"), ("VARY", "c")]
        assert header_values(lines, "vAry") == ["a", "b", "c"]
        assert header_values(lines, "missing") == []

    def test_vary_names_lowercases_and_deduplicates(self) -> None:
        assert vary_names(["Accept-Encoding, ACCEPT-language", " accept-encoding ,,", ""]) == [
            "accept-encoding",
            "accept-language",
        ]

    def test_connection_listed(self) -> None:
        assert connection_listed(["close, X-Hop", "Keep-Alive"]) == frozenset(
            {"close", "x-hop", "keep-alive"}
        )


# ------------------------------------------------------------------ storable_headers


class TestStorableHeaders:
    @pytest.mark.parametrize(
        "name",
        sorted(directives.HOP_BY_HOP | directives.NOT_STORED),
    )
    def test_hop_by_hop_and_recomputed_headers_are_dropped(self, name: str) -> None:
        for spelling in (name, name.upper(), name.title()):
            kept = storable_headers([("Content-Type", "text/plain"), (spelling, "x")])
            assert kept == [("Content-Type", "text/plain")]

    def test_content_length_is_dropped(self) -> None:
        lines = [("Content-Length", "12"), ("ETag", '"a"')]
        assert storable_headers(lines) == [("ETag", '"a"')]

    def test_connection_listed_headers_are_dropped(self) -> None:
        lines = [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("x-hop", "2"),
            ("X-Kept", "3"),
            ("connection", "X-Other"),
            ("X-OTHER", "4"),
        ]
        assert storable_headers(lines) == [("X-Kept", "3")]

    def test_repeats_and_order_and_spelling_are_kept(self) -> None:
        lines = [
            ("Link", "</a>; rel=preload"),
            ("Content-Type", "text/html"),
            ("link", "</b>; rel=preload"),
            ("X-Thing", "é ünïcode"),
            ("Link", "</c>; rel=preload"),
        ]
        assert storable_headers(lines) == lines

    def test_accepts_a_generator(self) -> None:
        lines = [("Connection", "x-a"), ("X-A", "1"), ("X-B", "2")]
        assert storable_headers(line for line in lines) == [("X-B", "2")]

    def test_empty(self) -> None:
        assert storable_headers([]) == []

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["Content-Type", "X-A", "x-b", "Connection", "Content-Length", "Age", "TE"]
                ),
                st.sampled_from(["1", "x-a", "X-B, te", ""]),
            ),
            max_size=12,
        )
    )
    def test_result_is_an_ordered_subsequence_without_dropped_names(
        self, lines: list[tuple[str, str]]
    ) -> None:
        kept = storable_headers(lines)
        listed = connection_listed(v for n, v in lines if n.lower() == "connection")
        dropped = directives.HOP_BY_HOP | directives.NOT_STORED | listed
        assert kept == [line for line in lines if line[0].lower() not in dropped]


def test_unclosed_quote_cannot_hide_no_store() -> None:
    assert "no-store" in parse_cache_control('ext="oops, no-store')
