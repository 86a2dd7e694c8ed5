"""One contract, every store: memory, fakeredis, a real redis-server and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from aiohttp import web

from cachekit import cached
from cachekit.backends.base import Store
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.redis import RedisStore
from cachekit.entry import CachedResponse, CorruptEntry
from tests.apps import NAMESPACE, make_app, make_store

KINDS = ["memory", "fakeredis", "redis", "cluster"]
URL_FIXTURES = {"redis": "real_redis_url", "cluster": "cluster_url"}


def store_of(kind: str, request: pytest.FixtureRequest) -> Store:
    """A store of `kind`; "cluster" is a ClusterStore on the session's real Redis Cluster."""
    fixture = URL_FIXTURES.get(kind)
    url = request.getfixturevalue(fixture) if fixture else None
    if kind == "cluster":
        assert url is not None
        return ClusterStore.from_url(url, NAMESPACE, 0.5)
    return make_store(kind, url)


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made = store_of(request.param, request)
    yield made
    await made.close()


def entry(body: bytes = b"body", ttl: float = 30.0, **extra: Any) -> CachedResponse:
    values: dict[str, Any] = {
        "status": 200,
        "headers": (("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")),
        "body": body,
        "stored_at": time.time(),
        "ttl": ttl,
    }
    values.update(extra)
    return CachedResponse(**values)


async def test_round_trip_keeps_everything(store: Store) -> None:
    original = entry(tags=("t1",), etag='"abc"', grace=5.0)
    await store.set("k", original)
    found, generation = await store.get("k")
    assert found is not None
    assert (found.status, found.headers, found.body, found.etag) == (
        200,
        original.headers,
        b"body",
        '"abc"',
    )
    assert found.tags == ("t1",) and found.grace == 5.0 and isinstance(generation, int)


async def test_absent_key_is_none(store: Store) -> None:
    assert (await store.get("nothing"))[0] is None


async def test_entries_expire_after_their_last_stale_window(store: Store) -> None:
    await store.set("short", entry(ttl=0.1, grace=0.1, stored_at=time.time()))
    assert (await store.get("short"))[0] is not None
    await asyncio.sleep(0.35)
    assert (await store.get("short"))[0] is None


async def test_delete_and_tags(store: Store) -> None:
    await store.set("a", entry(tags=("red", "all")))
    await store.set("b", entry(tags=("blue", "all")))
    await store.set("c", entry())
    assert await store.invalidate_tags(["red"]) == 1
    assert (await store.get("a"))[0] is None and (await store.get("b"))[0] is not None
    assert await store.invalidate_tags(["all", "red"]) == 1
    assert await store.delete(["c", "missing"]) == 1
    for key in "abc":
        assert (await store.get(key))[0] is None


async def test_clear_drops_this_namespace_only(store: Store) -> None:
    await store.set("k", entry())
    await store.clear()
    assert (await store.get("k"))[0] is None


async def test_lock_belongs_to_its_token(store: Store) -> None:
    assert await store.acquire_lock("k", "mine", 5)
    assert not await store.acquire_lock("k", "theirs", 5)
    await store.release_lock("k", "theirs")  # not the owner: no effect
    assert not await store.acquire_lock("k", "theirs", 5)
    await store.release_lock("k", "mine")
    assert await store.acquire_lock("k", "theirs", 5)


async def test_lock_never_outlives_its_ttl(store: Store) -> None:
    assert await store.acquire_lock("k", "mine", 0.1)
    await asyncio.sleep(0.25)
    assert await store.acquire_lock("k", "theirs", 5)


@pytest.mark.parametrize("kind", ["fakeredis", "redis", "cluster"])
async def test_generation_guards_against_fills_racing_a_clear(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = store_of(kind, request)
    try:
        _, generation = await store.get("k")
        await store.clear()  # a purge lands while the handler is still running
        assert not await store.set("k", entry(generation=generation), conditional=True)
        assert (await store.get("k"))[0] is None
        _, current = await store.get("k")
        assert await store.set("k", entry(generation=current), conditional=True)
        assert (await store.get("k"))[0] is not None
    finally:
        await store.close()


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage", b"CK\x09" + b"\x00" * 80, pickle.dumps({"evil": 1}), b"CK\x01" + b"\xff" * 9],
)
@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_damaged_redis_entry_is_rejected_and_deleted(
    damage: bytes, kind: str, request: pytest.FixtureRequest
) -> None:
    store = store_of(kind, request)
    assert isinstance(store, RedisStore)
    try:
        raw = store.client
        await raw.set(store.entry_key("k"), damage)
        with pytest.raises(CorruptEntry):
            await store.get("k")
        for _ in range(50):
            if not await raw.exists(store.entry_key("k")):
                break
            await asyncio.sleep(0.01)
        assert not await raw.exists(store.entry_key("k"))
    finally:
        await store.close()


def test_a_redis_store_has_its_layouts_key_names() -> None:
    # Tests and tools address Redis keys through the store as they did when it was its
    # own KeyLayout; the batch and pattern helpers are new and live on `store.layout` only.
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 0.5)
    for name in ("namespace", "generation_key", "entry_prefix", "stats_key"):
        assert getattr(store, name) == getattr(store.layout, name)
    for name in ("entry_key", "lock_key", "variants_key", "key_of_entry"):
        assert getattr(store, name)("b#v") == getattr(store.layout, name)("b#v")
    for name in ("tag_key", "version_key"):
        assert getattr(store, name)("t") == getattr(store.layout, name)("t")


async def test_lookups_in_one_loop_turn_share_one_round_trip() -> None:
    client = fakeredis.FakeAsyncRedis()
    store = RedisStore(client, NAMESPACE, 0.5)
    await store.set("a", entry(b"A"))
    await store.set("b", entry(b"B"))
    calls = 0
    original = client.mget

    async def counting_mget(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    client.mget = counting_mget  # type: ignore[method-assign]
    results = await asyncio.gather(*(store.get(key) for key in ["a", "b", "a", "zz"] * 10))
    assert calls == 1
    assert [r[0].body if r[0] else None for r in results[:4]] == [b"A", b"B", b"A", None]
    await store.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_decorated_handler_on_every_store(
    kind: str, aiohttp_client: Any, request: pytest.FixtureRequest
) -> None:
    routes = web.RouteTableDef()
    calls = 0

    @routes.get("/item/{id}")
    @cached(ttl=30, tags=lambda r: [f"item:{r.match_info['id']}"])
    async def item(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        response = web.json_response({"id": request.match_info["id"]}, status=203)
        response.headers.add("X-Rep", "1")
        response.headers.add("X-Rep", "2")
        return response

    app, cache = make_app(routes, store=store_of(kind, request))
    client = await aiohttp_client(app)
    first = await client.get("/item/%FF?b=2&a=1")
    second = await client.get("/item/%FF?a=1&b=2")
    head = await client.head("/item/%FF?a=1&b=2")
    assert (first.headers["X-Cache"], second.headers["X-Cache"], head.headers["X-Cache"]) == (
        "MISS",
        "HIT",
        "HIT",
    )
    assert await first.read() == await second.read()
    item_id = (await first.json())["id"]  # however the router decoded the %FF
    assert second.status == 203 and second.headers.getall("X-Rep") == ["1", "2"]
    assert calls == 1
    assert await cache.invalidate_tags(f"item:{item_id}") == 1
    assert (await client.get("/item/%FF?a=1&b=2")).headers["X-Cache"] == "MISS"


def cap_variants(store: Store, limit: int) -> None:
    if isinstance(store, RedisStore):
        store._max_variants = limit
    else:
        store.max_variants = limit  # type: ignore[attr-defined]


async def test_variants_are_capped_and_purged_with_their_base(store: Store) -> None:
    cap_variants(store, 3)
    results = [await store.set(f"u#lang={n}", entry()) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert await store.set("u#lang=1", entry(b"again"))  # a known variant is replaced
    await store.set("u", entry())
    await store.set("other#lang=1", entry())
    assert await store.delete_variants(["u"]) == 4
    assert (await store.get("u#lang=0"))[0] is None
    assert (await store.get("other#lang=1"))[0] is not None
    assert await store.set("u#lang=9", entry())  # room again after the purge


async def test_expired_variants_free_their_place(store: Store) -> None:
    cap_variants(store, 2)
    assert await store.set("u#a", entry(ttl=0.1))
    assert await store.set("u#b", entry(ttl=0.1))
    assert not await store.set("u#c", entry())
    await asyncio.sleep(0.25)
    assert await store.set("u#c", entry())
