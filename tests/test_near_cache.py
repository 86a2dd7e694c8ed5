"""The near cache (L1): hits without a round trip, never staler than Redis's invalidations."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from aiohttp import web

from cachekit import SettingsError, cached, load_settings, tag
from cachekit.app import build_store
from cachekit.backends import near as near_module
from cachekit.backends.base import StoreError
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.layout import KeyLayout
from cachekit.backends.near import NearCache
from cachekit.backends.redis import RedisStore
from cachekit.backends.sentinel import SentinelStore
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from tests.apps import NAMESPACE, make_app, settings
from tests.redis_servers import MakeRedisServer, RedisSentinelSetup

NEAR_BYTES = 1 << 20
#: The issue's bound: another process's purge is seen within milliseconds.
LATENCY_LIMIT = 0.2


def entry(body: bytes = b"body", ttl: float = 30.0, **extra: Any) -> CachedResponse:
    values: dict[str, Any] = {
        "status": 200,
        "headers": (("Content-Type", "text/plain"),),
        "body": body,
        "stored_at": time.time(),
        "ttl": ttl,
    }
    values.update(extra)
    return CachedResponse(**values)


def near_store(url: str, max_bytes: int = NEAR_BYTES, **options: Any) -> RedisStore:
    return RedisStore.from_url(url, NAMESPACE, 0.5, near_max_bytes=max_bytes, **options)


def near_of(store: RedisStore) -> NearCache:
    assert store.near_cache is not None
    return store.near_cache


async def wait_for(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Poll (yielding to the loop each time) until `predicate()`; seconds it took."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0 if time.perf_counter() - start < 0.05 else 0.005)
    return time.perf_counter() - start


async def live(store: RedisStore) -> NearCache:
    """Start the store's listener (a lookup does) and wait until it is subscribed."""
    await store.get("warm-up")
    near = near_of(store)
    await wait_for(lambda: near.live, 5.0, "the invalidation channel is subscribed")
    return near


async def cached_near(store: RedisStore, key: str) -> CachedResponse:
    """Look `key` up until the near cache holds it (a write's own invalidation may void
    the first attempts: see rule 2); returns the entry."""
    near = near_of(store)
    deadline = time.perf_counter() + 2.0
    while key not in near:
        assert time.perf_counter() < deadline, f"{key!r} never reached the near cache"
        await store.get(key)
        await asyncio.sleep(0.002)
    found, _ = await store.get(key)
    assert found is not None
    return found


async def mget_calls(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


@pytest.fixture
async def stores(real_redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """This process's store with a near cache, and another writer on the same Redis."""
    mine, other = near_store(real_redis_url), RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    await live(mine)
    yield mine, other
    await mine.close()
    await other.close()


# ------------------------------------------------------------------ settings and defaults


def test_off_by_default() -> None:
    defaults = load_settings()
    assert defaults.near_cache_max_bytes == 0
    assert defaults.near_cache_max_age == 10.0


async def test_default_store_has_no_near_cache_nor_listener(real_redis_url: str) -> None:
    store = build_store(settings(redis_url=real_redis_url))
    assert isinstance(store, RedisStore) and store.near_cache is None
    await store.set("k", entry())
    await store.get("k")
    clients = await store.client.client_list()
    assert not any(c["name"].startswith("cachekit-near") for c in clients)
    assert "near_hits" not in Cache(settings(redis_url=real_redis_url), store).stats()
    await store.close()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEKIT_NEAR_CACHE_MAX_BYTES", "1048576")
    monkeypatch.setenv("CACHEKIT_NEAR_CACHE_MAX_AGE", "2.5")
    loaded = load_settings()
    assert (loaded.near_cache_max_bytes, loaded.near_cache_max_age) == (1 << 20, 2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CACHEKIT_NEAR_CACHE_MAX_BYTES", "-1"),
        ("CACHEKIT_NEAR_CACHE_MAX_BYTES", "lots"),
        ("CACHEKIT_NEAR_CACHE_MAX_AGE", "0"),
        ("CACHEKIT_NEAR_CACHE_MAX_AGE", "inf"),
        ("CACHEKIT_NEAR_CACHE_MAX_AGE", "86400"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_cluster_mode_refuses_a_near_cache() -> None:
    with pytest.raises(SettingsError, match=r"CACHEKIT_NEAR_CACHE_MAX_BYTES.*cluster"):
        load_settings(
            redis_url="redis://127.0.0.1:7000", redis_mode="cluster", near_cache_max_bytes=1000
        )
    with pytest.raises(ValueError, match="Redis Cluster"):
        ClusterStore.from_url("redis://127.0.0.1:7000", NAMESPACE, 0.5, near_max_bytes=1000)


async def test_settings_reach_the_store(real_redis_url: str) -> None:
    store = build_store(
        settings(redis_url=real_redis_url, near_cache_max_bytes=5000, near_cache_max_age=3)
    )
    assert isinstance(store, RedisStore)
    near = near_of(store)
    assert (near.max_bytes, near.max_age) == (5000, 3)
    await store.close()


# ------------------------------------------------------------------ hits


async def test_hit_is_answered_without_redis(stores: tuple[RedisStore, RedisStore]) -> None:
    mine, other = stores
    near = near_of(mine)
    await other.set("k", entry(b"v1"))
    first = await cached_near(mine, "k")
    before = await mget_calls(other.client)
    for _ in range(100):
        waiter = mine.get("k")
        assert waiter.done()  # awaiting it does not even yield to the loop
        found, generation = await waiter
        assert found is first and generation == first.generation
    assert await mget_calls(other.client) == before
    assert near.hits >= 100


async def test_stale_entries_are_left_to_redis(stores: tuple[RedisStore, RedisStore]) -> None:
    mine, other = stores
    await other.set("k", entry(ttl=0.2, grace=30))
    await cached_near(mine, "k")
    await asyncio.sleep(0.25)
    before = await mget_calls(other.client)
    found, _ = await mine.get("k")
    assert found is not None and not found.is_fresh(time.time())  # stale, from Redis
    assert await mget_calls(other.client) == before + 1
    assert "k" not in near_of(mine)


async def test_max_age_bounds_an_entry(real_redis_url: str) -> None:
    mine = near_store(real_redis_url, near_max_age=0.1)
    await live(mine)
    await mine.set("k", entry(ttl=60))
    await cached_near(mine, "k")
    await asyncio.sleep(0.15)
    before = await mget_calls(mine.client)
    assert (await mine.get("k"))[0] is not None
    assert await mget_calls(mine.client) == before + 1
    await mine.close()


async def test_vary_stubs_and_misses_are_not_kept(stores: tuple[RedisStore, RedisStore]) -> None:
    mine, other = stores
    await other.set("stub", entry(vary_stub=True, headers=(("Vary", "Accept"),)))
    await asyncio.sleep(0.02)
    assert (await mine.get("stub"))[0] is not None
    assert (await mine.get("absent"))[0] is None
    assert len(near_of(mine)) == 0


async def test_memory_bound(real_redis_url: str) -> None:
    body = b"x" * 4000
    mine = near_store(real_redis_url, max_bytes=15_000)
    near = await live(mine)
    for i in range(10):
        await mine.set(f"k{i}", entry(body))
    await asyncio.sleep(0.02)
    for i in range(10):
        await mine.get(f"k{i}")
        await mine.get("k0")  # the most recently used survives eviction
        assert near.used_bytes <= 15_000
    assert "k0" in near and "k9" in near and len(near) == 3
    await mine.set("big", entry(b"x" * 20_000))
    await asyncio.sleep(0.02)
    assert (await mine.get("big"))[0] is not None and "big" not in near
    await mine.close()


# ------------------------------------------------------------------ coherence across processes


async def purge_delete(other: RedisStore) -> None:
    await other.delete(["k"])


async def purge_variants(other: RedisStore) -> None:
    await other.delete_variants(["k"])


async def purge_tag(other: RedisStore) -> None:
    await other.invalidate_tags(["t"])


async def purge_clear(other: RedisStore) -> None:
    await other.clear()


async def purge_overwrite(other: RedisStore) -> None:
    await other.set("k", entry(b"v2", tags=("t",)))


async def purge_flushall(other: RedisStore) -> None:
    await other.client.flushall()


PURGES = {
    "delete": purge_delete,
    "variants": purge_variants,
    "tag": purge_tag,
    "clear": purge_clear,
    "overwrite": purge_overwrite,
    "flushall": purge_flushall,
}


@pytest.mark.parametrize("how", list(PURGES))
async def test_a_write_by_another_store_is_seen_within_milliseconds(
    stores: tuple[RedisStore, RedisStore], how: str
) -> None:
    mine, other = stores
    for key in ("k", "k#gzip"):
        await other.set(key, entry(b"v1", tags=("t",)))
    for key in ("k", "k#gzip"):
        await cached_near(mine, key)
    start = time.perf_counter()
    await PURGES[how](other)
    near = near_of(mine)
    took = await wait_for(lambda: "k" not in near, LATENCY_LIMIT, f"{how} reaches L1")
    total = time.perf_counter() - start
    print(f"\nnear cache: {how} by another store: gone {took * 1000:.2f} ms after the call"
          f" returned, {total * 1000:.2f} ms after it was issued")  # fmt: skip
    found, _ = await mine.get("k")
    assert found is None if how != "overwrite" else found is not None and found.body == b"v2"
    if how in ("variants", "tag", "clear", "flushall"):
        await wait_for(lambda: "k#gzip" not in near, LATENCY_LIMIT, "the variant too")
        assert (await mine.get("k#gzip"))[0] is None


SUBPROCESS = """
import asyncio, sys, time
from cachekit import Cache, CacheSettings
from cachekit.app import build_store

async def main() -> None:
    settings = CacheSettings(redis_url=sys.argv[1], namespace=sys.argv[2])
    cache = Cache(settings, build_store(settings))
    before = time.time()
    if sys.argv[3] == "clear":
        await cache.clear()
    else:
        await cache.invalidate_tags("t")
    print(before, time.time(), flush=True)
    await cache.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["tag", "clear"])
async def test_a_purge_by_another_process_is_seen_within_milliseconds(
    stores: tuple[RedisStore, RedisStore], real_redis_url: str, how: str
) -> None:
    mine, other = stores
    near = near_of(mine)
    await other.set("k", entry(tags=("t",)))
    await cached_near(mine, "k")
    seen_at: list[float] = []

    async def watch() -> None:
        await wait_for(lambda: "k" not in near, 30.0, "the purge reaches this process")
        seen_at.append(time.time())

    watcher = asyncio.get_running_loop().create_task(watch())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUBPROCESS, real_redis_url, NAMESPACE, how,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    began, returned = map(float, output.split())
    await asyncio.wait_for(watcher, LATENCY_LIMIT)
    latency = seen_at[0] - returned
    print(f"\nnear cache: {how} by another process seen {latency * 1000:+.2f} ms after its call"
          f" returned ({(seen_at[0] - began) * 1000:.2f} ms after it began)")  # fmt: skip
    assert seen_at[0] - began < LATENCY_LIMIT
    assert (await mine.get("k"))[0] is None


# ------------------------------------------------------------------ own writes, race, failures


async def test_own_writes_drop_the_local_copy_at_once(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, _ = stores
    near = near_of(mine)
    for write in (
        lambda: mine.set("k", entry(b"v2")),
        lambda: mine.delete(["k"]),
        lambda: mine.invalidate_tags(["t"]),
        mine.clear,
    ):
        await mine.set("k", entry(b"v1", tags=("t",)))
        await cached_near(mine, "k")
        await write()
        assert "k" not in near  # no waiting for Redis's message


async def test_an_invalidation_during_a_lookup_voids_its_insert(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MGET reads v1; before its result is kept, another process writes v2 and its
    invalidation arrives: v1 must not enter the near cache (it would stay there)."""
    mine, other = stores
    near = near_of(mine)
    await other.set("k", entry(b"v1"))
    await asyncio.sleep(0.02)
    topology = mine.topology
    read = topology.read

    async def read_then_race(keys: list[str]) -> Any:
        result = await read(keys)
        seen = near.invalidations
        await other.set("k", entry(b"v2"))
        await wait_for(lambda: near.invalidations > seen, 1.0, "the invalidation arrives")
        return result

    # Through `read` in a task: a lookup answered from the channel's read callback
    # offers its entries in the same callback, so nothing can arrive in between there.
    monkeypatch.setattr(topology, "send_now", lambda keys, batch: None)
    monkeypatch.setattr(topology, "read", read_then_race)
    skipped = near.skipped
    found, _ = await mine.get("k")
    assert found is not None and found.body == b"v1"  # what Redis held when it was read
    assert "k" not in near and near.skipped == skipped + 1
    monkeypatch.undo()
    assert (await cached_near(mine, "k")).body == b"v2"


async def test_a_generation_change_during_a_lookup_voids_its_insert(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = stores
    near = near_of(mine)
    await other.set("k", entry(b"v1"))
    await asyncio.sleep(0.02)
    topology = mine.topology
    read = topology.read

    async def read_then_clear(keys: list[str]) -> Any:
        result = await read(keys)
        flushes = near.flushes
        await other.clear()
        await wait_for(lambda: near.flushes > flushes, 1.0, "the generation message arrives")
        return result

    monkeypatch.setattr(topology, "send_now", lambda keys, batch: None)  # as above
    monkeypatch.setattr(topology, "read", read_then_clear)
    assert (await mine.get("k"))[0] is not None
    assert "k" not in near


def unit_near(max_bytes: int = NEAR_BYTES) -> NearCache:
    """A near cache without a listener: liveness is set by hand."""

    def no_connection() -> Any:
        raise AssertionError("not started in unit tests")

    near = NearCache(no_connection, KeyLayout("ns"), max_bytes, 10.0, 0.5)
    near.live = True
    return near


def test_offer_rules() -> None:
    near = unit_near()
    result = (entry(), 0)
    near.invalidate("early")  # before the lookup was issued: irrelevant to it
    ticket = near._seq
    near.offer("early", result, ticket)
    assert "early" in near
    near._watched["raced"] = 1
    near.invalidate("raced")  # after: the value read may predate the write
    near.offer("raced", result, ticket)
    near.offer("stale", (entry(ttl=0, stored_at=time.time() - 1), 0), near._seq)
    near.offer("stub", (entry(vary_stub=True), 0), near._seq)
    assert "raced" not in near and "stale" not in near and "stub" not in near
    ticket = near._seq
    near.flush()
    near.offer("flushed", result, ticket)
    near.live = False
    near.offer("dead", result, near._seq)
    assert len(near) == 0


def test_lookups_issued_before_the_channel_was_subscribed_never_insert() -> None:
    """Writes between such a lookup's MGET and the subscription sent no message to us."""
    near = unit_near()
    near._went_dead()
    ticket = near._seq
    near._went_live()
    near.offer("k", (entry(), 0), ticket)
    assert "k" not in near
    near.offer("k", (entry(), 0), near._seq)
    assert "k" in near
    near._went_dead()
    assert len(near) == 0 and not near.live


def test_messages_map_back_to_logical_keys() -> None:
    near = unit_near()
    for key in ("a", "b#gzip", "c{x}#v#w"):
        near.offer(key, (entry(), 0), near._seq)
    channel = near_module.INVALIDATE_CHANNEL
    near._apply([b"pong", b""])
    near._apply([b"message", channel, [b"ns:e:{b}#gzip", b"ns:e:{c{x}}#v#w"]])
    assert "a" in near and "b#gzip" not in near and "c{x}#v#w" not in near
    near._apply([b"message", channel, [b"ns:gen"]])
    assert len(near) == 0
    near.offer("a", (entry(), 0), near._seq)
    near._apply([b"message", channel, None])  # FLUSHALL
    assert len(near) == 0
    with pytest.raises(ValueError, match="unexpected"):
        near._apply(b"garbage")


async def near_hit(client: Any, cache: Cache, path: str) -> str:
    """GET `path` until the near cache answers it (the fill's own invalidation may void the
    first lookups after it); returns the body."""
    hits = cache.stats()["near_hits"]
    for _ in range(100):
        response = await client.get(path)
        assert response.status == 200
        if cache.stats()["near_hits"] > hits:
            assert response.headers["X-Cache"] == "HIT"
            return str(await response.text())
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never answered from the near cache")


async def test_losing_redis_turns_the_near_cache_off_and_requests_fail_open(
    make_redis_server: MakeRedisServer, aiohttp_client: Any
) -> None:
    server = make_redis_server()
    routes = web.RouteTableDef()
    calls = [0]

    @routes.get("/thing")
    @cached(ttl=60)
    async def thing(request: web.Request) -> web.Response:
        calls[0] += 1
        return web.Response(text=str(calls[0]))

    store = near_store(server.url)
    app, cache = make_app(routes, store=store, failure_threshold=100, failure_cooldown=0.05)
    client = await aiohttp_client(app)
    near = await live(store)
    assert (await client.get("/thing")).headers["X-Cache"] == "MISS"
    await near_hit(client, cache, "/thing")
    assert len(near) == 1

    server.kill()
    await wait_for(lambda: not near.live, 2.0, "the listener notices")
    assert len(near) == 0
    served = calls[0]
    for _ in range(3):
        response = await client.get("/thing")
        assert response.status == 200 and response.headers["X-Cache"] == "MISS"
    assert calls[0] == served + 3  # fail open: every request ran the handler
    with pytest.raises(StoreError):
        await store.get("/thing")

    server.restart()
    await wait_for(lambda: near.live, 10.0, "the listener reconnects")
    assert (await client.get("/thing")).headers["X-Cache"] == "MISS"  # Redis lost it all
    await near_hit(client, cache, "/thing")


async def test_a_silent_listener_connection_turns_the_near_cache_off(
    make_redis_server: MakeRedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung server (SIGSTOP) closes nothing: the unanswered PING must reveal it."""
    monkeypatch.setattr(near_module, "PING_INTERVAL", 0.1)
    server = make_redis_server()
    store = near_store(server.url)
    near = await live(store)
    await store.set("k", entry())
    await cached_near(store, "k")
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        took = await wait_for(lambda: not near.live, 1.0, "the missing PONG is noticed")
        assert len(near) == 0 and took < 0.5
    finally:
        os.kill(server.pid, signal.SIGCONT)
    await wait_for(lambda: near.live, 10.0, "the listener reconnects")
    await cached_near(store, "k")
    await store.close()


async def test_close_stops_the_listener(real_redis_url: str) -> None:
    store = near_store(real_redis_url)
    near = await live(store)
    task = near._task
    assert task is not None
    await store.close()
    assert task.done() and not near.live
    async with redis.asyncio.Redis.from_url(real_redis_url) as client:
        names = [c["name"] for c in await client.client_list()]
    assert not any(name.startswith("cachekit-near") for name in names)


# ------------------------------------------------------------------ through the app


def tagged_routes() -> tuple[web.RouteTableDef, list[int]]:
    routes = web.RouteTableDef()
    calls = [0]

    @routes.get("/product")
    @cached(ttl=60)
    async def product(request: web.Request) -> web.Response:
        calls[0] += 1
        tag(request, "products")
        return web.Response(text=f"v{calls[0]}")

    @routes.get("/fleeting")
    @cached(ttl=0.2)
    async def fleeting(request: web.Request) -> web.Response:
        calls[0] += 1
        return web.Response(text=f"f{calls[0]}")

    return routes, calls


async def test_app_hits_from_the_near_cache_and_sees_other_workers_purges(
    real_redis_url: str, aiohttp_client: Any
) -> None:
    routes, calls = tagged_routes()
    app, cache = make_app(
        routes, redis_url=real_redis_url, near_cache_max_bytes=NEAR_BYTES, stale_ttl=30
    )
    client = await aiohttp_client(app)
    store = cache.store
    assert isinstance(store, RedisStore)
    await live(store)
    assert (await client.get("/product")).headers["X-Cache"] == "MISS"
    assert await near_hit(client, cache, "/product") == "v1"

    other_settings = settings(redis_url=real_redis_url)
    other = Cache(other_settings, build_store(other_settings))
    assert await other.invalidate_tags("products") == 1
    await other.close()
    near = near_of(store)
    await wait_for(lambda: len(near) == 0, LATENCY_LIMIT, "the purge reaches this worker")
    response = await client.get("/product")
    assert response.headers["X-Cache"] == "MISS" and await response.text() == "v2"

    # Past its TTL the entry is left to Redis: served stale once, refreshed in background.
    assert (await client.get("/fleeting")).headers["X-Cache"] == "MISS"
    await asyncio.sleep(0.25)
    stale = await client.get("/fleeting")
    assert stale.headers["X-Cache"] == "STALE"
    assert calls[0] >= 3


@pytest.mark.slow
async def test_sentinel_failover_keeps_the_near_cache_coherent(
    redis_sentinel: RedisSentinelSetup,
) -> None:
    """After a promotion, writes on the new primary still reach the near cache (through
    replication while the listener is on the demoted primary), and the listener follows the
    store's pool to the new primary as soon as the pool has moved."""
    host, port = redis_sentinel.sentinels[0]
    url, service = f"redis://{host}:{port}", redis_sentinel.service_name
    mine = SentinelStore.connect(url, service, NAMESPACE, 0.5, near_max_bytes=NEAR_BYTES)
    other = SentinelStore.connect(url, service, NAMESPACE, 0.5)
    near = await live(mine)
    await other.set("k", entry(b"v1"))
    await cached_near(mine, "k")
    await asyncio.get_running_loop().run_in_executor(None, redis_sentinel.failover)
    await wait_for(lambda: "k" not in near or near.live, 1.0, "the listener survives")
    for _ in range(100):  # `other` finds the new primary on its first write's READONLY
        try:
            await other.set("k", entry(b"v2"))
            break
        except StoreError:
            await asyncio.sleep(0.05)
    await wait_for(lambda: "k" not in near, LATENCY_LIMIT, "a write on the new primary")

    for _ in range(100):  # our own write moves our pool to the new primary, too
        try:
            await mine.set("mine", entry())
            break
        except StoreError:
            await asyncio.sleep(0.05)
    new_primary = redis_sentinel.primary

    def listener_on_new_primary() -> bool:
        with new_primary.client() as client:
            names = [c["name"] for c in client.client_list()]
        return near.live and "cachekit-near:test" in names

    await wait_for(listener_on_new_primary, 5.0, "the listener follows the pool")
    assert (await cached_near(mine, "k")).body == b"v2"
    await mine.close()
    await other.close()
