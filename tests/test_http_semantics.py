"""HTTP semantics: ETags and 304, learned Vary, directives, unsafe-method and handler purges."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached, get_cache, tag
from cachekit.conditional import none_match, not_modified, parse_etags
from cachekit.entry import body_etag
from tests.apps import make_app, make_store


def test_etag_lists_star_and_weak_comparison() -> None:
    assert parse_etags('"a", W/"b" ,"c"') == ['"a"', 'W/"b"', '"c"']
    assert parse_etags(" * ") is None
    assert parse_etags('junk, "ok"') == ['"ok"']
    assert none_match('W/"x"', '"x"') and none_match('"y", "x"', 'W/"x"')
    assert none_match("*", '"anything"') and not none_match('"y"', '"x"')


def test_not_modified_rules() -> None:
    lines = [("Last-Modified", "Tue, 01 Jan 2030 00:00:00 GMT")]
    assert not_modified(200, '"e"', lines, '"e"', None)
    assert not not_modified(404, '"e"', lines, '"e"', None)  # only 2xx entries
    assert not_modified(200, '"e"', lines, None, "Wed, 02 Jan 2030 00:00:00 GMT")
    assert not not_modified(200, '"e"', lines, None, "Mon, 31 Dec 2029 00:00:00 GMT")
    # If-None-Match wins over If-Modified-Since.
    assert not not_modified(200, '"e"', lines, '"other"', "Wed, 02 Jan 2030 00:00:00 GMT")
    assert not not_modified(200, '"e"', [], None, "Wed, 02 Jan 2030 00:00:00 GMT")


def etag_routes(calls: Counter[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/doc")
    @cached(ttl=30)
    async def doc(request: web.Request) -> web.Response:
        calls["doc"] += 1
        return web.Response(
            text="document", headers={"Cache-Control": "max-age=30", "X-Extra": "dropped-in-304"}
        )

    @routes.get("/gone")
    @cached(ttl=30)
    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="gone")

    return routes


async def test_entries_carry_a_deterministic_strong_etag(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    miss = await client.get("/doc")
    hit = await client.get("/doc")
    assert miss.headers["ETag"] == hit.headers["ETag"] == body_etag(b"document")
    assert hit.headers["ETag"].startswith('"') and not hit.headers["ETag"].startswith("W/")


async def test_if_none_match_answers_304_on_hits_and_misses(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    etag = body_etag(b"document")
    first = await client.get("/doc", headers={"If-None-Match": f'"x", W/{etag}'})
    assert first.status == 304 and await first.read() == b""
    assert calls["doc"] == 1  # produced after the handler ran and the entry was stored
    second = await client.get("/doc", headers={"If-None-Match": etag})
    assert second.status == 304 and second.headers["X-Cache"] == "HIT"
    assert second.headers["ETag"] == etag and second.headers["Cache-Control"] == "max-age=30"
    assert "X-Extra" not in second.headers
    full = await client.get("/doc", headers={"If-None-Match": '"stale"'})
    assert full.status == 200 and await full.text() == "document"
    assert calls["doc"] == 1


async def test_no_304_for_a_404_entry(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    for _ in range(2):
        response = await client.get("/gone", headers={"If-None-Match": "*"})
        assert response.status == 404


async def test_vary_is_learned_from_responses(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()
    calls: Counter[str] = Counter()

    @routes.get("/greet")
    @cached(ttl=30)
    async def greet(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        calls[language] += 1
        return web.Response(text=f"hello in {language}", headers={"Vary": "accept-language"})

    client = await aiohttp_client(make_app(routes)[0])
    texts = []
    for language in ["fr", "de", "fr", "de", " fr"]:
        response = await client.get("/greet", headers={"Accept-Language": language.strip()})
        texts.append(await response.text())
    assert texts == ["hello in fr", "hello in de"] * 2 + ["hello in fr"]
    assert calls == {"fr": 1, "de": 1}


async def test_learned_vary_reaches_other_processes_through_stubs(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    routes = web.RouteTableDef()
    calls: Counter[str] = Counter()

    @routes.get("/greet")
    @cached(ttl=30)
    async def greet(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        calls[language] += 1
        return web.Response(text=language, headers={"Vary": "Accept-Language"})

    one = await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])
    two = await aiohttp_client(make_app(routes, store=make_store("redis", real_redis_url))[0])

    def lang(value: str) -> dict[str, str]:  # one site behind a load balancer: one Host
        return {"Accept-Language": value, "Host": "shop.example"}

    assert await (await one.get("/greet", headers=lang("fr"))).text() == "fr"
    # The second app has not learned the Vary yet: the stub sends it to the right variant.
    hit = await two.get("/greet", headers=lang("fr"))
    assert hit.headers["X-Cache"] == "HIT" and await hit.text() == "fr"
    other = await two.get("/greet", headers=lang("de"))
    assert other.headers["X-Cache"] == "MISS" and await other.text() == "de"
    assert calls == {"fr": 1, "de": 1}


async def test_variants_per_url_are_capped(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/v")
    @cached(ttl=30, vary=["X-Variant"])
    async def variant(request: web.Request) -> web.Response:
        return web.Response(text=request.headers["X-Variant"])

    app, cache = make_app(routes, max_variants=4)
    client = await aiohttp_client(app)
    statuses = []
    for n in range(10):
        response = await client.get("/v", headers={"X-Variant": str(n)})
        statuses.append(response.headers["Cache-Status"])
    assert statuses.count("cachekit; fwd=miss; stored") == 4
    assert cache.stats()["entries"] == 4


async def test_emit_cache_control_downstream(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/plain")
    @cached(ttl=60, emit_cache_control=True)
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="p")

    @routes.get("/own")
    @cached(ttl=60, emit_cache_control=True)
    async def own(request: web.Request) -> web.Response:
        return web.Response(text="o", headers={"Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})

    @routes.get("/off")
    @cached(ttl=60)
    async def off(request: web.Request) -> web.Response:
        return web.Response(text="x")

    client = await aiohttp_client(make_app(routes)[0])
    for path in ("/plain", "/own", "/off"):
        await client.get(path)
    assert (await client.get("/plain")).headers["Cache-Control"].startswith("public, max-age=")
    own_hit = await client.get("/own")
    assert "Cache-Control" not in own_hit.headers
    assert own_hit.headers["Expires"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert "Cache-Control" not in (await client.get("/off")).headers


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


async def test_unsafe_methods_invalidate_the_path(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()
    state = {"price": 1}

    @routes.get("/items/{id}")
    @cached(ttl=60, key="item:{match_info[id]}")
    async def show(request: web.Request) -> web.Response:
        return web.json_response(state)

    @routes.post("/items/{id}")
    async def update(request: web.Request) -> web.Response:
        state["price"] += 1
        if "fail" in request.query:
            raise web.HTTPBadRequest()
        if "redirect" in request.query:
            raise web.HTTPSeeOther(location="/items/2")
        return web.json_response(state)

    client = await aiohttp_client(make_app(routes)[0])
    assert (await (await client.get("/items/1")).json())["price"] == 1
    assert (await client.post("/items/1?fail")).status == 400
    assert (await (await client.get("/items/1")).json())["price"] == 1  # failed: kept
    await client.post("/items/1")
    assert (await (await client.get("/items/1")).json())["price"] == 3
    await client.get("/items/2")
    await client.post("/items/1?redirect", allow_redirects=False)
    assert (await client.get("/items/2")).headers["X-Cache"] == "MISS"  # Location purged


async def test_unsafe_invalidation_can_be_switched_off(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.route("*", "/x")
    @cached(ttl=60)
    async def anything(request: web.Request) -> web.Response:
        return web.Response(text=request.method)

    client = await aiohttp_client(make_app(routes, invalidate_on_unsafe=False)[0])
    await client.get("/x")
    await client.post("/x")
    assert (await client.get("/x")).headers["X-Cache"] == "HIT"


@pytest.mark.parametrize("kind", ["memory", "fakeredis"])
async def test_purge_a_handler_by_its_parameters(kind: str, aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/products/{id}")
    @cached(ttl=60, vary=["Accept-Language"])
    async def get_product(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    @routes.get("/named/{id}")
    @cached(ttl=60, key="named:{match_info[id]}")
    async def get_named(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    app, cache = make_app(routes, store=make_store(kind))
    client = await aiohttp_client(app)
    for language in ("fr", "de"):
        for path in ("/products/7", "/products/8", "/named/7"):
            await client.get(path, headers={"Accept-Language": language})
    assert await cache.invalidate(get_product, id="7") == 2  # both Vary variants
    assert await cache.invalidate(get_named, id=7) == 1
    fresh = [
        (await client.get(path, headers={"Accept-Language": "fr"})).headers["X-Cache"]
        for path in ("/products/7", "/products/8", "/named/7")
    ]
    assert fresh == ["MISS", "HIT", "MISS"]
    with pytest.raises(TypeError, match="parameters"):
        await cache.invalidate("named:7", id="7")


async def test_runtime_tags_and_cache_tag_header(aiohttp_client: Any) -> None:
    routes = web.RouteTableDef()

    @routes.get("/a")
    @cached(ttl=60)
    async def a(request: web.Request) -> web.Response:
        tag(request, "product:7")
        return web.Response(text="a")

    @routes.get("/b")
    @cached(ttl=60)
    async def b(request: web.Request) -> web.Response:
        return web.Response(text="b", headers={"Cache-Tag": "product:7, shelf:2"})

    app, cache = make_app(routes)
    client = await aiohttp_client(app)
    first_b = await client.get("/b")
    assert "Cache-Tag" not in first_b.headers  # stripped before sending
    await client.get("/a")
    assert "Cache-Tag" not in (await client.get("/b")).headers
    assert await get_cache(app).invalidate_tags("product:7") == 2
    assert cache.stats()["entries"] == 0


ETAG_OF_BODY = """
import sys
from cachekit.entry import body_etag
sys.stdout.write(body_etag(b"same body everywhere"))
"""


def test_etag_is_equal_across_processes() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", ETAG_OF_BODY],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert outputs == {body_etag(b"same body everywhere")}
