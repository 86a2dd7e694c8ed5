"""`invalidation`: unsafe methods purge what they change (RFC 9111 §4.4), purge by parameters."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from cachekit import cached
from tests.apps import make_app, make_store


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
