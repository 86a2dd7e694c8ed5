"""`serving`: the request story end to end: hits, HEAD, bypasses (method, Authorization,
`unless`, a failing key callable), the keys requests are served under, request directives."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web
from yarl import URL

from cachekit import cached
from cachekit.backends.memory import MemoryStore
from tests.apps import make_app


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_hit_replays_status_headers_and_exact_body(aiohttp_client) -> None:
    routes, calls = counted()
    body = bytes(range(256)) * 3

    @routes.get("/bin")
    @cached(ttl=30)
    async def binary(request: web.Request) -> web.Response:
        calls["bin"] += 1
        response = web.Response(
            body=body, status=203, content_type="application/x-thing", charset="latin-1"
        )
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Other", "between")
        response.headers.add("X-Multi", "two")
        return response

    client = await aiohttp_client(make_app(routes)[0])
    first = await client.get("/bin")
    second = await client.get("/bin")
    assert calls["bin"] == 1
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert second.status == 203
    assert await second.read() == body
    assert second.headers["Content-Type"] == "application/x-thing; charset=latin-1"
    lines = [(k, v) for k, v in second.headers.items() if k.startswith("X-M") or k == "X-Other"]
    assert lines == [("X-Multi", "one"), ("X-Other", "between"), ("X-Multi", "two")]


async def test_head_is_answered_from_the_get_entry(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/doc")
    @cached(ttl=30)
    async def doc(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text="full body")

    client = await aiohttp_client(make_app(routes)[0])
    assert await (await client.get("/doc")).text() == "full body"
    head = await client.head("/doc")
    assert head.status == 200 and head.headers["X-Cache"] == "HIT"
    assert await head.read() == b""
    assert head.headers["Content-Length"] == str(len("full body"))
    assert calls == {"GET": 1}


async def test_head_miss_never_becomes_the_get_entry(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/lazy")
    @cached(ttl=30)
    async def lazy(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text="" if request.method == "HEAD" else "the real body")

    client = await aiohttp_client(make_app(routes)[0])
    await client.head("/lazy")
    assert await (await client.get("/lazy")).text() == "the real body"


async def test_other_methods_go_to_the_handler(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.route("*", "/any")
    @cached(ttl=30)
    async def anything(request: web.Request) -> web.Response:
        calls[request.method] += 1
        return web.Response(text=request.method)

    client = await aiohttp_client(make_app(routes)[0])
    for _ in range(2):
        response = await client.post("/any")
        assert response.headers["X-Cache"] == "BYPASS"
        assert response.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=method"
    await client.put("/any")
    assert calls == {"POST": 2, "PUT": 1}


async def test_authorization_bypasses_unless_keyed(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/plain")
    @cached(ttl=30)
    async def plain(request: web.Request) -> web.Response:
        calls["plain"] += 1
        return web.Response(text=request.headers.get("Authorization", "anon"))

    @routes.get("/per-user")
    @cached(ttl=30, vary=["Authorization"])
    async def per_user(request: web.Request) -> web.Response:
        calls["per-user"] += 1
        return web.Response(text=request.headers.get("Authorization", "anon"))

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/plain")  # anonymous: stored
    alice = await client.get("/plain", headers={"Authorization": "Bearer alice"})
    assert await alice.text() == "Bearer alice"
    assert alice.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=authorization"

    texts = [
        await (await client.get("/per-user", headers={"Authorization": who})).text()
        for who in ("Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob")
    ]
    assert texts == ["Bearer alice", "Bearer bob", "Bearer alice", "Bearer bob"]
    assert calls["per-user"] == 2


async def test_hostile_query_and_path_input_never_share_a_key(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/echo/{tail:.*}")
    @cached(ttl=30)
    async def echo(request: web.Request) -> web.Response:
        # What the key promises to respect: the path and the query aiohttp parsed.
        return web.Response(text=repr((request.path, sorted(request.query.items()))))

    client = await aiohttp_client(make_app(routes)[0])
    paths = [
        "/echo/a?q=1&r=2",
        "/echo/a?q=1%26r%3D2",
        "/echo/a%3Fq=1&r=2",
        "/echo/a/b",
        "/echo/a%2Fb",
        "/echo/x?v=%FF",
        "/echo/x?v=%FE",
        "/echo/x?v=%7E",
        "/echo/x?v",
        "/echo/x?v=",
    ]
    fresh = {}
    for path in paths:
        url = URL(path, encoded=True)
        fresh[path] = repr((url.path, sorted(url.query.items())))
    for _ in range(2):
        for path in paths:
            response = await client.get(URL(path, encoded=True))
            assert await response.text() == fresh[path], path


async def test_query_order_is_canonical_but_repeats_keep_order(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/list")
    @cached(ttl=30)
    async def listing(request: web.Request) -> web.Response:
        calls["list"] += 1
        return web.Response(text=",".join(request.query.getall("t", [])))

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/list?a=1&t=x&t=y")
    assert (await client.get("/list?t=x&t=y&a=1")).headers["X-Cache"] == "HIT"
    reordered = await client.get("/list?t=y&t=x&a=1")
    assert reordered.headers["X-Cache"] == "MISS" and await reordered.text() == "y,x"


async def test_vary_headers_key_absent_apart_from_empty(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/lang")
    @cached(ttl=30, vary=["Accept-Language"])
    async def lang(request: web.Request) -> web.Response:
        calls["lang"] += 1
        return web.Response(text=repr(request.headers.get("Accept-Language")))

    client = await aiohttp_client(make_app(routes)[0])
    assert await (await client.get("/lang", skip_auto_headers=["Accept-Language"])).text() == "None"
    assert await (await client.get("/lang", headers={"Accept-Language": ""})).text() == "''"
    assert await (await client.get("/lang", headers={"Accept-Language": "fr"})).text() == "'fr'"
    assert await (await client.get("/lang", headers={"accept-language": "fr"})).text() == "'fr'"
    assert calls["lang"] == 3


async def test_key_template_callable_and_async_callable(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/t/{id}")
    @cached(ttl=30, key="item:{match_info[id]}")
    async def by_template(request: web.Request) -> web.Response:
        calls["t"] += 1
        return web.Response(text=request.match_info["id"])

    async def async_key(request: web.Request) -> str:
        return "page:" + request.query.get("page", "1")

    @routes.get("/pages")
    @cached(ttl=30, key=async_key)
    async def pages(request: web.Request) -> web.Response:
        calls["pages"] += 1
        return web.Response(text=request.query.get("page", "1"))

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    for path in ("/t/7", "/t/7?ignored=1", "/pages?page=2", "/pages?page=2&x=1", "/pages"):
        await client.get(path)
    assert calls == {"t": 1, "pages": 2}
    assert isinstance(cache.store, MemoryStore)
    assert set(cache.store._entries) == {"item:7", "page:2", "page:1"}


async def test_failing_key_callable_serves_uncached(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/k")
    @cached(ttl=30, key=lambda request: request.query["needed"])
    async def needs_param(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    response = await client.get("/k")
    assert response.status == 200 and response.headers["X-Cache"] == "BYPASS"
    assert cache.stats()["errors"] == 1


async def test_unless_bypasses(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/u")
    @cached(ttl=30, unless=lambda request: "fresh" in request.query)
    async def handler(request: web.Request) -> web.Response:
        calls["u"] += 1
        return web.Response(text="u")

    client = await aiohttp_client(make_app(routes)[0])
    await client.get("/u")
    await client.get("/u")
    bypassed = await client.get("/u?fresh")
    assert bypassed.headers["Cache-Status"] == "cachekit; fwd=bypass; detail=unless"
    assert calls["u"] == 2


async def test_request_directives_when_honoured(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()
    calls: Counter[str] = Counter()

    @routes.get("/d")
    @cached(ttl=60, honor_request_cache_control=True)
    async def directed(request: web.Request) -> web.Response:
        calls["d"] += 1
        return web.Response(text=f"v{calls['d']}")

    @routes.get("/ignored")
    @cached(ttl=60)
    async def ignored(request: web.Request) -> web.Response:
        calls["ignored"] += 1
        return web.Response(text="i")

    client = await aiohttp_client(make_app(routes)[0])

    async def text(path: str, directive: str | None = None) -> str:
        headers = {"Cache-Control": directive} if directive else {}
        response = await client.get(path, headers=headers)
        return f"{response.status}:{await response.text()}"

    assert await text("/d", "only-if-cached") == "504:"
    assert await text("/d") == "200:v1"
    assert await text("/d", "only-if-cached") == "200:v1"
    assert await text("/d", "no-cache") == "200:v2"  # refetched and stored
    assert await text("/d") == "200:v2"
    assert await text("/d", "no-store") == "200:v2"  # a stored copy may still answer
    assert await text("/d", "max-age=0") == "200:v2"  # age 0 is not older than 0
    await asyncio.sleep(1.1)
    assert await text("/d", "max-age=0") == "200:v3"
    await client.get("/ignored")
    await client.get("/ignored", headers={"Cache-Control": "no-cache"})
    assert calls["ignored"] == 1
