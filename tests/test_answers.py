"""`answers`: responses made from entries and fill outcomes, and the headers that label them."""

from __future__ import annotations

from collections import Counter

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
