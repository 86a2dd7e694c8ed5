"""Purges hold whatever Redis evicts, and the first fill after a purge is stored.

Tag versions (cachekit/backends/tag_versions.py) make a purge hold without the tag index:
these tests run real Redis servers under each memory policy, let Redis evict for real,
take away what eviction may take (tag indexes, tag versions, the ticket) deterministically
too, and check that no entry a purge covered is served afterwards, on one server, a Redis
Cluster and a Sentinel-managed primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fakeredis
import pytest
import redis
from aiohttp import web

from cachekit import Cache, cached, load_settings, setup_cache
from cachekit.app import build_store
from cachekit.backends.redis import RedisStore
from cachekit.entry import CachedResponse
from tests.apps import NAMESPACE, settings
from tests.redis_servers import MakeRedisServer, RedisSentinelSetup

POLICIES = ["noeviction", "allkeys-lru", "allkeys-lfu", "volatile-lru"]
ENTRIES = 200
BODY = b"x" * 2048


def tagged_app(calls: dict[str, int]) -> web.Application:
    """GET /items/{n} tagged `t` (and its path); POST /items/{n} writes (purges the path)."""
    routes = web.RouteTableDef()

    @routes.get("/items/{n}")
    @cached(ttl=600, tags=["t"])
    async def item(request: web.Request) -> web.Response:
        n = request.match_info["n"]
        calls[n] = calls.get(n, 0) + 1
        return web.Response(body=BODY + f" item {n} run {calls[n]}".encode())

    @routes.post("/items/{n}")
    async def write(request: web.Request) -> web.Response:
        return web.Response(text="written")

    app = web.Application()
    app.add_routes(routes)
    return app


async def client_on(aiohttp_client: Any, calls: dict[str, int], **overrides: Any) -> Any:
    app = tagged_app(calls)
    cache = setup_cache(app, settings(redis_timeout=2.0, **overrides))
    return await aiohttp_client(app), cache


async def fill_all(client: Any) -> None:
    for n in range(ENTRIES):
        assert (await client.get(f"/items/{n}")).status == 200


async def served_hits(client: Any) -> list[int]:
    hits = []
    for n in range(ENTRIES):
        response = await client.get(f"/items/{n}")
        assert response.status == 200
        if response.headers["X-Cache"] == "HIT":
            hits.append(n)
    return hits


def drop(client: redis.Redis | redis.RedisCluster, pattern: str) -> int:
    """Delete every key matching `pattern` (what an evicting Redis may do to them)."""
    found = list(client.scan_iter(match=pattern, count=1000))
    for key in found:
        client.delete(key)
    return len(found)


# =========================================================================== one server


@pytest.fixture
def small_server(
    make_redis_server: MakeRedisServer, request: pytest.FixtureRequest
) -> Iterator[Any]:
    policy = request.param
    server = make_redis_server(args=["--maxmemory", "8mb", "--maxmemory-policy", policy])
    yield server


@pytest.mark.parametrize("small_server", POLICIES, indirect=True)
async def test_a_purge_holds_while_redis_evicts(aiohttp_client: Any, small_server: Any) -> None:
    """Fill, let Redis evict under pressure (other keys with TTLs, so volatile-lru evicts
    too), take the tag indexes away as eviction may, purge: nothing purged is a HIT."""
    calls: dict[str, int] = {}
    client, cache = await client_on(aiohttp_client, calls, redis_url=small_server.url)
    await fill_all(client)
    assert len(await served_hits(client)) > ENTRIES // 2
    admin = redis.Redis.from_url(small_server.url)
    policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
    if policy != "noeviction":
        for i in range(4000):  # ~10 MB of other data, more than maxmemory: Redis evicts
            admin.set(f"other:{i}", b"y" * 2500, ex=3600)
        assert int(admin.info("stats")["evicted_keys"]) > 0
    drop(admin, f"{NAMESPACE}:t:*")  # whatever eviction left of the indexes
    await cache.invalidate_tags("t")
    assert await served_hits(client) == []
    # And the cache works again at once (under pressure the refills above may have been
    # evicted since: one more fill, then a hit).
    await client.get("/items/1")
    again = await client.get("/items/1")
    assert again.headers["X-Cache"] == "HIT"
    assert b" item 1 run " in await again.read()
    admin.close()


async def test_an_evicted_tag_version_turns_its_entries_into_misses(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    calls: dict[str, int] = {}
    client, _ = await client_on(aiohttp_client, calls, redis_url=real_redis_url)
    await fill_all(client)
    admin = redis.Redis.from_url(real_redis_url)
    assert drop(admin, f"{NAMESPACE}:tv:{{=t}}") == 1
    assert await served_hits(client) == []  # unverifiable: never served
    assert await served_hits(client) == list(range(ENTRIES))  # stored again, versioned anew
    admin.close()


async def test_an_evicted_ticket_turns_every_entry_into_a_miss(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    calls: dict[str, int] = {}
    client, _ = await client_on(aiohttp_client, calls, redis_url=real_redis_url)
    await fill_all(client)
    admin = redis.Redis.from_url(real_redis_url)
    admin.delete(f"{NAMESPACE}:gen")
    assert await served_hits(client) == []
    assert await served_hits(client) == list(range(ENTRIES))
    assert all(count == 2 for count in calls.values())
    admin.close()


# =========================================================================== Cluster, Sentinel


async def test_a_purge_holds_on_a_cluster_without_its_index(
    aiohttp_client: Any, cluster_url: str, redis_cluster: Any
) -> None:
    calls: dict[str, int] = {}
    client, cache = await client_on(
        aiohttp_client, calls, redis_url=cluster_url, redis_mode="cluster"
    )
    await fill_all(client)
    assert len(await served_hits(client)) == ENTRIES
    admin = redis.RedisCluster.from_url(cluster_url)
    try:
        for node in admin.get_primaries():
            admin.config_set("maxmemory-policy", "allkeys-lru", target_nodes=node)
        assert drop(admin, f"{NAMESPACE}:t:*") >= 1
        await cache.invalidate_tags("t")
        assert await served_hits(client) == []
    finally:
        for node in admin.get_primaries():
            admin.config_set("maxmemory-policy", "noeviction", target_nodes=node)
        admin.close()


@pytest.fixture
async def sentinel_cache(redis_sentinel: RedisSentinelSetup) -> AsyncIterator[dict[str, Any]]:
    host, port = redis_sentinel.sentinels[0]
    yield {
        "settings": load_settings(
            namespace=NAMESPACE,
            redis_mode="sentinel",
            redis_url=f"redis://{host}:{port}",
            redis_sentinel_service=redis_sentinel.service_name,
            redis_timeout=2.0,
        ),
        "primary": redis_sentinel.primary.url,
    }


async def test_a_purge_holds_on_a_sentinel_primary_without_its_index(
    aiohttp_client: Any, sentinel_cache: dict[str, Any]
) -> None:
    calls: dict[str, int] = {}
    app = tagged_app(calls)
    cache: Cache = setup_cache(app, sentinel_cache["settings"])
    client = await aiohttp_client(app)
    await fill_all(client)
    assert len(await served_hits(client)) == ENTRIES
    admin = redis.Redis.from_url(sentinel_cache["primary"])
    admin.config_set("maxmemory-policy", "allkeys-lfu")
    assert drop(admin, f"{NAMESPACE}:t:*") == ENTRIES + 1  # `t` and each path tag
    await cache.invalidate_tags("t")
    assert await served_hits(client) == []
    admin.close()


# =========================================================================== no miss window


STORES = ["memory", "fakeredis", "redis", "cluster"]


@pytest.fixture
def store_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    kind = request.param
    if kind == "memory":
        return {}
    if kind == "fakeredis":
        return {"fake": True}
    if kind == "redis":
        return {"redis_url": request.getfixturevalue("real_redis_url")}
    return {"redis_url": request.getfixturevalue("cluster_url"), "redis_mode": "cluster"}


@pytest.mark.parametrize("store_overrides", STORES, indirect=True)
@pytest.mark.parametrize("purge", ["unsafe-method", "invalidate_tags"])
async def test_the_first_fill_after_a_purge_is_stored(
    aiohttp_client: Any, store_overrides: dict[str, Any], purge: str
) -> None:
    """After a write, 50 sequential GETs call the handler once (no clock window)."""
    calls: dict[str, int] = {}
    app = tagged_app(calls)
    if store_overrides.pop("fake", False):
        cache = setup_cache(
            app, settings(), store=RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
        )
    else:
        cache = setup_cache(app, settings(redis_timeout=2.0, **store_overrides))
    client = await aiohttp_client(app)
    assert (await client.get("/items/1")).headers["X-Cache"] == "MISS"
    assert (await client.get("/items/1")).headers["X-Cache"] == "HIT"
    if purge == "unsafe-method":
        assert (await client.post("/items/1")).status == 200
    else:
        await cache.invalidate_tags("t")
    statuses = [(await client.get("/items/1")).headers["X-Cache"] for _ in range(50)]
    assert calls["1"] == 2, "one handler call for the 50 GETs after the purge"
    assert statuses == ["MISS"] + ["HIT"] * 49


@pytest.mark.parametrize("store_overrides", ["fakeredis", "redis", "cluster"], indirect=True)
@pytest.mark.parametrize("tagged", [False, True])
async def test_concurrent_first_fills_on_a_new_namespace_are_all_stored(
    store_overrides: dict[str, Any], tagged: bool
) -> None:
    """The ticket is missing; one of 60 concurrent fills creates it, the rest adopt it.

    Before the creation was serialized, a fill whose SET NX reply was read before the
    creator's stored nothing (a cluster test saw MISS on the second pass)."""
    if store_overrides.pop("fake", False):
        store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
    else:
        config = settings(redis_timeout=5.0, **store_overrides)
        store = build_store(config)
    try:
        tags = ("t",) if tagged else ()
        entries = [
            CachedResponse(200, (), str(i).encode(), time.time(), 60, tags=tags, generation=0)
            for i in range(60)
        ]
        stored = await asyncio.gather(
            *(store.set(f"k{i}", e, conditional=True) for i, e in enumerate(entries))
        )
        assert all(stored)
        found = await asyncio.gather(*(store.get(f"k{i}") for i in range(60)))
        bodies = [entry.body if entry else None for entry, _ in found]
        assert bodies == [str(i).encode() for i in range(60)]
    finally:
        await store.close()
