"""Revalidation with the handler (RFC 9111 §4.3, §3.2, §5.2.2.4): a stale or `no-cache`
entry is revalidated with the handler's own validators; a 304 refreshes it; the client
gets the full stored response (or its own 304), labelled REVALIDATED.

Pure decision tables first (`cachekit.revalidation`, `policy`), then through aiohttp on
the embedded store, fakeredis and a real Redis server."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cachekit import cached, not_modified, policy
from cachekit.entry import CachedResponse, body_etag
from cachekit.revalidation import conditional_headers, updated_lines, validators
from cachekit.testing import CacheClock, assert_cache
from tests.apps import client_for, make_app, make_store, store_for

LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"


def entry(lines: tuple[tuple[str, str], ...], *, handler_etag: bool) -> CachedResponse:
    etags = [value for name, value in lines if name == "ETag"]
    return CachedResponse(
        200, lines, b"body", 0.0, 10.0, etag=etags[0] if etags else "", handler_etag=handler_etag
    )


# ============================================================ pure: what is asked


class TestValidators:
    def test_the_handlers_etag_is_sent(self) -> None:
        stored = entry((("ETag", '"v1"'),), handler_etag=True)
        assert validators(stored) == (("If-None-Match", '"v1"'),)

    def test_cachekits_own_body_hash_is_never_sent(self) -> None:
        stored = entry((("ETag", body_etag(b"body")),), handler_etag=False)
        assert validators(stored) == ()

    def test_last_modified_is_sent_when_valid(self) -> None:
        stored = entry((("ETag", '"ours"'), ("Last-Modified", LAST_MODIFIED)), handler_etag=False)
        assert validators(stored) == (("If-Modified-Since", LAST_MODIFIED),)

    @pytest.mark.parametrize("value", ["yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", ""])
    def test_an_invalid_last_modified_is_not(self, value: str) -> None:
        stored = entry((("Last-Modified", value),), handler_etag=False)
        assert validators(stored) == ()

    def test_two_last_modified_lines_are_not(self) -> None:
        lines = (("Last-Modified", LAST_MODIFIED), ("Last-Modified", LAST_MODIFIED))
        assert validators(entry(lines, handler_etag=False)) == ()

    def test_both(self) -> None:
        lines = (("ETag", 'W/"v"'), ("Last-Modified", LAST_MODIFIED))
        assert validators(entry(lines, handler_etag=True)) == (
            ("If-None-Match", 'W/"v"'),
            ("If-Modified-Since", LAST_MODIFIED),
        )

    def test_the_clients_conditionals_are_replaced_by_ours(self) -> None:
        client = [
            ("Accept", "text/html"),
            ("If-None-Match", '"client"'),
            ("if-modified-since", LAST_MODIFIED),
            ("If-Match", "*"),
            ("If-Unmodified-Since", LAST_MODIFIED),
            ("If-Range", '"client"'),
            ("Range", "bytes=0-1"),
            ("X-Kept", "1"),
        ]
        headers = conditional_headers(client, [("If-None-Match", '"v1"')])
        assert list(headers.items()) == [
            ("Accept", "text/html"),
            ("X-Kept", "1"),
            ("If-None-Match", '"v1"'),
        ]


# ============================================================ pure: what a 304 updates


class TestUpdatedLines:
    """RFC 9111 §3.2: the 304's fields replace the stored ones of the same name."""

    STORED = (
        ("Content-Type", "application/json"),
        ("Cache-Control", "max-age=10"),
        ("ETag", '"v1"'),
        ("Link", "</a>"),
        ("Link", "</b>"),
        ("X-Old", "kept"),
    )

    def test_a_field_of_the_304_replaces_every_stored_line_of_that_name(self) -> None:
        lines = updated_lines(self.STORED, [("Link", "</c>"), ("Cache-Control", "max-age=99")])
        assert lines == (
            ("Content-Type", "application/json"),
            ("Cache-Control", "max-age=99"),
            ("ETag", '"v1"'),
            ("Link", "</c>"),
            ("X-Old", "kept"),
        )

    def test_new_fields_are_added_and_names_compare_without_case(self) -> None:
        lines = updated_lines(self.STORED, [("etag", '"v1"'), ("X-New", "1"), ("X-New", "2")])
        assert ("etag", '"v1"') in lines and ("ETag", '"v1"') not in lines
        assert lines[-2:] == (("X-New", "1"), ("X-New", "2"))

    @pytest.mark.parametrize(
        "name",
        [
            "Content-Length",
            "Content-Type",
            "Content-Encoding",
            "Transfer-Encoding",
            "Set-Cookie",
            "Connection",
            "Keep-Alive",
            "Age",
        ],
    )
    def test_fields_describing_the_body_cookies_and_hop_by_hop_ones_stay(self, name: str) -> None:
        assert updated_lines(self.STORED, [(name, "x")]) == self.STORED

    def test_fields_the_304s_connection_names_stay(self) -> None:
        assert updated_lines(self.STORED, [("Connection", "X-Old"), ("X-Old", "new")]) == (
            self.STORED
        )

    def test_an_empty_304_changes_nothing(self) -> None:
        assert updated_lines(self.STORED, []) == self.STORED


# ============================================================ pure: no-cache is stored


def facts(*lines: tuple[str, str]) -> policy.ResponseFacts:
    return policy.response_facts(200, list(lines))


def storable(*lines: tuple[str, str]) -> policy.Decision:
    return policy.storable(
        facts(*lines), statuses=policy.DEFAULT_STATUSES, body_size=1, max_entry_bytes=10
    )


class TestNoCache:
    """RFC 9111 §5.2.2.4: store, but revalidate before every reuse."""

    @pytest.mark.parametrize(
        "validator", [("ETag", '"v"'), ("ETag", 'W/"v"'), ("Last-Modified", LAST_MODIFIED)]
    )
    @pytest.mark.parametrize("value", ["no-cache", 'no-cache="Set-Cookie"', "public, no-cache"])
    def test_stored_with_a_validator(self, validator: tuple[str, str], value: str) -> None:
        assert storable(("Cache-Control", value), validator).allowed

    @pytest.mark.parametrize("validator", [None, ("Last-Modified", "not a date")])
    def test_not_stored_without_one(self, validator: tuple[str, str] | None) -> None:
        lines = [("Cache-Control", "no-cache")] + ([validator] if validator else [])
        assert storable(*lines) == policy.Decision(False, "no-cache")

    def test_no_store_still_wins(self) -> None:
        decision = storable(("Cache-Control", "no-cache, no-store"), ("ETag", '"v"'))
        assert decision == policy.Decision(False, "no-store")

    @pytest.mark.parametrize(("ttl", "kept"), [(60.0, 60.0), (0.0, policy.NO_CACHE_KEEP_SECONDS)])
    def test_lifetime_keeps_it_never_fresh_without_stale_windows(
        self, ttl: float, kept: float
    ) -> None:
        life = policy.lifetime(
            facts(("Cache-Control", "no-cache, stale-while-revalidate=30"), ("ETag", '"v"')),
            policy.Configured(
                ttl_override=None,
                ttl=None,
                default_ttl=ttl,
                stale_ttl_override=None,
                stale_ttl=None,
                default_stale_ttl=20,
                stale_if_error=None,
                default_stale_if_error=20,
            ),
            1000.0,
        )
        assert (life.no_cache, life.ttl, life.grace, life.stale_if_error) == (True, kept, 0, 0)


# ============================================================ pure: the handler's helper


class TestNotModifiedHelper:
    def request(self, **headers: str) -> web.Request:
        return make_mocked_request("GET", "/", headers=headers)

    @pytest.mark.parametrize("sent", ['"v1"', 'W/"v1"', '"v0", "v1"', '"v0", "v1"', "*"])
    def test_a_matching_etag_answers_304_with_it(self, sent: str) -> None:
        answer = not_modified(self.request(**{"If-None-Match": sent}), etag="v1")
        assert answer is not None and answer.status == 304 and answer.headers["ETag"] == '"v1"'

    @pytest.mark.parametrize("headers", [{}, {"If-None-Match": '"v0"'}, {"If-None-Match": "v1"}])
    def test_otherwise_none(self, headers: dict[str, str]) -> None:
        assert not_modified(self.request(**headers), etag='"v1"') is None

    @pytest.mark.parametrize(
        "last_modified", [784111777.0, datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC), LAST_MODIFIED]
    )
    def test_last_modified_in_any_form(self, last_modified: Any) -> None:
        same = self.request(**{"If-Modified-Since": LAST_MODIFIED})
        answer = not_modified(same, last_modified=last_modified)
        assert answer is not None and answer.headers["Last-Modified"] == LAST_MODIFIED
        earlier = self.request(**{"If-Modified-Since": "Sat, 05 Nov 1994 08:49:37 GMT"})
        assert not_modified(earlier, last_modified=last_modified) is None

    def test_if_none_match_takes_precedence(self) -> None:
        both = self.request(**{"If-None-Match": '"old"', "If-Modified-Since": LAST_MODIFIED})
        assert not_modified(both, etag='"new"', last_modified=LAST_MODIFIED) is None

    @pytest.mark.parametrize("last_modified", ["yesterday", datetime(1994, 11, 6, 8, 49, 37)])
    def test_a_bad_date_is_a_clear_error(self, last_modified: Any) -> None:
        with pytest.raises(ValueError, match=r"HTTP date|aware"):
            not_modified(self.request(), last_modified=last_modified)


# ============================================================ through aiohttp


class Origin:
    """A handler's world: the current version of its document, what it rendered, and the
    conditional headers each call received."""

    def __init__(self) -> None:
        self.version = "v1"
        self.renders = 0
        self.asked: list[tuple[str | None, str | None]] = []
        self.extra: dict[str, str] = {}


def etag_routes(origin: Origin, *, ttl: float = 10, **options: Any) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/doc")
    @cached(ttl=ttl, **options)
    async def doc(request: web.Request) -> web.Response:
        origin.asked.append(
            (request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since"))
        )
        if (unchanged := not_modified(request, etag=origin.version)) is not None:
            unchanged.headers.update(origin.extra)
            return unchanged
        origin.renders += 1
        return web.json_response(
            {"version": origin.version}, headers={"ETag": f'"{origin.version}"'}
        )

    return routes


async def test_a_stale_entry_is_revalidated_and_refreshed_by_a_304(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    origin = Origin()
    client = await client_for(aiohttp_client, request, store_kind, etag_routes(origin))
    assert_cache(await client.get("/doc"), "MISS")
    cache_clock.advance(11)
    revalidated = await client.get("/doc")
    assert_cache(revalidated, "REVALIDATED")
    assert revalidated.status == 200 and await revalidated.json() == {"version": "v1"}
    assert revalidated.headers["X-Cache"] == "REVALIDATED"
    assert revalidated.headers["Cache-Status"].startswith("cachekit; fwd=stale; fwd-status=304")
    assert revalidated.headers["ETag"] == '"v1"'
    assert int(revalidated.headers["Content-Length"]) == len(b'{"version": "v1"}')
    # Its freshness restarted: a hit for another 10 s.
    cache_clock.advance(9)
    assert_cache(await client.get("/doc"), "HIT")
    assert origin.renders == 1
    assert origin.asked == [(None, None), ('"v1"', None)]
    # Changed: the handler renders a 200, which replaces the entry.
    origin.version = "v2"
    cache_clock.advance(2)
    changed = await client.get("/doc")
    assert_cache(changed, "MISS")
    assert await changed.json() == {"version": "v2"}
    assert_cache(await client.get("/doc"), "HIT")
    assert origin.renders == 2


async def test_the_client_gets_its_own_304_and_its_conditionals_never_reach_the_handler(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    origin = Origin()
    client = await client_for(aiohttp_client, request, store_kind, etag_routes(origin))
    await client.get("/doc")
    cache_clock.advance(11)
    own = {"If-None-Match": '"v1"', "If-Modified-Since": LAST_MODIFIED, "Range": "bytes=0-1"}
    answer = await client.get("/doc", headers=own)
    assert answer.status == 304 and answer.headers["X-Cache"] == "REVALIDATED"
    cache_clock.advance(11)
    other = await client.get("/doc", headers={"If-None-Match": '"client-made-up"'})
    assert other.status == 200 and await other.json() == {"version": "v1"}
    assert origin.asked == [(None, None), ('"v1"', None), ('"v1"', None)]


async def test_a_304_updates_the_stored_headers(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    origin = Origin()
    routes = etag_routes(origin, ttl=None)
    client = await client_for(aiohttp_client, request, store_kind, routes, default_ttl=10)
    await client.get("/doc")
    cache_clock.advance(11)
    origin.extra = {
        "Cache-Control": "max-age=100",
        "X-Version-Checked": "yes",
        "Content-Length": "0",
    }
    revalidated = await client.get("/doc")
    assert revalidated.headers["Cache-Control"] == "max-age=100"
    assert revalidated.headers["X-Version-Checked"] == "yes"
    assert await revalidated.json() == {"version": "v1"}
    cache_clock.advance(60)  # fresh for the 304's max-age now, not the 10 s of before
    hit = await client.get("/doc")
    assert_cache(hit, "HIT")
    assert hit.headers["X-Version-Checked"] == "yes" and await hit.json() == {"version": "v1"}
    assert origin.renders == 1


async def test_a_raised_not_modified_revalidates_too(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    routes = web.RouteTableDef()
    renders = Counter[str]()

    @routes.get("/raised")
    @cached(ttl=10)
    async def raised(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"same"':
            raise web.HTTPNotModified(headers={"ETag": '"same"'})
        renders["raised"] += 1
        return web.Response(text="same", headers={"ETag": '"same"'})

    client = await client_for(aiohttp_client, request, store_kind, routes)
    await client.get("/raised")
    cache_clock.advance(11)
    answer = await client.get("/raised")
    assert_cache(answer, "REVALIDATED")
    assert answer.status == 200 and await answer.text() == "same"
    assert renders["raised"] == 1


async def test_last_modified_alone_is_revalidated_with_if_modified_since(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    routes = web.RouteTableDef()
    asked: list[dict[str, str]] = []

    @routes.get("/dated")
    @cached(ttl=10)
    async def dated(request: web.Request) -> web.Response:
        asked.append({k: v for k, v in request.headers.items() if k.lower().startswith("if-")})
        unchanged = not_modified(request, last_modified=LAST_MODIFIED)
        return unchanged or web.Response(text="dated", headers={"Last-Modified": LAST_MODIFIED})

    client = await client_for(aiohttp_client, request, store_kind, routes)
    await client.get("/dated")
    cache_clock.advance(11)
    assert_cache(await client.get("/dated"), "REVALIDATED")
    # cachekit's own ETag (a body hash) is never sent: only Last-Modified.
    assert asked == [{}, {"If-Modified-Since": LAST_MODIFIED}]


async def test_without_a_validator_of_its_own_the_handler_renders_anew(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    routes = web.RouteTableDef()
    asked: list[str | None] = []

    @routes.get("/plain")
    @cached(ttl=10)
    async def plain(request: web.Request) -> web.Response:
        asked.append(request.headers.get("If-None-Match"))
        return web.Response(text="plain")

    client = await client_for(aiohttp_client, request, store_kind, routes)
    first = await client.get("/plain")
    assert first.headers["ETag"] == body_etag(b"plain")
    cache_clock.advance(11)
    assert_cache(await client.get("/plain"), "MISS")
    assert asked == [None, None]


async def test_no_cache_is_stored_and_revalidated_before_every_reuse(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    origin = Origin()
    routes = web.RouteTableDef()

    @routes.get("/always")
    @cached(ttl=60)
    async def always(request: web.Request) -> web.Response:
        origin.asked.append((request.headers.get("If-None-Match"), None))
        if (unchanged := not_modified(request, etag=origin.version)) is not None:
            return unchanged
        origin.renders += 1
        return web.Response(
            text=origin.version,
            headers={"ETag": f'"{origin.version}"', "Cache-Control": "no-cache"},
        )

    @routes.get("/unvalidated")
    @cached(ttl=60)
    async def unvalidated(request: web.Request) -> web.Response:
        return web.Response(text="x", headers={"Cache-Control": "no-cache"})

    client = await client_for(aiohttp_client, request, store_kind, routes)
    assert_cache(await client.get("/always"), "MISS", reason=None)
    for _ in range(3):
        answer = await client.get("/always")
        assert_cache(answer, "REVALIDATED")
        assert await answer.text() == "v1" and answer.headers["Cache-Control"] == "no-cache"
    origin.version = "v2"
    assert await (await client.get("/always")).text() == "v2"
    assert origin.renders == 2 and len(origin.asked) == 5
    assert all(sent == '"v1"' for sent, _ in origin.asked[1:])
    assert_cache(await client.get("/unvalidated"), "MISS", reason="no-cache")


async def test_a_background_refresh_revalidates(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    origin = Origin()
    client = await client_for(
        aiohttp_client, request, store_kind, etag_routes(origin, stale_ttl=30)
    )
    await client.get("/doc")
    cache_clock.advance(11)
    assert_cache(await client.get("/doc"), "STALE")
    for _ in range(100):  # the refresh runs in the background
        if len(origin.asked) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert_cache(await client.get("/doc"), "HIT")
    assert origin.asked == [(None, None), ('"v1"', None)] and origin.renders == 1


async def test_concurrent_requests_share_one_revalidation(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    origin = Origin()
    gate = asyncio.Event()
    routes = web.RouteTableDef()

    @routes.get("/slow")
    @cached(ttl=10)
    async def slow(request: web.Request) -> web.Response:
        origin.asked.append((request.headers.get("If-None-Match"), None))
        await gate.wait()
        if (unchanged := not_modified(request, etag="v1")) is not None:
            return unchanged
        return web.Response(text="slow", headers={"ETag": '"v1"'})

    client = await client_for(aiohttp_client, request, store_kind, routes)
    gate.set()
    await client.get("/slow")
    gate.clear()
    cache_clock.advance(11)
    pending = [asyncio.ensure_future(client.get("/slow")) for _ in range(20)]
    await asyncio.sleep(0.1)
    gate.set()
    answers = await asyncio.gather(*pending)
    assert [await answer.text() for answer in answers] == ["slow"] * 20
    assert origin.asked == [(None, None), ('"v1"', None)]
    assert sorted({answer.headers["X-Cache"] for answer in answers}) == ["MISS", "REVALIDATED"]


async def test_a_class_based_view_is_revalidated(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    asked: list[str | None] = []

    class Doc(web.View):
        @cached(ttl=10)
        async def get(self) -> web.Response:
            asked.append(self.request.headers.get("If-None-Match"))
            return not_modified(self.request, etag="v") or web.Response(
                text="view", headers={"ETag": '"v"'}
            )

    routes = web.RouteTableDef()
    routes.view("/view")(Doc)
    client = await client_for(aiohttp_client, request, store_kind, routes)
    await client.get("/view")
    cache_clock.advance(11)
    answer = await client.get("/view")
    assert_cache(answer, "REVALIDATED")
    assert await answer.text() == "view" and asked == [None, '"v"']


async def test_a_fill_never_hands_one_clients_304_to_the_others(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    # The first request is conditional and runs the fill; the others join it. Were the
    # client's If-None-Match passed to the handler, its 304 would be shared with them.
    gate = asyncio.Event()
    asked: list[str | None] = []
    routes = web.RouteTableDef()

    @routes.get("/shared")
    @cached(ttl=10)
    async def shared(request: web.Request) -> web.Response:
        asked.append(request.headers.get("If-None-Match"))
        await gate.wait()
        return not_modified(request, etag="v1") or web.Response(
            text="full", headers={"ETag": '"v1"'}
        )

    client = await client_for(aiohttp_client, request, store_kind, routes)
    first = asyncio.ensure_future(client.get("/shared", headers={"If-None-Match": '"v1"'}))
    await asyncio.sleep(0.05)
    others = [asyncio.ensure_future(client.get("/shared")) for _ in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    conditional = await first
    assert conditional.status == 304 and conditional.headers["ETag"] == '"v1"'
    for answer in await asyncio.gather(*others):
        assert answer.status == 200 and await answer.text() == "full"
    assert asked == [None]


async def test_two_processes_share_one_revalidation(
    aiohttp_client: Any, real_redis_url: str, cache_clock: CacheClock
) -> None:
    # Two apps on one Redis (two workers): the fill lock holds for revalidations too.
    gate = asyncio.Event()
    asked: list[str | None] = []
    routes = web.RouteTableDef()

    @routes.get("/doc")
    @cached(ttl=10)
    async def doc(request: web.Request) -> web.Response:
        asked.append(request.headers.get("If-None-Match"))
        await gate.wait()
        return not_modified(request, etag="v1") or web.Response(
            text="doc", headers={"ETag": '"v1"'}
        )

    one, two = [
        await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])
        for _ in range(2)
    ]
    host = {"Host": "shop.example"}
    gate.set()
    await one.get("/doc", headers=host)
    gate.clear()
    cache_clock.advance(11)
    pending = [
        asyncio.ensure_future(client.get("/doc", headers=host))
        for client in (one, two)
        for _ in range(5)
    ]
    await asyncio.sleep(0.2)
    gate.set()
    answers = await asyncio.gather(*pending)
    assert [await answer.text() for answer in answers] == ["doc"] * 10
    assert asked == [None, '"v1"']
    assert {answer.headers["X-Cache"] for answer in answers} <= {"REVALIDATED", "MISS"}


async def test_a_revalidated_entry_keeps_its_content_codings(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str, cache_clock: CacheClock
) -> None:
    routes = web.RouteTableDef()
    page = "x" * 5000

    @routes.get("/big")
    @cached(ttl=10)
    async def big(request: web.Request) -> web.Response:
        return not_modified(request, etag="v") or web.Response(
            text=page, content_type="text/plain", headers={"ETag": '"v"'}
        )

    app, _ = make_app(routes, store=store_for(request, store_kind))
    client = await aiohttp_client(app, auto_decompress=False)
    await client.get("/big", headers={"Accept-Encoding": "gzip"})
    cache_clock.advance(11)
    revalidated = await client.get("/big", headers={"Accept-Encoding": "gzip"})
    assert_cache(revalidated, "REVALIDATED")
    assert revalidated.headers["Content-Encoding"] == "gzip"
    hit = await client.get("/big", headers={"Accept-Encoding": "gzip"})
    assert_cache(hit, "HIT")
    assert hit.headers["Content-Encoding"] == "gzip"


async def test_a_304_nobody_asked_for_is_never_shared_with_joined_requests(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    # A handler that answers 304 to an unconditional request (a bug of its own): the
    # requests that joined its fill run the handler themselves instead of getting a 304.
    gate = asyncio.Event()
    calls: list[int] = []
    routes = web.RouteTableDef()

    @routes.get("/odd")
    @cached(ttl=10)
    async def odd(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            await gate.wait()
            return web.Response(status=304)
        return web.Response(text="page")

    client = await client_for(aiohttp_client, request, store_kind, routes)
    first = asyncio.ensure_future(client.get("/odd"))
    await asyncio.sleep(0.05)
    others = [asyncio.ensure_future(client.get("/odd")) for _ in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    assert (await first).status == 304
    for answer in await asyncio.gather(*others):
        assert answer.status == 200 and await answer.text() == "page"
