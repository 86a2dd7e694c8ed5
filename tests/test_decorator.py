"""`decorator`: `cached()` itself: arguments checked at import, views, no setup_cache, disabled."""

from __future__ import annotations

from collections import Counter

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cachekit import cached
from cachekit.backends.memory import MemoryStore
from tests.apps import make_app


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_disabled_runs_as_if_undecorated(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/d")
    @cached(ttl=30)
    async def handler(request: web.Request) -> web.Response:
        calls["d"] += 1
        return web.Response(text="d")

    client = await aiohttp_client(make_app(routes, enabled=False)[0])
    for _ in range(3):
        response = await client.get("/d")
        assert "X-Cache" not in response.headers and "Cache-Status" not in response.headers
    assert calls["d"] == 3


async def test_view_methods_are_cached_under_class_dot_method(aiohttp_client) -> None:
    calls: Counter[str] = Counter()

    class ProductView(web.View):
        @cached(ttl=30)
        async def get(self) -> web.Response:
            calls["get"] += 1
            return web.Response(text="view")

    app, cache = make_app(web.RouteTableDef())
    app.router.add_view("/view", ProductView)
    client = await aiohttp_client(app)
    await client.get("/view")
    assert (await client.get("/view")).headers["X-Cache"] == "HIT"
    assert calls["get"] == 1
    assert isinstance(cache.store, MemoryStore)
    assert next(iter(cache.store._entries)).startswith("ProductView.get:")


async def test_missing_setup_cache_is_a_clear_error() -> None:
    @cached(ttl=1)
    async def orphan(request: web.Request) -> web.Response:
        return web.Response(text="x")

    request = make_mocked_request("GET", "/", app=web.Application())
    with pytest.raises(RuntimeError, match=r"setup_cache\(app\)"):
        await orphan(request)


def test_decorator_arguments_are_validated_at_import_time() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ValueError, match="ttl"):
        cached(ttl=-1)(handler)
    with pytest.raises(ValueError, match="unknown field"):
        cached(key="{nope}")(handler)
    with pytest.raises(ValueError, match="statuses"):
        cached(statuses=[99])(handler)
    with pytest.raises(TypeError, match="async"):
        cached()(lambda request: None)  # type: ignore[arg-type,return-value]
