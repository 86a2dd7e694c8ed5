"""Purge by tag: across processes, against racing fills, without leaking, and at scale."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from aiohttp import web

from cachekit import Cache, cached
from cachekit.backends.base import Store
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.memory import MemoryStore
from cachekit.backends.redis import TRIM_LIMIT, RedisStore
from cachekit.entry import CachedResponse
from tests.apps import NAMESPACE, make_app, settings

KINDS = ["memory", "fakeredis", "redis", "cluster"]
SHARED_KINDS = ["redis", "cluster"]


def build(kind: str, request: pytest.FixtureRequest, **options: Any) -> Store:
    """A fresh store of `kind`; the real ones on the session's Redis / Redis Cluster."""
    if kind == "memory":
        return MemoryStore(64 << 20)
    if kind == "fakeredis":
        return RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 0.5, **options)
    if kind == "redis":
        url = request.getfixturevalue("real_redis_url")
        return RedisStore.from_url(url, NAMESPACE, 0.5, **options)
    return ClusterStore.from_url(request.getfixturevalue("cluster_url"), NAMESPACE, 0.5, **options)


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made = build(request.param, request)
    yield made
    await made.close()


def entry(
    tags: tuple[str, ...] = ("t",), ttl: float = 60.0, body: bytes = b"x", generation: int = 0
) -> CachedResponse:
    return CachedResponse(
        200,
        (("Content-Type", "text/plain"),),
        body,
        time.time(),
        ttl,
        tags=tags,
        generation=generation,
    )


def product_routes(state: dict[str, Any]) -> web.RouteTableDef:
    """GET /p/{id}: reads `state["version"]`, then waits for `state["release"]` if set."""
    routes = web.RouteTableDef()

    @routes.get("/p/{id}")
    @cached(ttl=60, tags=lambda r: ["products", f"product:{r.match_info['id']}"])
    async def product(request: web.Request) -> web.Response:
        state["calls"] += 1
        version = state["version"]  # the data this response is built from
        state["entered"].set()
        if state.get("release") is not None:
            await state["release"].wait()
        if state.get("linger"):
            await asyncio.sleep(state["linger"])
        return web.json_response({"version": version})

    return routes


def new_state(**extra: Any) -> dict[str, Any]:
    return {"calls": 0, "version": 1, "entered": asyncio.Event(), **extra}


# ------------------------------------------------------------------ store level


async def test_a_purge_voids_fills_that_looked_up_before_it(store: Store) -> None:
    _, ticket = await store.get("a")
    assert await store.set("a", entry(("t", "u"), generation=ticket), conditional=True)
    await store.invalidate_tags(["t"])
    assert (await store.get("a"))[0] is None
    # A fill whose lookup came before the purge: refused, whatever its tags (a purge's
    # tags are not compared: any purge since the lookup voids it).
    assert not await store.set("a", entry(("u", "t"), generation=ticket), conditional=True)
    assert not await store.set("b", entry(("u",), generation=ticket), conditional=True)
    assert (await store.get("a"))[0] is None
    # The first fill that looked up after the purge is stored: no clock, no margin.
    _, after = await store.get("a")
    assert after != ticket
    assert await store.set("a", entry(("t",), generation=after), conditional=True)
    assert (await store.get("a"))[0] is not None
    assert await store.set("b", entry(("u",), generation=after), conditional=True)
    assert await store.invalidate_tags(["t", "u"]) == 2


async def test_a_clear_voids_fills_that_looked_up_before_it(store: Store) -> None:
    _, ticket = await store.get("a")
    await store.clear()
    assert not await store.set("a", entry(("t",), generation=ticket), conditional=True)
    assert not await store.set("b", entry((), generation=ticket), conditional=True) or (
        (await store.get("b"))[0] is None  # stored under the old generation: never served
    )
    _, after = await store.get("a")
    assert await store.set("a", entry(("t",), generation=after), conditional=True)
    assert (await store.get("a"))[0] is not None


async def test_purge_counts_each_entry_once_and_spares_other_tags(store: Store) -> None:
    for i in range(30):
        await store.set(f"k{i}", entry(("all", f"k{i}", "even" if i % 2 else "odd")))
    assert await store.invalidate_tags(["even", "all", "missing"]) == 30
    assert await store.invalidate_tags(["all"]) == 0
    _, ticket = await store.get("k1")
    assert await store.set("k1", entry(("even",), generation=ticket), conditional=True)


# ------------------------------------------------------------------ app level


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fill_racing_a_purge_is_never_served(
    kind: str, aiohttp_client: Any, request: pytest.FixtureRequest
) -> None:
    state = new_state(release=asyncio.Event())
    app, cache = make_app(product_routes(state), store=build(kind, request))
    client = await aiohttp_client(app)
    racing = asyncio.create_task(client.get("/p/7"))
    await state["entered"].wait()  # the handler has read version 1 ...
    state["version"] = 2
    assert await cache.invalidate_tags("product:7") == 0  # ... and the purge lands now
    state["release"].set()
    first = await racing
    assert first.headers["X-Cache"] == "MISS" and (await first.json())["version"] == 1
    second = await client.get("/p/7")
    assert second.headers["X-Cache"] == "MISS" and (await second.json())["version"] == 2
    third = await client.get("/p/7")  # the first fill after the purge was stored
    assert third.headers["X-Cache"] == "HIT" and (await third.json())["version"] == 2


async def test_a_slow_fill_racing_a_purge_is_still_voided(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    # The fill's lookup is 1.3 s before it stores (the old clock window was 1 s).
    state = new_state(release=asyncio.Event(), linger=1.3)
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    app, cache = make_app(product_routes(state), store=store)
    client = await aiohttp_client(app)
    racing = asyncio.create_task(client.get("/p/7"))
    await state["entered"].wait()
    state["version"] = 2
    await cache.invalidate_tags("products")
    state["release"].set()
    assert (await (await racing).json())["version"] == 1
    after = await client.get("/p/7")
    assert after.headers["X-Cache"] == "MISS" and (await after.json())["version"] == 2


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_a_purge_in_one_process_is_seen_by_another(
    kind: str, aiohttp_client: Any, request: pytest.FixtureRequest
) -> None:
    state = new_state()
    one_app, _ = make_app(product_routes(state), store=build(kind, request))
    one = await aiohttp_client(one_app)
    other_app, other = make_app(product_routes(state), store=build(kind, request))
    await aiohttp_client(other_app)
    for product in ("1", "2", "3"):
        await one.get(f"/p/{product}")
        assert (await one.get(f"/p/{product}")).headers["X-Cache"] == "HIT"
    assert await other.invalidate_tags("product:1", "product:2") == 2
    assert (await one.get("/p/1")).headers["X-Cache"] == "MISS"
    assert (await one.get("/p/3")).headers["X-Cache"] == "HIT"
    assert await other.invalidate_tags("products") == 2  # /p/1 (stored again) and /p/3


PURGE_SCRIPT = """
import asyncio, sys
from cachekit import Cache, load_settings
from cachekit.app import build_store

async def main():
    settings = load_settings()
    cache = Cache(settings, build_store(settings))
    print(await cache.invalidate_tags(*sys.argv[1:]))
    await cache.close()

asyncio.run(main())
"""


async def test_a_purge_from_another_os_process(aiohttp_client: Any, real_redis_url: str) -> None:
    state = new_state()
    app, _ = make_app(
        product_routes(state), store=RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    )
    client = await aiohttp_client(app)
    for product in ("1", "2"):
        await client.get(f"/p/{product}")
    env = {**os.environ, "CACHEKIT_REDIS_URL": real_redis_url, "CACHEKIT_NAMESPACE": NAMESPACE}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PURGE_SCRIPT, "product:2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "1"
    assert (await client.get("/p/1")).headers["X-Cache"] == "HIT"
    assert (await client.get("/p/2")).headers["X-Cache"] == "MISS"


# ------------------------------------------------------------------ no leaks


@pytest.mark.parametrize("kind", ["fakeredis", *SHARED_KINDS])
async def test_tag_indexes_are_trimmed_as_entries_expire(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = build(kind, request)
    assert isinstance(store, RedisStore)
    store.trim_slack_ms = 0  # trim as soon as an entry expired (the default waits 30 s)
    client, index = store.client, store.tag_key("t")
    try:
        await store.set("keeper", entry(ttl=30))  # keeps the index itself alive
        for i in range(20):
            await store.set(f"old{i}", entry(ttl=0.5))
        assert await client.zcard(index) == 21
        await asyncio.sleep(0.7)
        await store.set("new0", entry(ttl=30))
        assert await client.zcard(index) == 21 - TRIM_LIMIT + 1  # bounded work per store
        for i in range(1, 4):
            await store.set(f"new{i}", entry(ttl=30))
        assert sorted(await client.zrange(index, 0, -1)) == [
            b"keeper",
            *(f"new{i}".encode() for i in range(4)),
        ]
        assert 0 < await client.pttl(index) <= 30_000  # the index expires with its last entry
        await store.invalidate_tags(["t"])
        assert not await client.exists(index)
        # The tag's version: replaced by the purge, kept as long as its longest entry.
        assert 0 < await client.pttl(store.version_key("t")) <= 30_000
    finally:
        await store.close()


# ------------------------------------------------------------------ scale

BULK = 10_000


@pytest.mark.parametrize("kind", SHARED_KINDS)
async def test_purging_10000_entries_keeps_the_event_loop_responsive(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = build(kind, request)
    assert isinstance(store, RedisStore)
    cache = Cache(settings(), store)
    try:
        for start in range(0, BULK, 50):
            await asyncio.gather(
                *(
                    store.set(f"item:{i}", entry(("bulk", f"item:{i}"), body=b"x" * 200))
                    for i in range(start, start + 50)
                )
            )
        gaps: list[float] = []
        ticker = asyncio.get_running_loop().create_task(_tick(gaps))
        await asyncio.sleep(0.02)
        began = time.perf_counter()
        removed = await cache.invalidate_tags("bulk")
        total = time.perf_counter() - began
        ticker.cancel()
        stall = max(gaps)
        print(
            f"\n[{kind}] purged {removed} entries in {total * 1000:.0f} ms;"
            f" longest event-loop stall {stall * 1000:.1f} ms over {len(gaps)} ticks"
        )
        assert removed == BULK
        # Typically 2-5 ms. One longer gap is the machine, not the purge (a VM descheduled
        # this process once for 103 ms in CI); a purge that held the loop would do so in
        # every one of its 20 batches, so the second-longest gap is what is bounded.
        assert sorted(gaps)[-2] < 0.1
        assert stall < 1.0
        assert not await store.client.exists(store.tag_key("bulk"))
        sample = await asyncio.gather(*(store.get(f"item:{i}") for i in range(0, BULK, 97)))
        assert all(found is None for found, _ in sample)
    finally:
        await cache.close()


async def _tick(gaps: list[float]) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(0.001)
        now = loop.time()
        gaps.append(now - last)
        last = now
