"""Fail open: a dead, hanging or damaged Redis never turns a request into an error."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from cachekit import SettingsError, cached, setup_cache
from cachekit.backends.redis import RedisStore
from tests.apps import NAMESPACE, make_app
from tests.redis_servers import free_port


def counting_routes() -> tuple[web.RouteTableDef, list[int]]:
    routes = web.RouteTableDef()
    calls = [0]

    @routes.get("/thing")
    @cached(ttl=30)
    async def thing(request: web.Request) -> web.Response:
        calls[0] += 1
        return web.json_response({"n": calls[0]})

    @routes.get("/missing")
    @cached(ttl=30)
    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="nope")

    return routes, calls


@pytest.fixture
async def hanging_server() -> AsyncIterator[int]:
    """A loopback server that accepts connections and never answers (a 'slow' Redis)."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_unreachable_redis_serves_every_request(aiohttp_client: Any) -> None:
    routes, calls = counting_routes()
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", NAMESPACE, 0.2)
    app, cache = make_app(routes, store=store, failure_threshold=2, failure_cooldown=60)
    client = await aiohttp_client(app)
    for _ in range(5):
        response = await client.get("/thing")
        assert response.status == 200 and response.headers["X-Cache"] == "MISS"
        assert (await client.get("/missing")).status == 404
    stats = cache.stats()
    assert calls[0] == 5
    assert stats["errors"] == 2 and stats["breaker_open"]
    assert stats["skipped"] >= 8  # later lookups never touched the dead store


async def test_hanging_redis_costs_one_timeout_then_nothing(
    aiohttp_client: Any, hanging_server: int
) -> None:
    routes, calls = counting_routes()
    store = RedisStore.from_url(f"redis://127.0.0.1:{hanging_server}/0", NAMESPACE, 0.2)
    app, cache = make_app(
        routes, store=store, redis_timeout=0.2, failure_threshold=1, failure_cooldown=60
    )
    client = await aiohttp_client(app)
    started = time.monotonic()
    assert (await client.get("/thing")).status == 200
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(10):
        assert (await client.get("/thing")).status == 200
    later = time.monotonic() - started
    assert first < 2.0  # bounded by the store timeout, not by the socket
    assert later < 1.0  # breaker open: no timeout paid per request
    assert calls[0] == 11 and cache.stats()["errors"] >= 1


async def test_redis_killed_mid_test_then_cache_recovers(
    aiohttp_client: Any, make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_redis_server()
    routes, _calls = counting_routes()
    store = RedisStore.from_url(server.url, NAMESPACE, 0.3)
    app, cache = make_app(routes, store=store, failure_threshold=2, failure_cooldown=0.5)
    client = await aiohttp_client(app)
    await client.get("/thing")
    assert (await client.get("/thing")).headers["X-Cache"] == "HIT"

    server.kill()
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        for _ in range(20):
            response = await client.get("/thing")
            assert response.status == 200 and response.headers["X-Cache"] == "MISS"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 3  # logged, not flooded
    assert cache.stats()["breaker_open"]

    server.restart()
    await asyncio.sleep(0.6)  # past the cool-down: the next request probes the store
    results = []
    for _ in range(3):
        response = await client.get("/thing")
        results.append(response.headers["X-Cache"])
    assert results == ["MISS", "HIT", "HIT"]
    assert not cache.stats()["breaker_open"]


async def test_damaged_entry_is_a_miss_and_gets_replaced(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    routes, _calls = counting_routes()
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    app, cache = make_app(routes, store=store)
    client = await aiohttp_client(app)
    await client.get("/thing")
    (key,) = [k async for k in store._redis.scan_iter(f"{NAMESPACE}:e:*")]
    await store._redis.set(key, b"CK\x01garbage-that-is-not-an-entry")
    damaged = await client.get("/thing")
    assert damaged.status == 200 and damaged.headers["X-Cache"] == "MISS"
    await asyncio.sleep(0.05)
    refilled = await client.get("/thing")
    again = await client.get("/thing")
    assert (refilled.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    assert cache.stats()["errors"] == 1 and not cache.stats()["breaker_open"]


def test_invalid_environment_stops_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHEKIT_DEFAULT_TTL", "soon")
    with pytest.raises(SettingsError, match="CACHEKIT_DEFAULT_TTL"):
        setup_cache(web.Application())
    monkeypatch.delenv("CACHEKIT_DEFAULT_TTL")
    monkeypatch.setenv("CACHEKIT_TTLS", "{not json")
    with pytest.raises(SettingsError, match="CACHEKIT_TTLS"):
        setup_cache(web.Application())
    monkeypatch.setenv("CACHEKIT_TTLS", '{"get_product": 5}')
    monkeypatch.setenv("CACHEKIT_REDIS_URL", "http://user:hunter2@example")
    with pytest.raises(SettingsError, match="CACHEKIT_REDIS_URL") as raised:
        setup_cache(web.Application())
    assert "hunter2" not in str(raised.value)


def test_environment_configures_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEKIT_TTLS__GET_PRODUCT", "120")
    monkeypatch.setenv("CACHEKIT_NAMESPACE", "shop")
    cache = setup_cache(web.Application())
    assert cache.settings.ttl_override("get_product") == 120
    assert cache.settings.namespace == "shop"
    assert cache.stats()["store"] == "memory"


async def test_a_dead_lock_holder_costs_each_process_one_wait(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    routes, calls = counting_routes()
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    app, cache = make_app(routes, store=store, lock_timeout=0.4, lock_ttl=5)
    client = await aiohttp_client(app)
    # A filler that died while holding the lock of this very key.
    key = f"thing:/thing?#host=127.0.0.1:{client.port}"  # hosts are kept readable
    assert await store.acquire_lock(key, "dead-worker", 5)
    started = time.monotonic()
    first = await client.get("/thing")
    waited = time.monotonic() - started
    started = time.monotonic()
    later = [await client.get("/thing") for _ in range(5)]
    quick = time.monotonic() - started
    assert first.status == 200 and all(response.status == 200 for response in later)
    assert 0.4 <= waited < 1.5  # one lock_timeout, not more
    assert quick < 0.4  # no further waiting in this process
    assert calls[0] == 6 and cache.stats()["stores"] == 0  # served, nothing stored meanwhile
