"""`Cache`: store calls bounded by the breaker and the timeout, counters, fill bookkeeping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached, setup_cache
from cachekit.backends.base import StoreError, WriteRefused
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from tests.apps import settings
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
    cache.count("misses")
    cache.count_hit()
    snapshot = cache.counters
    snapshot.hits = 99  # a copy: the cache's own counters are private
    assert cache.counters.hits == 1 and cache.counters.misses == 1
    assert cache.stats()["hits"] == 1 and cache.stats()["store"] == "memory"


async def test_stuck_locks_are_remembered_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(settings(lock_ttl=5, lock_timeout=1))
    cache.remember_stuck("k")
    assert cache.lock_is_stuck("k")
    cache.forget_stuck("k")
    assert not cache.lock_is_stuck("k")
    monkeypatch.setattr("cachekit.cache.STUCK_LOCKS_KEPT", 10)
    for n in range(50):
        cache.remember_stuck(f"k{n}")
    assert len(cache._stuck_locks) <= 10


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


def test_learned_vary_is_bounded_per_handler() -> None:
    cache = Cache(settings())
    few = [f"x-h{n}" for n in range(16)]
    assert cache.learn_vary("h", ("host",), few) == ("host", *sorted(few))
    assert cache.learn_vary("h", ("host",), ["x-one-more"]) is None  # 17 learned names
    assert cache.learn_vary("other", (), ["x-" + "a" * 64]) is None  # a name too long
    assert cache.vary_names("h", ("host",)) == ("host", *sorted(few))


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
