"""Pure caching policy: Cache-Control parsing, storability, TTLs and stored headers."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachekit import policy
from cachekit.entry import CachedResponse
from cachekit.policy import (
    DEFAULT_STATUSES,
    Decision,
    admit,
    resolve_ttl,
    response_ttl,
    storable_decision,
)

NOW = 1_700_000_000.0


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def storable(
    lines: list[tuple[str, str]],
    *,
    status: int = 200,
    statuses: frozenset[int] = DEFAULT_STATUSES,
    body_size: int = 10,
    max_entry_bytes: int = 1000,
) -> Decision:
    return storable_decision(
        status,
        lines,
        statuses=statuses,
        body_size=body_size,
        max_entry_bytes=max_entry_bytes,
    )


# ------------------------------------------------------------------ storable_decision


class TestStorableDecision:
    def test_plain_200_is_allowed(self) -> None:
        decision = storable([("Content-Type", "text/plain")])
        assert decision == Decision(True)
        assert decision.allowed
        assert decision == policy.ALLOWED

    @pytest.mark.parametrize("status", sorted(DEFAULT_STATUSES))
    def test_every_default_status_is_storable(self, status: int) -> None:
        assert storable([], status=status).allowed

    @pytest.mark.parametrize("status", [201, 202, 206, 302, 303, 304, 307, 400, 401, 403, 429])
    def test_non_default_statuses_are_refused(self, status: int) -> None:
        assert storable([], status=status) == Decision(False, "status")

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
    def test_server_errors_are_refused(self, status: int) -> None:
        assert storable([], status=status) == Decision(False, "status")

    def test_custom_status_set(self) -> None:
        assert storable([], status=201, statuses=frozenset({201})).allowed
        assert storable([], status=200, statuses=frozenset({201})) == Decision(False, "status")

    def test_status_is_checked_before_headers(self) -> None:
        lines = [("Set-Cookie", "a=b"), ("Cache-Control", "no-store")]
        assert storable(lines, status=500) == Decision(False, "status")

    @pytest.mark.parametrize("name", ["Set-Cookie", "set-cookie", "SET-COOKIE"])
    def test_set_cookie_is_refused(self, name: str) -> None:
        assert storable([(name, "session=1")]) == Decision(False, "set-cookie")

    def test_empty_set_cookie_is_still_refused(self) -> None:
        assert storable([("Set-Cookie", "")]) == Decision(False, "set-cookie")

    @pytest.mark.parametrize(
        ("cache_control", "reason"),
        [
            ("no-store", "no-store"),
            ("public, max-age=60, NO-STORE", "no-store"),
            ("private", "private"),
            ('private="X-User"', "private"),
            ("no-cache", "no-cache"),
            ('no-cache="Set-Cookie, X-Foo"', "no-cache"),
            ("No-Cache, max-age=10", "no-cache"),
        ],
    )
    def test_cache_control_refusals(self, cache_control: str, reason: str) -> None:
        assert storable([("Cache-Control", cache_control)]) == Decision(False, reason)

    def test_directives_spread_over_several_lines_count(self) -> None:
        lines = [("Cache-Control", "public"), ("cache-control", "max-age=5"), ("X", "y")]
        assert storable(lines).allowed
        lines.append(("CACHE-CONTROL", "no-store"))
        assert storable(lines) == Decision(False, "no-store")

    def test_quoted_directive_names_do_not_count(self) -> None:
        # "no-store" inside a quoted argument is a field name, not a directive.
        assert storable([("Cache-Control", 'ext="no-store, private", max-age=5')]).allowed

    def test_no_store_beats_private_and_no_cache(self) -> None:
        lines = [("Cache-Control", "no-cache, private, no-store")]
        assert storable(lines) == Decision(False, "no-store")

    def test_public_and_max_age_are_allowed(self) -> None:
        assert storable([("Cache-Control", "public, max-age=600, must-revalidate")]).allowed

    @pytest.mark.parametrize("vary", ["*", "Accept-Encoding, *", " * "])
    def test_vary_star_is_refused(self, vary: str) -> None:
        assert storable([("Vary", vary)]) == Decision(False, "vary-star")

    def test_vary_star_on_a_later_line_is_refused(self) -> None:
        lines = [("Vary", "Accept-Encoding"), ("vary", "*")]
        assert storable(lines) == Decision(False, "vary-star")

    @pytest.mark.parametrize(
        "lines",
        [
            [("Vary", "Accept-Language")],
            [("Vary", "ACCEPT-Language, X-Tenant")],
            [("Vary", "Accept-Language"), ("vary", "Accept-Encoding")],
        ],
    )
    def test_vary_on_named_headers_is_storable(self, lines: list[tuple[str, str]]) -> None:
        # The cache learns the names and keys the entry on their values.
        assert storable(lines).allowed

    def test_empty_vary_is_harmless(self) -> None:
        assert storable([("Vary", ""), ("Vary", " , ")]).allowed

    def test_too_large_body_is_refused(self) -> None:
        assert storable([], body_size=1001, max_entry_bytes=1000) == Decision(False, "too-large")

    def test_body_exactly_at_the_limit_is_allowed(self) -> None:
        assert storable([], body_size=1000, max_entry_bytes=1000).allowed
        assert storable([], body_size=0, max_entry_bytes=1000).allowed

    def test_reason_order(self) -> None:
        # set-cookie before cache-control before vary before size.
        everything = [
            ("Set-Cookie", "a=1"),
            ("Cache-Control", "private"),
            ("Vary", "*"),
        ]
        assert storable(everything, body_size=10**9).reason == "set-cookie"
        assert storable(everything[1:], body_size=10**9).reason == "private"
        assert storable(everything[2:], body_size=10**9).reason == "vary-star"
        assert storable([("Vary", "X-Other")], body_size=10**9).reason == "too-large"
        assert storable([], body_size=10**9).reason == "too-large"


# ------------------------------------------------------------------ response_ttl


class TestResponseTtl:
    def test_no_freshness_information(self) -> None:
        assert response_ttl([("Content-Type", "text/html")], NOW) is None
        assert response_ttl([("Cache-Control", "public")], NOW) is None

    def test_max_age(self) -> None:
        assert response_ttl([("Cache-Control", "max-age=60")], NOW) == 60.0

    def test_max_age_zero(self) -> None:
        assert response_ttl([("Cache-Control", "max-age=0")], NOW) == 0.0

    def test_quoted_and_upper_case_max_age(self) -> None:
        assert response_ttl([("cache-control", 'MAX-AGE="45"')], NOW) == 45.0

    def test_s_maxage_beats_max_age_in_either_order(self) -> None:
        assert response_ttl([("Cache-Control", "max-age=60, s-maxage=5")], NOW) == 5.0
        assert response_ttl([("Cache-Control", "s-maxage=500, max-age=60")], NOW) == 500.0
        lines = [("Cache-Control", "max-age=60"), ("Cache-Control", "s-maxage=7")]
        assert response_ttl(lines, NOW) == 7.0

    def test_s_maxage_beats_expires(self) -> None:
        lines = [("Cache-Control", "s-maxage=9"), ("Expires", http_date(NOW + 1000))]
        assert response_ttl(lines, NOW) == 9.0

    def test_malformed_s_maxage_falls_back_to_max_age(self) -> None:
        assert response_ttl([("Cache-Control", "s-maxage=soon, max-age=30")], NOW) == 30.0

    @pytest.mark.parametrize("bad", ["max-age=-5", "max-age=1.5", "max-age=abc", "max-age"])
    def test_malformed_max_age_is_ignored(self, bad: str) -> None:
        assert response_ttl([("Cache-Control", bad)], NOW) is None

    def test_malformed_max_age_falls_back_to_expires(self) -> None:
        lines = [("Cache-Control", "max-age=x"), ("Expires", http_date(NOW + 120))]
        assert response_ttl(lines, NOW) == 120.0

    def test_max_age_beats_expires(self) -> None:
        lines = [("Expires", http_date(NOW + 1000)), ("Cache-Control", "max-age=3")]
        assert response_ttl(lines, NOW) == 3.0

    def test_expires_relative_to_now_without_date(self) -> None:
        assert response_ttl([("Expires", http_date(NOW + 300))], NOW) == 300.0

    def test_expires_relative_to_date_header(self) -> None:
        # The origin's clock is an hour behind ours: the lifetime is Expires - Date.
        origin_now = NOW - 3600
        lines = [("Date", http_date(origin_now)), ("Expires", http_date(origin_now + 90))]
        assert response_ttl(lines, NOW) == 90.0

    def test_invalid_date_header_falls_back_to_now(self) -> None:
        lines = [("Date", "garbage"), ("Expires", http_date(NOW + 40))]
        assert response_ttl(lines, NOW) == 40.0

    def test_expires_in_the_past_is_zero(self) -> None:
        assert response_ttl([("Expires", http_date(NOW - 300))], NOW) == 0.0

    @pytest.mark.parametrize("bad", ["0", "-1", "", "never", "Thu, 99 Zzz 2024"])
    def test_invalid_expires_means_already_expired(self, bad: str) -> None:
        assert response_ttl([("Expires", bad)], NOW) == 0.0

    def test_two_expires_lines_are_invalid_so_already_expired(self) -> None:
        # RFC 9111 §5.3: a cache recipient MUST interpret invalid Expires as in the past.
        lines = [("Expires", http_date(NOW + 10)), ("Expires", http_date(NOW + 999))]
        assert response_ttl(lines, NOW) == 0.0

    def test_date_at_the_epoch_is_still_a_date(self) -> None:
        lines = [("Date", http_date(0)), ("Expires", http_date(60))]
        assert response_ttl(lines, NOW) == 60.0


# ------------------------------------------------------------------ resolve_ttl


class TestResolveTtl:
    def test_override_beats_everything(self) -> None:
        assert resolve_ttl(1.0, 2.0, 3.0, 4.0) == 1.0

    def test_decorator_beats_declared_and_default(self) -> None:
        assert resolve_ttl(None, 2.0, 3.0, 4.0) == 2.0

    def test_declared_beats_default(self) -> None:
        assert resolve_ttl(None, None, 3.0, 4.0) == 3.0

    def test_default_when_nothing_else(self) -> None:
        assert resolve_ttl(None, None, None, 4.0) == 4.0

    def test_zero_is_a_value_not_absence(self) -> None:
        assert resolve_ttl(0.0, 2.0, 3.0, 4.0) == 0.0
        assert resolve_ttl(None, 0.0, 3.0, 4.0) == 0.0
        assert resolve_ttl(None, None, 0.0, 4.0) == 0.0
        assert resolve_ttl(None, None, None, 0.0) == 0.0

    def test_negative_values_are_clamped(self) -> None:
        assert resolve_ttl(-5.0, 2.0, 3.0, 4.0) == 0.0
        assert resolve_ttl(None, None, None, -1.0) == 0.0

    @given(
        st.none() | st.floats(0, 1e6),
        st.none() | st.floats(0, 1e6),
        st.none() | st.floats(0, 1e6),
        st.floats(0, 1e6),
    )
    def test_first_present_wins(
        self,
        override: float | None,
        decorator_ttl: float | None,
        declared: float | None,
        default: float,
    ) -> None:
        expected = next(v for v in (override, decorator_ttl, declared, default) if v is not None)
        assert resolve_ttl(override, decorator_ttl, declared, default) == expected


# ------------------------------------------------------------------ stale windows


class TestResponseStaleWindows:
    def test_absent(self) -> None:
        assert policy.response_stale_windows([("Cache-Control", "max-age=5")]) == (None, None)

    def test_both(self) -> None:
        lines = [("Cache-Control", "max-age=5, stale-while-revalidate=30, STALE-IF-ERROR=600")]
        assert policy.response_stale_windows(lines) == (30.0, 600.0)

    def test_malformed_values_are_ignored(self) -> None:
        lines = [("Cache-Control", "stale-while-revalidate=-1, stale-if-error")]
        assert policy.response_stale_windows(lines) == (None, None)

    def test_spread_over_lines(self) -> None:
        lines = [
            ("Cache-Control", "stale-if-error=9"),
            ("cache-control", "stale-while-revalidate=0"),
        ]
        assert policy.response_stale_windows(lines) == (0.0, 9.0)


# ------------------------------------------------------------------ admit


class TestRequestDecision:
    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    def test_safe_methods_are_allowed(self, method: str) -> None:
        assert admit(method, False, False) == policy.ALLOWED

    @pytest.mark.parametrize(
        "method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get", ""]
    )
    def test_other_methods_are_refused(self, method: str) -> None:
        assert admit(method, False, True) == Decision(False, "method")

    def test_authorization_without_keying_is_refused(self) -> None:
        assert admit("GET", True, False) == Decision(False, "authorization")

    def test_authorization_keyed_is_allowed(self) -> None:
        assert admit("GET", True, True).allowed
        assert admit("HEAD", True, True).allowed

    def test_keying_without_authorization_is_allowed(self) -> None:
        assert admit("GET", False, True).allowed

    def test_method_is_checked_first(self) -> None:
        assert admit("POST", True, False).reason == "method"


class TestRequestDirectives:
    @pytest.mark.parametrize("value", [None, ""])
    def test_absent_or_empty(self, value: str | None) -> None:
        assert policy.request_directives(value) == policy.NO_DIRECTIVES
        assert policy.RequestDirectives() == policy.NO_DIRECTIVES

    def test_all(self) -> None:
        parsed = policy.request_directives("No-Cache, no-store, MAX-AGE=10, only-if-cached")
        assert parsed == policy.RequestDirectives(
            no_cache=True, no_store=True, max_age=10, only_if_cached=True
        )

    def test_max_age_zero_is_not_absent(self) -> None:
        assert policy.request_directives("max-age=0").max_age == 0

    @pytest.mark.parametrize("value", ["max-age", "max-age=-1", "max-age=soon"])
    def test_malformed_max_age_is_none(self, value: str) -> None:
        assert policy.request_directives(value).max_age is None

    def test_unrelated_directives(self) -> None:
        assert policy.request_directives("public, foo=bar") == policy.NO_DIRECTIVES


# ------------------------------------------------------------------ decision tables
# The three decisions the request story executes, as tables: no server, no clock.


def _entry(**fields: object) -> CachedResponse:
    values: dict[str, object] = {
        "status": 200,
        "headers": (),
        "body": b"x",
        "stored_at": NOW,
        "ttl": 60.0,
        "grace": 30.0,
        "stale_if_error": 300.0,
    }
    values.update(fields)
    return CachedResponse(**values)  # type: ignore[arg-type]


class TestAdmitTable:
    @pytest.mark.parametrize(
        ("method", "authorization", "keyed", "expected"),
        [
            ("GET", False, False, Decision(True)),
            ("HEAD", False, False, Decision(True)),
            ("GET", True, False, Decision(False, "authorization")),
            ("GET", True, True, Decision(True)),
            ("HEAD", True, False, Decision(False, "authorization")),
            ("POST", False, False, Decision(False, "method")),
            ("POST", True, True, Decision(False, "method")),
            ("OPTIONS", False, False, Decision(False, "method")),
            ("get", False, False, Decision(False, "method")),  # aiohttp upper-cases methods
        ],
    )
    def test_table(self, method: str, authorization: bool, keyed: bool, expected: Decision) -> None:
        assert admit(method, authorization, keyed) == expected


class TestFreshnessTable:
    FRESH, STALE, MISS = policy.Freshness.FRESH, policy.Freshness.STALE, policy.Freshness.MISS
    NONE = policy.NO_DIRECTIVES

    @pytest.mark.parametrize(
        ("age", "directives", "expected"),
        [
            (0, NONE, FRESH),
            (59.9, NONE, FRESH),
            (60, NONE, STALE),  # fresh_until is exclusive
            (89.9, NONE, STALE),
            (90, NONE, MISS),  # past the stale-while-revalidate window
            (400, NONE, MISS),
            (0, policy.RequestDirectives(no_cache=True), MISS),
            (70, policy.RequestDirectives(no_cache=True), MISS),
            (10, policy.RequestDirectives(max_age=10), FRESH),
            (11, policy.RequestDirectives(max_age=10), MISS),
            (70, policy.RequestDirectives(max_age=100), MISS),  # max-age: no stale answers
            (10, policy.RequestDirectives(only_if_cached=True), FRESH),
            (70, policy.RequestDirectives(no_store=True), STALE),
        ],
    )
    def test_table(
        self, age: float, directives: policy.RequestDirectives, expected: policy.Freshness
    ) -> None:
        assert policy.freshness(_entry(), NOW + age, directives) is expected

    def test_nothing_stored_is_a_miss(self) -> None:
        assert policy.freshness(None, NOW, self.NONE) is self.MISS

    def test_a_vary_stub_is_no_answer(self) -> None:
        assert policy.freshness(_entry(vary_stub=True), NOW, self.NONE) is self.MISS

    def test_without_a_stale_window_expiry_is_a_miss(self) -> None:
        assert policy.freshness(_entry(grace=0.0), NOW + 60, self.NONE) is self.MISS

    @given(st.floats(0, 1000), st.floats(0, 100), st.floats(0, 100))
    def test_fresh_stale_and_miss_follow_the_deadlines(
        self, age: float, ttl: float, grace: float
    ) -> None:
        entry = _entry(ttl=ttl, grace=grace)
        verdict = policy.freshness(entry, NOW + age, self.NONE)
        if NOW + age < entry.fresh_until:
            assert verdict is self.FRESH
        elif NOW + age < entry.stale_until:
            assert verdict is self.STALE
        else:
            assert verdict is self.MISS


def _configured(**fields: float | None) -> policy.Configured:
    values: dict[str, float | None] = {
        "ttl_override": None,
        "ttl": None,
        "default_ttl": 300.0,
        "stale_ttl_override": None,
        "stale_ttl": None,
        "default_stale_ttl": 0.0,
        "stale_if_error": None,
        "default_stale_if_error": 0.0,
    }
    values.update(fields)
    return policy.Configured(**values)  # type: ignore[arg-type]


class TestLifetimeTable:
    @pytest.mark.parametrize(
        ("lines", "configured", "expected"),
        [
            # (ttl, grace, stale_if_error, stored_at offset)
            ([], {}, (300.0, 0.0, 0.0, 0.0)),
            ([("Cache-Control", "max-age=60")], {}, (60.0, 0.0, 0.0, 0.0)),
            ([("Cache-Control", "max-age=60")], {"ttl": 10.0}, (10.0, 0.0, 0.0, 0.0)),
            (
                [("Cache-Control", "max-age=60")],
                {"ttl": 10.0, "ttl_override": 5.0},
                (5.0, 0.0, 0.0, 0.0),
            ),
            (
                [("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=90")],
                {},
                (60.0, 30.0, 90.0, 0.0),
            ),
            (
                [("Cache-Control", "stale-while-revalidate=30")],
                {"stale_ttl": 7.0, "stale_if_error": 8.0},
                (300.0, 7.0, 8.0, 0.0),
            ),
            (
                [("Cache-Control", "stale-while-revalidate=30")],
                {"stale_ttl": 7.0, "stale_ttl_override": 2.0},
                (300.0, 2.0, 0.0, 0.0),
            ),
            # RFC 9111 §4.2.4: no stale answers after must-revalidate or s-maxage.
            (
                [("Cache-Control", "max-age=60, must-revalidate, stale-while-revalidate=30")],
                {"default_stale_if_error": 50.0},
                (60.0, 0.0, 0.0, 0.0),
            ),
            ([("Cache-Control", "s-maxage=20")], {"stale_ttl": 9.0}, (20.0, 0.0, 0.0, 0.0)),
            # RFC 9111 §4.2.3: an Age the response arrived with counts.
            ([("Age", "15"), ("Cache-Control", "max-age=60")], {}, (60.0, 0.0, 0.0, -15.0)),
            ([("Age", "junk")], {}, (300.0, 0.0, 0.0, 0.0)),
            ([("Expires", "0")], {}, (0.0, 0.0, 0.0, 0.0)),
        ],
    )
    def test_table(
        self,
        lines: list[tuple[str, str]],
        configured: dict[str, float],
        expected: tuple[float, float, float, float],
    ) -> None:
        facts = policy.response_facts(200, lines)
        life = policy.lifetime(facts, _configured(**configured), NOW)
        assert (life.ttl, life.grace, life.stale_if_error, life.stored_at - NOW) == expected


class TestResponseFacts:
    def test_cache_control_is_parsed_once_from_every_line(self) -> None:
        facts = policy.response_facts(
            203,
            [
                ("Cache-Control", "max-age=5"),
                ("cache-control", "private"),
                ("Vary", "Accept, accept-language"),
                ("Set-Cookie", "a=1"),
                ("Date", "d1"),
                ("Date", "d2"),
            ],
        )
        assert facts.status == 203
        assert facts.cache_control == {"max-age": "5", "private": None}
        assert facts.vary == ("accept", "accept-language")
        assert facts.set_cookie and facts.date == "d1" and facts.age is None

    @pytest.mark.parametrize(
        ("status", "lines", "expected"),
        [
            (200, [], Decision(True)),
            (500, [], Decision(False, "status")),
            (200, [("Set-Cookie", "a=1")], Decision(False, "set-cookie")),
            (200, [("Cache-Control", "no-store")], Decision(False, "no-store")),
            (200, [("Cache-Control", "private")], Decision(False, "private")),
            (200, [("Cache-Control", "no-cache")], Decision(False, "no-cache")),
            (200, [("Vary", "*")], Decision(False, "vary-star")),
            (200, [("Vary", "Accept")], Decision(True)),
        ],
    )
    def test_storable_table(
        self, status: int, lines: list[tuple[str, str]], expected: Decision
    ) -> None:
        facts = policy.response_facts(status, lines)
        decision = policy.storable(
            facts, statuses=DEFAULT_STATUSES, body_size=10, max_entry_bytes=1000
        )
        assert decision == expected


class TestStatusesWithExplicitFreshness:
    """RFC 9111 §3: any final status with explicit freshness may be stored; the decorator's
    own `statuses=` still wins."""

    @pytest.mark.parametrize("status", [302, 307, 400, 403, 500, 503])
    @pytest.mark.parametrize(
        "lines",
        [[("Cache-Control", "max-age=30")], [("Cache-Control", "s-maxage=5")], [("Expires", "0")]],
    )
    def test_explicit_freshness_makes_any_final_status_storable(
        self, status: int, lines: list[tuple[str, str]]
    ) -> None:
        facts = policy.response_facts(status, lines)
        assert policy.storable(
            facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=10
        ).allowed

    @pytest.mark.parametrize(
        ("status", "lines"),
        [
            (302, []),  # no explicit freshness: the allow-list applies
            (302, [("Cache-Control", "max-age=soon")]),  # an invalid max-age is none
            (206, [("Cache-Control", "max-age=30")]),  # partial content is never stored
            (304, [("Cache-Control", "max-age=30")]),
            (101, [("Cache-Control", "max-age=30")]),
        ],
    )
    def test_the_allow_list_applies_otherwise(
        self, status: int, lines: list[tuple[str, str]]
    ) -> None:
        facts = policy.response_facts(status, lines)
        decision = policy.storable(facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=9)
        assert decision == Decision(False, "status")

    def test_declared_statuses_win(self) -> None:
        facts = policy.response_facts(302, [("Cache-Control", "max-age=30")])
        decision = policy.storable(
            facts,
            statuses=frozenset({200}),
            statuses_declared=True,
            body_size=1,
            max_entry_bytes=9,
        )
        assert decision == Decision(False, "status")


class TestMustUnderstand:
    """RFC 9111 §5.2.2.3: must-understand lets a cache that understands the status ignore
    no-store."""

    def test_an_understood_status_is_stored_despite_no_store(self) -> None:
        facts = policy.response_facts(200, [("Cache-Control", "must-understand, no-store")])
        decision = policy.storable(facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=9)
        assert decision.allowed

    @pytest.mark.parametrize("status", [299, 418])
    def test_a_status_cachekit_does_not_understand_keeps_no_store(self, status: int) -> None:
        lines = [("Cache-Control", "must-understand, no-store, max-age=60")]
        facts = policy.response_facts(status, lines)
        decision = policy.storable(facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=9)
        assert decision == Decision(False, "no-store")

    def test_no_store_alone_still_wins(self) -> None:
        facts = policy.response_facts(200, [("Cache-Control", "no-store")])
        decision = policy.storable(facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=9)
        assert decision == Decision(False, "no-store")


class TestHeuristicFreshness:
    """RFC 9111 §4.2.2: 10 % of the time since Last-Modified, when asked and nothing else
    gives a lifetime."""

    DAY = 86400.0

    def lines(self, modified_ago: float, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [
            ("Date", http_date(NOW)),
            ("Last-Modified", http_date(NOW - modified_ago)),
            *extra,
        ]

    def life(self, status: int, lines: list[tuple[str, str]], **configured: float) -> float:
        settings = {"heuristic_max_ttl": self.DAY, "default_ttl": 300.0, **configured}
        facts = policy.response_facts(status, lines)
        return policy.lifetime(facts, _configured(**settings), NOW).ttl

    def test_ten_percent_of_the_age_of_the_content(self) -> None:
        assert self.life(200, self.lines(1000.0)) == 100.0

    def test_at_most_the_maximum(self) -> None:
        assert self.life(200, self.lines(100 * self.DAY)) == self.DAY

    def test_explicit_freshness_and_configured_ttls_win(self) -> None:
        assert self.life(200, self.lines(1000.0, ("Cache-Control", "max-age=7"))) == 7.0
        assert self.life(200, self.lines(1000.0), ttl=5.0) == 5.0
        assert self.life(200, self.lines(1000.0), ttl_override=3.0) == 3.0

    def test_only_for_statuses_cacheable_by_default_or_public(self) -> None:
        assert self.life(299, self.lines(1000.0)) == 300.0  # the default TTL
        assert self.life(299, self.lines(1000.0, ("Cache-Control", "public"))) == 100.0

    def test_without_a_valid_last_modified_the_default_applies(self) -> None:
        assert self.life(200, [("Last-Modified", "yesterday")]) == 300.0
        assert self.life(200, []) == 300.0

    def test_off_unless_asked(self) -> None:
        facts = policy.response_facts(200, self.lines(1000.0))
        assert policy.lifetime(facts, _configured(), NOW).ttl == 300.0


class TestTargetedCacheControl:
    """RFC 9213: a targeted field's valid directives replace Cache-Control for the cache's
    own decisions; an invalid one is ignored."""

    def facts(self, *lines: tuple[str, str]) -> policy.ResponseFacts:
        return policy.response_facts(200, list(lines), "CDN-Cache-Control")

    def test_the_targeted_field_wins(self) -> None:
        facts = self.facts(("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600"))
        assert facts.cache_control == {"max-age": "600"}
        assert policy.declared_ttl(facts, NOW) == 600.0
        storable = policy.storable(facts, statuses=DEFAULT_STATUSES, body_size=1, max_entry_bytes=9)
        assert storable.allowed

    @pytest.mark.parametrize(
        "value",
        ["max-age=60,", "Max-Age=60", "max-age=sixty=1", "max-age=1.2.3", "", 'max-age="60'],
    )
    def test_an_invalid_targeted_field_is_ignored(self, value: str) -> None:
        facts = self.facts(("Cache-Control", "max-age=5"), ("CDN-Cache-Control", value))
        assert facts.cache_control == {"max-age": "5"}

    def test_structured_field_booleans_and_strings(self) -> None:
        facts = self.facts(("CDN-Cache-Control", 'no-store=?0, private=?1, x="y z"'))
        assert facts.cache_control == {"private": None, "x": "y z"}

    def test_without_the_setting_the_field_is_not_read(self) -> None:
        lines = [("Cache-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=600")]
        assert policy.response_facts(200, lines).cache_control == {"max-age": "5"}
