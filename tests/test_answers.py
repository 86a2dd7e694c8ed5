"""`answers`: responses made from entries and fill outcomes, and the headers cachekit adds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from cachekit import cached
from tests.apps import make_app


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_age_and_cache_status_headers(aiohttp_client) -> None:
    routes, _ = counted()

    @routes.get("/a")
    @cached(ttl=42)
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="a")

    client = await aiohttp_client(make_app(routes)[0])
    miss = await client.get("/a")
    hit = await client.get("/a")
    assert miss.headers["Cache-Status"] == "cachekit; fwd=miss; stored"
    assert "Age" not in miss.headers
    assert hit.headers["Cache-Status"].startswith("cachekit; hit; ttl=4")
    assert hit.headers["Age"] == "0"


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
