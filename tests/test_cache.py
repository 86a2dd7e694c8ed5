"""`Cache`: store calls bounded by the breaker and the timeout (fail open), counters, fill
bookkeeping; invalidation, clearing and stats."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached, get_cache, setup_cache
from cachekit.backends.base import StoreError, WriteRefused
from cachekit.backends.redis import RedisStore
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from cachekit.handler_state import varied_names
from cachekit.invalidation import spec_of
from tests.apps import NAMESPACE, make_app, settings
from tests.redis_servers import free_port
from tests.test_store_protocol import DictStore


class RefusingStore(DictStore):
    """Answers lookups; refuses writes once `refusing` is set (Redis full, a replica)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False

    async def set(self, key: str, entry: CachedResponse, started_at: float | None = None) -> bool:
        if self.refusing:
            raise WriteRefused("OOM command not allowed when used memory > 'maxmemory'")
        return await super().set(key, entry, started_at)


class FailingStore(DictStore):
    async def get(self, key: str) -> Any:
        raise StoreError("connection refused")

    async def set(self, key: str, entry: CachedResponse, started_at: float | None = None) -> bool:
        raise StoreError("connection refused")


async def test_refused_writes_keep_lookups_going(aiohttp_client: Any) -> None:
    runs = 0

    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        nonlocal runs
        runs += 1
        return web.Response(text=f"page {request.match_info['n']}")

    app = web.Application()
    app.router.add_get("/p/{n}", page)
    store = RefusingStore()
    cache = setup_cache(app, settings(failure_threshold=3), store=store)
    client = await aiohttp_client(app)
    assert (await client.get("/p/hot")).headers["X-Cache"] == "MISS"
    store.refusing = True
    for n in range(20):  # far more refusals than the breaker's failure threshold
        assert (await client.get(f"/p/{n}")).status == 200
    hits = [(await client.get("/p/hot")).headers["X-Cache"] for _ in range(10)]
    assert hits == ["HIT"] * 10
    stats = cache.stats()
    assert not stats["breaker_open"]
    assert stats["write_refusals"] == 20 and stats["skipped"] == 0 and runs == 21


async def test_failing_store_opens_the_breaker_and_is_skipped(aiohttp_client: Any) -> None:
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    app = web.Application()
    app.router.add_get("/p", page)
    cache = setup_cache(app, settings(failure_threshold=3), store=FailingStore())
    client = await aiohttp_client(app)
    for _ in range(10):
        assert (await client.get("/p")).status == 200
    stats = cache.stats()
    assert stats["breaker_open"] and stats["skipped"] > 0


async def test_counters_are_counted_and_copied() -> None:
    cache = Cache(settings())

    @cached(ttl=1)
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    spec = spec_of(handler)
    cache.count("misses")
    cache.handler(spec).hits += 1  # how the hit path counts a fresh hit
    cache.count("bypasses", spec, "bypass", "method")
    snapshot = cache.counters
    snapshot.hits = 99  # a copy: the cache's own counters are private
    assert cache.counters.hits == 1 and cache.counters.misses == 1
    assert cache.stats()["hits"] == 1 and cache.stats()["store"] == "memory"
    assert cache.handler_results() == [("handler", {("bypass", "method"): 1, ("hit", ""): 1})]


async def test_the_fill_registry_is_behind_methods() -> None:
    cache = Cache(settings())
    release = asyncio.Event()

    async def work() -> Any:
        await release.wait()

    task = cache.start_fill("k", work())
    assert cache.running_fill("k") is task and cache.tasks_running()["fills"] == [task]
    release.set()
    await task
    await asyncio.sleep(0)
    assert cache.running_fill("k") is None
    await cache.close()


SIXTEEN = [f"x-h{n}" for n in range(16)]


@pytest.mark.parametrize(
    ("declared", "named", "expected"),
    [
        (("host",), [], ("host",)),
        (("host",), ["host"], ("host",)),
        (("host",), ["x-b", "x-a"], ("host", "x-a", "x-b")),  # sorted: one key everywhere
        (("x-z",), ["x-a", "x-z"], ("x-z", "x-a")),  # declared ones first
        (
            ("host",),
            [f"x-h{n}" for n in range(16)],
            ("host", *sorted(f"x-h{n}" for n in range(16))),
        ),
        (("host",), [f"x-h{n}" for n in range(17)], None),  # past 16 names
        ((), ["x-" + "a" * 64], None),  # a name too long
    ],
)
def test_varied_names_are_bounded(
    declared: tuple[str, ...], named: list[str], expected: tuple[str, ...] | None
) -> None:
    assert varied_names(declared, named) == expected


async def test_a_response_varying_on_too_many_headers_is_not_stored(aiohttp_client: Any) -> None:
    @cached(ttl=60)
    async def page(request: web.Request) -> web.Response:
        vary = ", ".join(f"X-H{n}" for n in range(20))
        return web.Response(text="page", headers={"Vary": vary})

    app = web.Application()
    app.router.add_get("/p", page)
    cache = setup_cache(app, settings())
    client = await aiohttp_client(app)
    for _ in range(2):
        response = await client.get("/p")
        assert response.headers["X-Cache"] == "MISS"
        assert "detail=vary-limit" in response.headers["Cache-Status"]
    assert cache.stats()["stores"] == 0


# ------------------------------------------------------------------ invalidation, clearing, stats


def counted() -> tuple[web.RouteTableDef, Counter[str]]:
    return web.RouteTableDef(), Counter()


async def test_invalidate_tags_clear_and_stats(aiohttp_client) -> None:
    routes, calls = counted()

    @routes.get("/p/{id}")
    @cached(ttl=30, key="p:{match_info[id]}", tags=lambda r: ["products", f"p{r.match_info['id']}"])
    async def product(request: web.Request) -> web.Response:
        calls[request.match_info["id"]] += 1
        return web.json_response({"id": request.match_info["id"]})

    app, _ = make_app(routes)
    client = await aiohttp_client(app)
    for path in ("/p/1", "/p/2", "/p/1", "/p/2"):
        await client.get(path)
    cache = get_cache(app)
    assert await cache.invalidate_tags("p1") == 1
    await client.get("/p/1")
    await client.get("/p/2")
    assert calls == {"1": 2, "2": 1}
    assert await cache.invalidate("p:2") == 1
    await client.get("/p/2")
    await cache.clear()
    await client.get("/p/1")
    assert calls == {"1": 3, "2": 2}
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stores"]) == (3, 5, 5)
    assert json.dumps(stats)  # plain data, ready for a stats endpoint


# ------------------------------------------------------------------ fail open
# A dead, hanging or damaged Redis never turns a request into an error.


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
