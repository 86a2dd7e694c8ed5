"""Small builders shared by the integration tests: apps, stores and settings."""

from __future__ import annotations

from typing import Any

import fakeredis
from aiohttp import web

from cachekit import Cache, CacheSettings, setup_cache
from cachekit.backends.base import Store
from cachekit.backends.memory import MemoryStore
from cachekit.backends.redis import RedisStore

NAMESPACE = "test"


def settings(**overrides: Any) -> CacheSettings:
    """Validated settings; conftest clears CACHEKIT_* variables so only these apply."""
    values: dict[str, Any] = {"namespace": NAMESPACE, "redis_url": None}
    values.update(overrides)
    return CacheSettings(**values)


def make_store(kind: str, redis_url: str | None = None, timeout: float = 0.5) -> Store:
    """A store of the given kind: memory, fakeredis or redis (needs `redis_url`)."""
    if kind == "memory":
        return MemoryStore(64 << 20)
    if kind == "fakeredis":
        return RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, timeout)
    assert redis_url is not None
    return RedisStore.from_url(redis_url, NAMESPACE, timeout)


def make_app(
    routes: web.RouteTableDef, store: Store | None = None, **overrides: Any
) -> tuple[web.Application, Cache]:
    """An app serving `routes` with a cache on `store` (the embedded one by default)."""
    app = web.Application()
    app.add_routes(routes)
    cache = setup_cache(app, settings(**overrides), store=store)
    return app, cache


#: The stores a test parametrized by `store_kind` (tests/conftest.py) runs against.
STORE_KINDS = ("memory", "fakeredis", "redis")


def store_for(request: Any, kind: str) -> Store:
    """A store of `kind` for a test: on "redis", one of our own servers (`real_redis_url`)."""
    url = request.getfixturevalue("real_redis_url") if kind == "redis" else None
    return make_store(kind, url)


async def client_for(
    aiohttp_client: Any, request: Any, kind: str, routes: web.RouteTableDef, **overrides: Any
) -> Any:
    """A test client of an app serving `routes` with a cache on a store of `kind`."""
    app, _ = make_app(routes, store=store_for(request, kind), **overrides)
    return await aiohttp_client(app)

