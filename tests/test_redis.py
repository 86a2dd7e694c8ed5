"""`RedisStore` against a real Redis that is full or evicts: refused writes keep reads
going, and the eviction policy is checked at startup."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from cachekit import cached, get_cache
from cachekit.backends.base import StoreError, WriteRefused
from cachekit.backends.redis import RedisStore
from cachekit.backends.topology import as_store_error
from tests.apps import NAMESPACE, make_app
from tests.redis_servers import MakeRedisServer


async def _raise(error: Exception) -> None:
    raise error


@pytest.mark.parametrize(
    "error",
    [
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ReadOnlyError("You can't write against a read only replica."),
    ],
)
async def test_refusals_become_write_refused(error: Exception) -> None:
    with pytest.raises(WriteRefused):
        await as_store_error(_raise(error))


async def test_other_errors_stay_store_errors() -> None:
    with pytest.raises(StoreError) as raised:
        await as_store_error(_raise(ResponseError("ERR unknown command")))
    assert not isinstance(raised.value, WriteRefused)


async def test_a_full_redis_keeps_serving_stored_entries(
    aiohttp_client: Any, make_redis_server: MakeRedisServer
) -> None:
    server = make_redis_server()
    routes = web.RouteTableDef()
    runs = {"n": 0}

    @routes.get("/p/{n}")
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        runs["n"] += 1
        return web.Response(text="x" * 2000)

    store = RedisStore.from_url(server.url, NAMESPACE, 0.5)
    app, cache = make_app(routes, store=store, failure_threshold=3)
    client = await aiohttp_client(app)
    assert (await client.get("/p/hot")).headers["X-Cache"] == "MISS"
    admin = server.client()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(used + 1024))
    try:
        for n in range(20):  # each one a refused write
            assert (await client.get(f"/p/{n}")).status == 200
        hits = [(await client.get("/p/hot")).headers["X-Cache"] for _ in range(10)]
    finally:
        admin.config_set("maxmemory", "0")
    assert hits == ["HIT"] * 10
    stats = get_cache(app).stats()
    assert stats["write_refusals"] >= 20 and not stats["breaker_open"]
    assert stats["skipped"] == 0 and runs["n"] == 21
    del cache


@pytest.mark.parametrize(
    "policy", ["noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu", "allkeys-random"]
)
async def test_no_startup_warning_for_any_eviction_policy(
    aiohttp_client: Any,
    make_redis_server: MakeRedisServer,
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    """Purges hold under every policy (tests/test_purge_eviction.py): nothing to warn of."""
    server = make_redis_server()
    server.client().config_set("maxmemory-policy", policy)
    store = RedisStore.from_url(server.url, NAMESPACE, 0.5)
    assert await store.startup_warnings() == []
    app, _ = make_app(web.RouteTableDef(), store=store)
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        await aiohttp_client(app)
    assert not [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]


async def test_startup_says_when_the_policy_cannot_be_read(
    make_redis_server: MakeRedisServer,
) -> None:
    # Managed Redis services often disable CONFIG.
    server = make_redis_server(args=["--rename-command", "CONFIG", ""])
    store = RedisStore.from_url(server.url, NAMESPACE, 0.5)
    try:
        [warning] = await store.startup_warnings()
    finally:
        await store.close()
    assert "could not read Redis's maxmemory-policy" in warning
