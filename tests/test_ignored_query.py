"""Ignored query parameters (`ignore_query_params`): tracking parameters are left out of
default keys, and handlers on the default key never see them (else they would be unkeyed
inputs: cache poisoning). Decision tables for the patterns and the setting, properties of
the cheap pre-check and the narrowed URL, and the story end to end on every store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from cachekit import SettingsError, cached, get_cache
from cachekit.ignored_query import IgnoredQuery, compiled, parse_patterns
from cachekit.settings import load_settings
from cachekit.testing import CacheClock, assert_cache
from tests.apps import make_app, make_store

DEFAULT = ("utm_*", "fbclid", "gclid", "msclkid")


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("patterns", "name", "ignored"),
    [
        (DEFAULT, "utm_source", True),
        (DEFAULT, "utm_", True),
        (DEFAULT, "utm_source_platform", True),
        (DEFAULT, "fbclid", True),
        (DEFAULT, "gclid", True),
        (DEFAULT, "msclkid", True),
        # Names are case-sensitive, as in request.query: these are other parameters.
        (DEFAULT, "UTM_source", False),
        (DEFAULT, "Utm_source", False),
        (DEFAULT, "FBCLID", False),
        # Whole names only.
        (DEFAULT, "utm", False),
        (DEFAULT, "xutm_source", False),
        (DEFAULT, "fbclid2", False),
        (DEFAULT, "my_gclid", False),
        (DEFAULT, "", False),
        (DEFAULT, "utm_\nx", True),  # `*` matches any characters, newlines too
        # Only `*` is special: dots, brackets and the like are themselves.
        (("a.b",), "a.b", True),
        (("a.b",), "axb", False),
        (("ids[]",), "ids[]", True),
        (("ids[]",), "i", False),
        (("a*b*c",), "abc", True),
        (("a*b*c",), "a-b-c", True),
        (("a*b*c",), "a-c", False),
        (("*_id",), "session_id", True),
        (("*_id",), "session_idx", False),
        (("*",), "anything", True),
        (("*",), "", True),
    ],
)
def test_which_names_are_ignored(patterns: tuple[str, ...], name: str, ignored: bool) -> None:
    assert IgnoredQuery(patterns).matches(name) is ignored


@pytest.mark.parametrize(
    ("value", "patterns"),
    [
        ("utm_*,fbclid", ("utm_*", "fbclid")),
        (" utm_* , fbclid ", ("utm_*", "fbclid")),
        ("", ()),
        ("  ", ()),
        ("a,a,b", ("a", "b")),
        (["ref", "ids[]"], ("ref", "ids[]")),
    ],
)
def test_setting_values(value: Any, patterns: tuple[str, ...]) -> None:
    assert parse_patterns(value) == patterns


@pytest.mark.parametrize("value", ["a,,b", "a,", "a b", "a%20b", "a=b", "a&b", "é", "a#"])
def test_invalid_values_stop_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CACHEKIT_IGNORE_QUERY_PARAMS", value)
    with pytest.raises(SettingsError, match="CACHEKIT_IGNORE_QUERY_PARAMS"):
        load_settings()


def test_the_default_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ignore_query_params == DEFAULT
    monkeypatch.setenv("CACHEKIT_IGNORE_QUERY_PARAMS", "")
    assert load_settings().ignore_query_params == ()
    assert compiled(()) is None


# --------------------------------------------------------------------------- properties

# Name and value tokens, with escapes of the characters patterns are made of (`%5F` is
# `_`, `%63` is `c`) and of separators, `+` for a space, and invalid UTF-8.
NAME_TOKENS = ["utm", "_", "%5F", "source", "fb", "clid", "fb%63lid", "g", "ms", "k", "UTM"]
VALUE_TOKENS = ["a", "+", "%20", "%26", "%3D", "utm_x", ";", "%ff", "=", ""]
names = st.lists(st.sampled_from(NAME_TOKENS), max_size=4).map("".join)
values = st.lists(st.sampled_from(VALUE_TOKENS), max_size=3).map("".join)
parameters = st.tuples(names, st.sampled_from(["=", ""]), values).map(
    lambda parts: parts[0] + (parts[1] + parts[2] if parts[1] else "")
)
raw_queries = st.lists(parameters, max_size=5).map("&".join)
pattern_sets = st.sampled_from([DEFAULT, ("utm_source",), ("*clid",), ("fb*", "*_k"), ("*",)])


@given(pattern_sets, raw_queries, st.sampled_from(["", "#frag"]))
def test_the_pre_check_misses_no_ignored_name_and_narrowing_keeps_the_rest(
    patterns: tuple[str, ...], raw_query: str, fragment: str
) -> None:
    ignored = IgnoredQuery(patterns)
    url = URL(f"/p/a%2Fb//c?{raw_query}{fragment}", encoded=True)
    parsed = list(url.query.items())
    kept = [(name, value) for name, value in parsed if not ignored.matches(name)]
    if len(kept) < len(parsed):
        assert ignored.may_apply(url.raw_query_string), "the cheap check must say maybe"
    narrowed = ignored.narrowed(url)
    if narrowed is None:
        assert len(kept) == len(parsed)
        return
    # What the handler will see: the other parameters in their order, duplicates kept,
    # the same raw path and fragment.
    assert list(narrowed.query.items()) == kept
    assert narrowed.raw_path == url.raw_path and narrowed.raw_fragment == url.raw_fragment


@pytest.mark.parametrize(
    ("raw_query", "maybe"),
    [
        ("page=2&sort=name", False),
        ("q=shoes", False),
        ("q=caf%C3%A9", False),  # an escape in a value only
        ("utm_source=x", True),
        ("utm%5Fsource=x", True),  # an escape in a name: decoded, it may be utm_source
        ("q=utm_x", True),  # maybe: the exact check then finds no such name
    ],
)
def test_the_pre_check_is_a_plain_search(raw_query: str, maybe: bool) -> None:
    assert IgnoredQuery(DEFAULT).may_apply(raw_query) is maybe


# --------------------------------------------------------------------------- end to end


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        request.getfixturevalue("real_redis_url")
    yield request.param


def seen_routes(seen: list[Any]) -> web.RouteTableDef:
    """Handlers recording the query they were handed (`seen`) and echoing it."""
    routes = web.RouteTableDef()

    def echo(request: web.Request, label: str) -> web.Response:
        query = list(request.query.items())
        seen.append((label, query, request.host, request.path, dict(request.match_info)))
        return web.json_response({"label": label, "query": query})

    @routes.get("/page")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        return echo(request, "page")

    @routes.get("/products/{id}")
    @cached(ttl=60)
    async def get_product(request: web.Request) -> web.Response:
        return echo(request, "product")

    @routes.get("/campaign")
    @cached(ttl=60, key="campaign:{query[utm_source]}")
    async def campaign(request: web.Request) -> web.Response:
        return echo(request, "campaign")

    @routes.get("/called")
    @cached(ttl=60, key=lambda request: "called")
    async def called(request: web.Request) -> web.Response:
        return echo(request, "called")

    @routes.get("/unless")
    @cached(ttl=60, unless=lambda request: request.query.get("nocache") == "1")
    async def unless(request: web.Request) -> web.Response:
        return echo(request, "unless")

    @routes.get("/slow")
    @cached(ttl=60)
    async def slow(request: web.Request) -> web.Response:
        seen.append(("slow", list(request.query.items())))
        await asyncio.sleep(0.1)
        return web.Response(text=f"slow {list(request.query.items())}")

    @routes.view("/view")
    class PageView(web.View):
        @cached(ttl=60)
        async def get(self) -> web.Response:
            return echo(self.request, "view")

    return routes


async def client_for(
    aiohttp_client: Any, request: pytest.FixtureRequest, kind: str, seen: list[Any], **options: Any
) -> Any:
    url = request.getfixturevalue("real_redis_url") if kind == "redis" else None
    app, _ = make_app(seen_routes(seen), store=make_store(kind, url), **options)
    return await aiohttp_client(app)


async def test_tracking_parameters_share_one_entry_the_handler_never_sees(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    first = await client.get("/page?utm_source=a")
    assert_cache(first, "MISS")
    second = await client.get("/page?utm_source=b")
    assert_cache(second, "HIT")
    plain = await client.get("/page")
    assert_cache(plain, "HIT")
    assert await second.json() == await plain.json() == {"label": "page", "query": []}
    assert [query for _, query, *_ in seen] == [[]], "one fill, without utm_source"


async def test_the_other_parameters_keep_their_order_and_duplicates(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    first = await client.get("/products/7?b=2&fbclid=X&a=1&utm_medium=m&b=1&gclid=Y")
    assert_cache(first, "MISS")
    await client.get("/products/8")
    (_, query, host, path, match_info), (*_, plain_host, _, _) = seen
    assert query == [("b", "2"), ("a", "1"), ("b", "1")]
    assert (host, path, match_info) == (plain_host, "/products/7", {"id": "7"})
    assert_cache(await client.get("/products/7?b=2&a=1&b=1"), "HIT")
    assert_cache(await client.get("/products/7?b=1&a=1&b=2"), "MISS")  # another order of b
    # Other spellings of an ignored name are other parameters (names are case-sensitive).
    upper = await client.get("/products/7?b=2&a=1&b=1&UTM_source=x")
    assert_cache(upper, "MISS")
    assert ["UTM_source", "x"] in (await upper.json())["query"]


async def test_a_key_template_naming_a_parameter_still_gets_it(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    for source, outcome in (("a", "MISS"), ("b", "MISS"), ("a", "HIT")):
        answer = await client.get(f"/campaign?utm_source={source}&fbclid=1")
        assert_cache(answer, outcome)
        assert (await answer.json())["query"] == [["utm_source", source], ["fbclid", "1"]]
    # A key callable says itself what it keys on: its handler sees the request as sent.
    called = await client.get("/called?utm_source=z")
    assert (await called.json())["query"] == [["utm_source", "z"]]


async def test_views_head_and_unless(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    """A view method and an unstored HEAD are handed the narrowed request too; a request
    `unless` bypasses reaches the handler as sent (the cache stays out of it)."""
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    assert_cache(await client.get("/view?utm_source=a&x=1"), "MISS")
    assert_cache(await client.get("/view?x=1&utm_campaign=b"), "HIT")
    assert (await client.head("/page?utm_source=a")).status == 200
    assert_cache(await client.get("/unless?utm_source=a"), "MISS")
    bypassed = await client.get("/unless?nocache=1&utm_source=a")
    assert_cache(bypassed, "BYPASS", "unless")
    assert [(label, query) for label, query, *_ in seen] == [
        ("view", [("x", "1")]),
        ("page", []),
        ("unless", []),
        ("unless", [("nocache", "1"), ("utm_source", "a")]),
    ]


async def test_requests_joining_a_fill_share_the_narrowed_answer(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    answers = await asyncio.gather(
        *(client.get(f"/slow?utm_source={n}&fbclid={n}") for n in range(10))
    )
    assert {await answer.text() for answer in answers} == {"slow []"}
    assert len(seen) == 1


async def test_off_when_the_setting_is_empty(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen, ignore_query_params="")
    assert_cache(await client.get("/page?utm_source=a"), "MISS")
    assert_cache(await client.get("/page?utm_source=b"), "MISS")
    assert [query for _, query, *_ in seen] == [[("utm_source", "a")], [("utm_source", "b")]]


async def test_purge_by_handler_parameters_reaches_the_entry(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    seen: list[Any] = []
    client = await client_for(aiohttp_client, request, store_kind, seen)
    assert_cache(await client.get("/products/3?utm_source=mail"), "MISS")
    cache = get_cache(client.app)
    handler = next(
        route.handler for route in client.app.router.routes() if "products" in str(route)
    )
    assert await cache.invalidate(handler, id="3") == 1
    assert_cache(await client.get("/products/3?fbclid=1"), "MISS")
    assert_cache(await client.get("/products/3"), "HIT")


async def test_a_request_aiohttp_cannot_clone_is_served_and_never_stored(
    aiohttp_client: Any,
) -> None:
    """A middleware read the body of the GET: aiohttp refuses to clone it, so the handler
    cannot be handed the narrowed request; its answer is neither stored nor shared."""
    seen: list[Any] = []

    @web.middleware
    async def reads_body(request: web.Request, handler: Any) -> web.StreamResponse:
        await request.read()
        return await handler(request)

    app, _ = make_app(seen_routes(seen))
    app.middlewares.append(reads_body)
    client = await aiohttp_client(app)
    for _ in range(2):
        answer = await client.get("/page?utm_source=a", data=b"body")
        assert_cache(answer, "MISS", "uncloneable")
    assert [query for _, query, *_ in seen] == [[("utm_source", "a")]] * 2


async def test_a_revalidation_of_an_absolute_form_target_keeps_its_host(
    aiohttp_client: Any, cache_clock: CacheClock
) -> None:
    """The request the handler is asked to revalidate with is a clone of the narrowed clone:
    it must keep the host aiohttp took from the absolute-form target (the key's), not fall
    back to the Host header, or one host's page would be stored under another's key."""
    hosts: list[str] = []
    routes = web.RouteTableDef()

    @routes.get("/rv")
    @cached(ttl=10)
    async def revalidated(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(text=f"for {request.host}", headers={"ETag": f'"{len(hosts)}"'})

    app, _ = make_app(routes)
    client = await aiohttp_client(app)

    async def raw(target: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(
            b"GET " + target + b" HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer.partition(b"\r\n\r\n")[2]

    assert await raw(b"http://victim.example/rv?utm_source=x") == b"for victim.example"
    cache_clock.advance(11)  # stale: the fill asks the handler with the entry's ETag
    assert await raw(b"http://victim.example/rv?utm_source=y") == b"for victim.example"
    assert hosts == ["victim.example", "victim.example"]
