"""The store protocol is the whole contract: a store written outside cachekit works.

`DictStore` below is what a user would write for another backend: it implements
`cachekit.backends.base.Store` and nothing else, answers every lookup through `get` (it
has nothing to `peek` at), and declares itself remote, so the cache bounds its calls and
takes its fill locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from cachekit import cached, get_cache, setup_cache
from cachekit.backends.base import Answer, Store
from cachekit.entry import CachedResponse
from tests.apps import settings


class DictStore:
    """A third-party store: plain dicts behind coroutines, as if across the network."""

    remote = True

    def __init__(self) -> None:
        self.entries: dict[str, CachedResponse] = {}
        self.locks: dict[str, str] = {}
        self.counters: dict[str, int] = {}
        self.calls: list[str] = []

    def peek(self, key: str, now: float) -> Answer | None:
        self.calls.append("peek")
        return None

    async def get(self, key: str) -> Answer:
        self.calls.append("get")
        await asyncio.sleep(0)
        return self.entries.get(key), 0

    async def set(self, key: str, entry: CachedResponse, started_at: float | None = None) -> bool:
        self.calls.append("set")
        self.entries[key] = entry
        return True

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self.entries.pop(key, None) is not None for key in keys)

    async def delete_variants(self, bases: Sequence[str]) -> int:
        doomed = [k for k in self.entries if k.partition("#")[0] in set(bases)]
        return await self.delete(doomed)

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        wanted = set(tags)
        return await self.delete([k for k, e in self.entries.items() if wanted & set(e.tags)])

    async def clear(self) -> None:
        self.entries.clear()

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        self.calls.append("lock")
        return self.locks.setdefault(key, token) == token

    async def lock_held(self, key: str) -> bool:
        return key in self.locks

    async def release_lock(self, key: str, token: str) -> None:
        if self.locks.get(key) == token:
            del self.locks[key]

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        for name, count in counts.items():
            self.counters[name] = self.counters.get(name, 0) + count

    async def startup_warnings(self) -> list[str]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"store": "dict", "entries": len(self.entries)}

    async def close(self) -> None:
        self.calls.append("close")


def test_the_dict_store_satisfies_the_protocol() -> None:
    store: Store = DictStore()  # mypy checks this assignment structurally
    assert store.remote


async def test_a_third_party_store_serves_through_setup_cache_and_the_decorator(
    aiohttp_client: Any,
) -> None:
    runs = 0

    @cached(ttl=60, tags=["products"])
    async def product(request: web.Request) -> web.Response:
        nonlocal runs
        runs += 1
        return web.Response(text=f"product {request.match_info['id']} #{runs}")

    app = web.Application()
    app.router.add_get("/products/{id}", product)
    store = DictStore()
    cache = setup_cache(app, settings(), store=store)
    client = await aiohttp_client(app)

    first = await client.get("/products/7")
    second = await client.get("/products/7")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert await second.text() == "product 7 #1" and runs == 1
    assert {"peek", "get", "lock", "set"} <= set(store.calls)
    assert get_cache(app) is cache and cache.stats()["store"] == "dict"

    assert await cache.invalidate_tags("products") == 1
    third = await client.get("/products/7")
    assert third.headers["X-Cache"] == "MISS" and await third.text() == "product 7 #2"

    await cache.publish_counters()
    assert store.counters["hits"] == 1 and store.counters["misses"] == 2
    await client.close()
    assert store.calls[-1] == "close"
