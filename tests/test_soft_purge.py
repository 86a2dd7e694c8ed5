"""Soft purges (Fastly's): entries marked stale, served while one fill refreshes them.

On every store: the embedded one, fakeredis, a real Redis, a Redis Cluster and Sentinel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from aiohttp import web

from cachekit import cached, load_settings, setup_cache
from cachekit.backends.redis import RedisStore
from cachekit.entry import CachedResponse
from cachekit.purging import soft_purged
from tests.apps import NAMESPACE, settings
from tests.redis_servers import RedisSentinelSetup

STORES = ["memory", "fakeredis", "redis", "cluster", "sentinel"]
ITEM = web.AppKey("item", Any)


@pytest.fixture
async def cache_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    kind = request.param
    if kind == "memory":
        yield {"settings": settings()}
    elif kind == "fakeredis":
        store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
        yield {"settings": settings(), "store": store}
    elif kind == "redis":
        yield {"settings": settings(redis_url=request.getfixturevalue("real_redis_url"))}
    elif kind == "cluster":
        url = request.getfixturevalue("cluster_url")
        yield {"settings": settings(redis_url=url, redis_mode="cluster", redis_timeout=5.0)}
    else:
        sentinel: RedisSentinelSetup = request.getfixturevalue("redis_sentinel")
        host, port = sentinel.sentinels[0]
        yield {
            "settings": load_settings(
                namespace=NAMESPACE,
                redis_mode="sentinel",
                redis_url=f"redis://{host}:{port}",
                redis_sentinel_service=sentinel.service_name,
                redis_timeout=2.0,
            )
        }


def catalogue(calls: dict[str, int], stale_ttl: float, delay: float = 0.2) -> web.Application:
    """GET /items/{n}, tagged `t`, 60 s fresh, `stale_ttl` s stale; the handler is slow."""
    routes = web.RouteTableDef()

    @routes.get("/items/{n}")
    @cached(ttl=60, stale_ttl=stale_ttl, tags=["t"])
    async def item(request: web.Request) -> web.Response:
        n = request.match_info["n"]
        calls[n] = calls.get(n, 0) + 1
        run = calls[n]
        await asyncio.sleep(delay)
        return web.Response(text=f"item {n} run {run}")

    app = web.Application()
    app.add_routes(routes)
    app[ITEM] = item
    return app


async def start(aiohttp_client: Any, config: dict[str, Any], app: web.Application) -> Any:
    cache = setup_cache(app, config["settings"], store=config.get("store"))
    return await aiohttp_client(app), cache


async def settled(client: Any, path: str, body: str, seconds: float = 10.0) -> Any:
    """GET `path` until it answers `body` (a refresh runs in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(path)
        if await response.text() == body or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("cache_settings", STORES, indirect=True)
@pytest.mark.parametrize("how", ["tag", "key"])
async def test_a_soft_purge_serves_stale_while_one_fill_refreshes(
    aiohttp_client: Any, cache_settings: dict[str, Any], how: str
) -> None:
    calls: dict[str, int] = {}
    app = catalogue(calls, stale_ttl=30)
    client, cache = await start(aiohttp_client, cache_settings, app)
    assert (await client.get("/items/1")).headers["X-Cache"] == "MISS"
    assert (await client.get("/items/1")).headers["X-Cache"] == "HIT"
    if how == "tag":
        assert await cache.invalidate_tags("t", soft=True) >= 1
    else:
        assert await cache.invalidate(app[ITEM], soft=True, n="1") == 1
    burst = await asyncio.gather(*(client.get("/items/1") for _ in range(50)))
    assert {r.status for r in burst} == {200}
    assert {await r.text() for r in burst} == {"item 1 run 1"}  # nobody waited for the fill
    assert {r.headers["X-Cache"] for r in burst} == {"STALE"}
    assert all("fwd=stale" in r.headers["Cache-Status"] for r in burst)
    fresh = await settled(client, "/items/1", "item 1 run 2")
    assert await fresh.text() == "item 1 run 2"
    assert (await client.get("/items/1")).headers["X-Cache"] == "HIT"
    assert calls["1"] == 2, "one fill refreshed the soft-purged entry"


@pytest.mark.parametrize("cache_settings", ["memory", "fakeredis", "redis"], indirect=True)
async def test_a_soft_purge_without_a_stale_window_is_a_hard_one(
    aiohttp_client: Any, cache_settings: dict[str, Any]
) -> None:
    calls: dict[str, int] = {}
    client, cache = await start(aiohttp_client, cache_settings, catalogue(calls, 0, delay=0))
    await client.get("/items/1")
    await cache.invalidate_tags("t", soft=True)
    response = await client.get("/items/1")
    assert response.headers["X-Cache"] == "MISS"
    assert await response.text() == "item 1 run 2"


@pytest.mark.parametrize("cache_settings", ["memory", "fakeredis", "redis"], indirect=True)
async def test_a_hard_purge_is_still_the_default(
    aiohttp_client: Any, cache_settings: dict[str, Any]
) -> None:
    calls: dict[str, int] = {}
    client, cache = await start(aiohttp_client, cache_settings, catalogue(calls, 30, delay=0))
    await client.get("/items/1")
    await cache.invalidate_tags("t")
    response = await client.get("/items/1")
    assert response.headers["X-Cache"] == "MISS"
    assert await response.text() == "item 1 run 2"


@pytest.mark.parametrize("cache_settings", ["memory", "fakeredis", "redis"], indirect=True)
async def test_a_soft_purged_entry_is_a_miss_once_its_stale_window_has_passed(
    aiohttp_client: Any, cache_settings: dict[str, Any]
) -> None:
    calls: dict[str, int] = {}
    client, cache = await start(aiohttp_client, cache_settings, catalogue(calls, 0.5, delay=0))
    await client.get("/items/1")
    await cache.invalidate_tags("t", soft=True)
    await asyncio.sleep(0.7)
    response = await client.get("/items/1")
    assert response.headers["X-Cache"] == "MISS"
    assert await response.text() == "item 1 run 2"


@pytest.mark.parametrize("cache_settings", ["memory", "fakeredis", "redis"], indirect=True)
async def test_soft_purges_in_a_row_keep_serving_stale(
    aiohttp_client: Any, cache_settings: dict[str, Any]
) -> None:
    """Two edits in a row on a hot tag (two soft purges before a refresh) still answer
    stale with one refresh: no stampede."""
    calls: dict[str, int] = {}
    client, cache = await start(aiohttp_client, cache_settings, catalogue(calls, 30))
    await client.get("/items/1")
    await cache.invalidate_tags("t", soft=True)
    await cache.invalidate_tags("t", soft=True)
    burst = await asyncio.gather(*(client.get("/items/1") for _ in range(20)))
    assert {r.headers["X-Cache"] for r in burst} == {"STALE"}
    assert (await settled(client, "/items/1", "item 1 run 2")).status == 200
    assert calls["1"] == 2


@pytest.mark.parametrize("cache_settings", ["memory", "fakeredis", "redis"], indirect=True)
async def test_a_second_purge_voids_what_a_soft_one_left(
    aiohttp_client: Any, cache_settings: dict[str, Any]
) -> None:
    """Only the entries current before a soft purge are stale-servable; a later hard purge
    (or a second soft one, for entries already soft-purged) makes them misses."""
    calls: dict[str, int] = {}
    client, cache = await start(aiohttp_client, cache_settings, catalogue(calls, 30, delay=0))
    await client.get("/items/1")
    await cache.invalidate_tags("t", soft=True)
    await cache.invalidate_tags("t")
    response = await client.get("/items/1")
    assert response.headers["X-Cache"] == "MISS"


def test_soft_purged_ends_freshness_at_the_purge() -> None:
    entry = CachedResponse(200, (), b"x", stored_at=1000.0, ttl=60, grace=30)
    view = soft_purged(entry, 1010.0)
    assert view is not None
    assert (view.fresh_until, view.stale_until, view.body) == (1010.0, 1040.0, b"x")
    assert soft_purged(entry, 2000.0) is entry  # already stale then
    assert soft_purged(CachedResponse(200, (), b"x", 1000.0, 60), 1010.0) is None
    kept_for_errors = CachedResponse(200, (), b"x", 1000.0, 60, stale_if_error=300)
    assert soft_purged(kept_for_errors, 1010.0) is not None


async def test_a_soft_purge_reaches_another_process_near_cache(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    """Two app processes' caches on one Redis, each with a near cache: a soft purge made by
    one is answered stale, then refreshed once, by the other."""
    near = {"redis_url": real_redis_url, "redis_timeout": 2.0, "near_cache_max_bytes": 1 << 20}
    calls_a: dict[str, int] = {}
    calls_b: dict[str, int] = {}
    app_a, app_b = catalogue(calls_a, 30, delay=0), catalogue(calls_b, 30, delay=0)
    cache_a = setup_cache(app_a, settings(**near))
    cache_b = setup_cache(app_b, settings(**near))
    client_a, client_b = await aiohttp_client(app_a), await aiohttp_client(app_b)
    host = {"Host": "shop.test"}  # one host, so both apps' requests share keys
    assert isinstance(cache_b.store, RedisStore) and cache_b.store.near_cache is not None
    near_b = cache_b.store.near_cache
    await cache_b.store.get("warm-up")  # a lookup starts B's invalidation listener
    for _ in range(250):
        if near_b.live:
            break
        await asyncio.sleep(0.02)
    assert near_b.live
    assert (await client_a.get("/items/1", headers=host)).headers["X-Cache"] == "MISS"
    for _ in range(5):  # into B's near cache
        assert (await client_b.get("/items/1", headers=host)).headers["X-Cache"] == "HIT"
    assert cache_b.stats()["near_hits"] >= 1, "B answers from its near cache"
    await cache_a.invalidate_tags("t", soft=True)
    await asyncio.sleep(0.2)  # B's invalidation message (sub-millisecond on loopback)
    stale = await client_b.get("/items/1", headers=host)
    assert (stale.headers["X-Cache"], await stale.text()) == ("STALE", "item 1 run 1")
    seen = []
    for _ in range(100):
        fresh = await client_b.get("/items/1", headers=host)
        seen.append((fresh.headers["X-Cache"], fresh.headers["Cache-Status"], await fresh.text()))
        if fresh.headers["X-Cache"] == "HIT":
            break
        await asyncio.sleep(0.05)
    assert seen[0][0] in ("STALE", "HIT"), seen
    assert (fresh.headers["X-Cache"], await fresh.text()) == ("HIT", "item 1 run 1")
    assert calls_b == {"1": 1} and calls_a == {"1": 1}, "B refreshed it once"
