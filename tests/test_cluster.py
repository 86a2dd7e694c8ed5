"""A decorated aiohttp app on a real 3-master Redis Cluster: every store feature end to end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from redis.crc import key_slot

from cachekit import Cache, cached
from cachekit.app import build_store
from cachekit.backends.cluster import ClusterStore
from cachekit.entry import CachedResponse
from tests.apps import NAMESPACE, make_app, settings


def entry_of(body: bytes, tags: tuple[str, ...] = (), generation: int = 0) -> CachedResponse:
    return CachedResponse(200, (), body, time.time(), 60, tags=tags, generation=generation)


def catalogue(calls: Counter[str], delay: float = 0.0) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/items/{id}")
    @cached(ttl=60, tags=lambda r: ["items", f"item:{r.match_info['id']}"])
    async def item(request: web.Request) -> web.Response:
        calls[request.path] += 1
        await asyncio.sleep(delay)
        return web.json_response({"id": request.match_info["id"], "call": calls[request.path]})

    @routes.get("/news")
    @cached(ttl=1, stale_ttl=10)
    async def news(request: web.Request) -> web.Response:
        calls["/news"] += 1
        if calls["/news"] > 1:  # a refresh: slow enough that concurrent requests see it run
            await asyncio.sleep(0.2)
        return web.json_response({"edition": calls["/news"]})

    @routes.get("/greeting")
    @cached(ttl=60, vary=["Accept-Language"])
    async def greeting(request: web.Request) -> web.Response:
        calls["/greeting"] += 1
        return web.Response(text=request.headers.get("Accept-Language", "-"))

    return routes


async def cluster_client(
    aiohttp_client: Any, cluster_url: str, calls: Counter[str], **kw: Any
) -> tuple[Any, Cache]:
    """A test client of the catalogue app on its own ClusterStore (its own "process").
    Every client sends the same Host, which is part of the default keys."""
    # Generous timeouts: 40 first connections to a three-node cluster on a loaded CI
    # machine can take longer than the default, and a timeout would turn a hit into a miss.
    store = ClusterStore.from_url(cluster_url, NAMESPACE, 5.0)
    app, cache = make_app(catalogue(calls, **kw), store=store, redis_timeout=5.0)
    return await aiohttp_client(app, headers={"Host": "shop.example"}), cache


async def test_settings_select_the_cluster_store(cluster_url: str) -> None:
    store = build_store(settings(redis_url=cluster_url, redis_mode="cluster"))
    assert isinstance(store, ClusterStore)
    await store.set("k", entry_of(b"x"))
    assert (await store.get("k"))[0] is not None
    await store.close()


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
async def test_cluster_fill_steps_interleaved_with_a_purge(
    step: int, cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge landing before each step of a cluster fill (tag versions, ticket check,
    entry, tag indexes), or after them all: the entry is never served afterwards, and a
    purge before the ticket check stores nothing."""
    purger = ClusterStore.from_url(cluster_url, NAMESPACE, 0.5)
    filler = ClusterStore.from_url(cluster_url, NAMESPACE, 0.5)
    await filler.set("seed", entry_of(b"seed", ("t",)))  # tag versions and ticket exist
    _, ticket = await filler.get("k")
    run = filler.topology.run
    calls = 0

    async def interleaved(awaitable: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == step:
            await purger.invalidate_tags(["t"])
        return await run(awaitable)

    monkeypatch.setattr(filler.topology, "run", interleaved)
    try:
        fill = entry_of(b"x", ("other", "t"), generation=ticket)
        stored = await filler.set("k", fill, conditional=True)
        monkeypatch.undo()
        assert calls == (2 if step <= 2 else 4)  # refused after the ticket check, or all four
        if step == 5:
            assert stored
            assert (await filler.get("k"))[0] is not None
            await purger.invalidate_tags(["t"])
        elif step <= 2:
            assert not stored
        assert (await filler.get("k"))[0] is None
        assert (await purger.get("k"))[0] is None
    finally:
        await filler.close()
        await purger.close()


async def test_hits_across_many_slots_share_batched_lookups(
    aiohttp_client: Any, cluster_url: str
) -> None:
    calls: Counter[str] = Counter()
    client, cache = await cluster_client(aiohttp_client, cluster_url, calls)
    ids = [str(i) for i in range(40)]
    store = cache.store
    assert isinstance(store, ClusterStore)
    first = await asyncio.gather(*(client.get(f"/items/{i}") for i in ids))
    assert {r.headers["X-Cache"] for r in first} == {"MISS"}
    stored = [k async for k in store.client.scan_iter(match=f"{NAMESPACE}:e:*", count=1000)]
    assert len({key_slot(key) for key in stored}) > 10  # spread over the cluster
    again = await asyncio.gather(*(client.get(f"/items/{i}") for i in ids))
    assert {r.headers["X-Cache"] for r in again} == {"HIT"}
    assert set(calls.values()) == {1}
    assert cache.stats()["errors"] == 0


async def test_two_processes_fill_a_cold_key_once(aiohttp_client: Any, cluster_url: str) -> None:
    calls: Counter[str] = Counter()
    one, _ = await cluster_client(aiohttp_client, cluster_url, calls, delay=0.3)
    two, _ = await cluster_client(aiohttp_client, cluster_url, calls, delay=0.3)
    answers = await asyncio.gather(*(c.get("/items/7") for c in (one, two) * 10))
    assert [r.status for r in answers] == [200] * 20
    assert calls["/items/7"] == 1  # the fill lock worked across the two apps
    assert {(await r.json())["call"] for r in answers} == {1}


async def test_tag_purge_from_another_process(aiohttp_client: Any, cluster_url: str) -> None:
    calls: Counter[str] = Counter()
    one, _ = await cluster_client(aiohttp_client, cluster_url, calls)
    _, other = await cluster_client(aiohttp_client, cluster_url, calls)
    for i in range(20):
        await one.get(f"/items/{i}")
    assert await other.invalidate_tags("item:3") == 1
    assert (await one.get("/items/3")).headers["X-Cache"] == "MISS"
    assert (await one.get("/items/4")).headers["X-Cache"] == "HIT"
    # /items/3 was stored again at once: the first fill after a purge is kept.
    assert await other.invalidate_tags("items") == 20
    hits = [(await one.get(f"/items/{i}")).headers["X-Cache"] for i in range(20)]
    assert hits == ["MISS"] * 20


async def test_stale_entry_is_served_while_one_refresh_runs(
    aiohttp_client: Any, cluster_url: str
) -> None:
    calls: Counter[str] = Counter()
    client, _ = await cluster_client(aiohttp_client, cluster_url, calls)
    assert (await (await client.get("/news")).json())["edition"] == 1
    await asyncio.sleep(1.1)
    stale = await asyncio.gather(*(client.get("/news") for _ in range(5)))
    assert {r.headers["X-Cache"] for r in stale} == {"STALE"}
    assert {(await r.json())["edition"] for r in stale} == {1}
    for _ in range(50):  # the background refresh stores edition 2
        fresh = await client.get("/news")
        if fresh.headers["X-Cache"] == "HIT":
            break
        await asyncio.sleep(0.02)
    assert fresh.headers["X-Cache"] == "HIT" and (await fresh.json())["edition"] == 2
    assert calls["/news"] == 2


async def test_clear_and_variant_purge(aiohttp_client: Any, cluster_url: str) -> None:
    calls: Counter[str] = Counter()
    one, cache_one = await cluster_client(aiohttp_client, cluster_url, calls)
    two, _ = await cluster_client(aiohttp_client, cluster_url, calls)
    for language in ("fr", "de"):
        await one.get("/greeting", headers={"Accept-Language": language})
    hit = await two.get("/greeting", headers={"Accept-Language": "de"})
    assert hit.headers["X-Cache"] == "HIT" and await hit.text() == "de"
    await one.get("/items/1")
    await cache_one.clear()  # O(1): a generation bump, seen by every process
    assert (await two.get("/items/1")).headers["X-Cache"] == "MISS"
    assert (await two.get("/greeting", headers={"Accept-Language": "fr"})).headers[
        "X-Cache"
    ] == "MISS"
    await two.get("/greeting", headers={"Accept-Language": "de"})
    store = cache_one.store
    assert isinstance(store, ClusterStore)
    base = await _base_of(store, "greeting")
    assert await cache_one.invalidate(base) == 2
    assert (await one.get("/greeting", headers={"Accept-Language": "de"})).headers[
        "X-Cache"
    ] == "MISS"


async def _base_of(store: ClusterStore, handler: str) -> str:
    """The base key of `handler`'s entries, read back from the cluster's variant sets."""
    found = [
        key.decode()
        async for key in store.client.scan_iter(match=f"{NAMESPACE}:v:*", count=1000)
        if handler in key.decode()
    ]
    assert len(found) == 1, found
    return found[0][len(f"{NAMESPACE}:v:{{") : -1]


@pytest.mark.parametrize("count", [300])
async def test_purge_of_many_slots_counts_every_entry(
    count: int, aiohttp_client: Any, cluster_url: str
) -> None:
    calls: Counter[str] = Counter()
    client, cache = await cluster_client(aiohttp_client, cluster_url, calls)
    for start in range(0, count, 50):
        await asyncio.gather(*(client.get(f"/items/{i}") for i in range(start, start + 50)))
    assert await cache.invalidate_tags("items") == count
