"""`tagging`: tags named at run time, by `tag()` and by a `Cache-Tag` response header."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cachekit import cached, get_cache, tag
from tests.apps import make_app


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
