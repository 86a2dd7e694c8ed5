"""`KeyCensus` (cachekit/key_census.py): distinct keys per handler and window, in this
process (the embedded store) and in Redis HyperLogLogs shared by workers (fakeredis, a
real Redis, a real Cluster: backends/key_sketches.py); bounded in bytes; never raising."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest

from cachekit import key_census
from cachekit.backends.base import StoreError
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.redis import RedisStore
from cachekit.key_census import MAX_BYTES, MAX_HANDLERS, MAX_PARTS, KeyCensus
from cachekit.key_growth import RECENT_WINDOWS, WINDOW_SECONDS
from tests.apps import NAMESPACE
from tests.redis_servers import free_port

START = 1_700_000_400.0  # a window boundary
PREFIX = "h:"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def next_window(self, windows: int = 1) -> None:
        self.now += windows * WINDOW_SECONDS


@pytest.fixture
def clock() -> Clock:
    return Clock()


Workers = Callable[[], KeyCensus]


@pytest.fixture(params=["memory", "fakeredis", "redis", "cluster"])
async def worker(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Workers]:
    """Makes censuses on one store: on Redis, each is one more worker sharing the counts."""
    kind, stores = request.param, []
    server = fakeredis.FakeServer()

    def make() -> KeyCensus:
        if kind == "memory":
            return KeyCensus(clock)
        if kind == "fakeredis":
            store = RedisStore(fakeredis.FakeAsyncRedis(server=server), NAMESPACE, 2.0)
        elif kind == "redis":
            store = RedisStore.from_url(request.getfixturevalue("real_redis_url"), NAMESPACE, 2.0)
        else:
            url = request.getfixturevalue("cluster_url")
            store = ClusterStore.from_url(url, NAMESPACE, 2.0)
        stores.append(store)
        return KeyCensus(clock, store.key_sketches, 2.0)

    yield make
    for store in stores:
        await store.close()


def key(number: int) -> str:
    return f"{PREFIX}/item/{number}?"


async def test_windows_count_distinct_and_new_keys(worker: Workers, clock: Clock) -> None:
    census = worker()
    for number in range(200):  # window 0: 200 keys, each stored twice
        census.add("items", key(number), PREFIX)
        census.add("items", key(number), PREFIX)
    clock.next_window()
    for number in range(100, 400):  # window 1: 100 seen before, 200 new
        census.add("items", key(number), PREFIX)
    figures = await census.figures("items")
    assert figures is not None
    *older, first, second = figures.windows
    assert len(figures.windows) == RECENT_WINDOWS and all(w.distinct == 0 for w in older)
    assert second.start == clock.now and first.start == clock.now - WINDOW_SECONDS
    assert abs(first.distinct - 200) <= 4 and abs(first.new - 200) <= 4
    assert abs(second.distinct - 300) <= 6 and abs(second.new - 200) <= 8
    assert abs(figures.distinct - 400) <= 8
    assert await census.handlers() == ["items"]
    assert await census.figures("other") is None


async def test_old_windows_still_count_all_time(worker: Workers, clock: Clock) -> None:
    census = worker()
    for number in range(300):
        census.add("items", key(number), PREFIX)
    clock.next_window(RECENT_WINDOWS + 2)  # window 0 is no longer recent
    await census.flush()  # a worker folds it into the all-time count at a new window
    for number in range(250, 350):
        census.add("items", key(number), PREFIX)
    figures = await census.figures("items")
    assert figures is not None
    assert abs(figures.distinct - 350) <= 7
    # Keys stored an hour ago are not new: only 50 of the current window's 100 are.
    assert abs(figures.windows[-1].new - 50) <= 3 and abs(figures.windows[-1].distinct - 100) <= 3
    await census.flush()  # folding again changes nothing
    assert (await census.figures("items")) == figures


async def test_workers_share_counts_on_redis(worker: Workers, clock: Clock) -> None:
    first, second = worker(), worker()
    for number in range(300):
        first.add("items", key(number), PREFIX)
        second.add("items", key(number + 200), PREFIX)
    shared = first.shared is not None
    await second.flush()  # (figures() flushes the asking worker's own keys)
    total = (await first.figures("items")), (await second.figures("items"))
    assert total[0] is not None and total[1] is not None
    if shared:
        assert total[0] == total[1] and abs(total[0].distinct - 500) <= 10
    else:  # the embedded store: each process counts its own keys
        assert abs(total[0].distinct - 300) <= 6 and abs(total[1].distinct - 300) <= 6


async def test_key_parts_are_counted_at_most_16(worker: Workers) -> None:
    census = worker()
    for number in range(300):
        census.add("items", f"{PREFIX}/p?page=1&utm%5Fsource=s{number}#host=a", PREFIX)
    for name in range(40):
        census.add("items", f"{PREFIX}/p?n{name}=1", PREFIX)
        await census.flush()  # the bound holds across flushes to Redis too
    figures = await census.figures("items")
    assert figures is not None
    assert len(figures.parts) == MAX_PARTS  # the first 16 names seen
    assert figures.parts["q:page"] == 1 and figures.parts["h:host"] == 1
    assert abs(figures.parts["q:utm%5Fsource"] - 300) <= 300 * 0.2  # precision 8 locally


async def test_the_rule_fires_on_growth_and_not_on_a_repeating_set(
    worker: Workers, clock: Clock
) -> None:
    census = worker()
    for window in range(5):
        for number in range(400):
            census.add("flooded", f"{PREFIX}/p?utm%5Fsource={window}x{number}", PREFIX)
            census.add("steady", key(number), PREFIX)
        clock.next_window()
    from cachekit.key_growth import growth  # noqa: PLC0415

    flooded, steady = await census.figures("flooded"), await census.figures("steady")
    assert flooded is not None and steady is not None
    found = growth(flooded)
    assert found is not None and found.cause == "q:utm%5Fsource"
    assert growth(steady) is None
    assert [w.new for w in steady.windows[1:-1]] == [0, 0, 0, 0]  # exactly: same registers


def test_in_process_sketches_are_bounded_in_bytes(clock: Clock) -> None:
    census = KeyCensus(clock)
    for handler in range(MAX_HANDLERS + 5):
        for window in range(RECENT_WINDOWS + 3):
            for part in range(MAX_PARTS + 4):
                census.add(f"h{handler}", f"{PREFIX}/x?p{part}={window}#host=a", PREFIX)
            clock.next_window()
        clock.now = START
    stats = census.stats()
    assert 0 < stats["key_census_bytes"] <= MAX_BYTES <= 2.2 * (1 << 20)
    assert stats["key_census_untracked"] == 5 * (RECENT_WINDOWS + 3) * (MAX_PARTS + 4)


async def test_the_buffer_for_redis_is_bounded(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_census, "PENDING_MAX_BYTES", 10_000)
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
    census = KeyCensus(clock, store.key_sketches)
    for number in range(1_000):
        census.add("items", key(number), PREFIX)
    assert census.stats()["key_census_bytes"] <= 10_000
    assert census.dropped > 850
    await census.flush()
    assert census.stats()["key_census_bytes"] == 0
    figures = await census.figures("items")
    assert figures is not None and 0 < figures.distinct == 1_000 - census.dropped


async def test_a_burst_is_sent_before_the_buffer_fills(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_census, "PENDING_MAX_BYTES", 10_000)
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
    census = KeyCensus(clock, store.key_sketches)
    for burst in range(10):
        for number in range(60):  # over half the buffer
            census.add("items", key(burst * 60 + number), PREFIX)
        for _ in range(20):  # the early flush runs meanwhile
            await asyncio.sleep(0)
    assert census.dropped == 0
    figures = await census.figures("items")
    assert figures is not None and abs(figures.distinct - 600) <= 12


async def test_an_unreachable_redis_never_fails_counting(clock: Clock) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", NAMESPACE, 0.3)
    census = KeyCensus(clock, store.key_sketches, 0.3)
    try:
        census.add("items", key(1), PREFIX)
        await census.flush()  # counted, logged, not raised
        assert census.errors == 1 and census.stats()["key_census_bytes"] == 0
        with pytest.raises(StoreError):
            await census.figures("items")
    finally:
        await store.close()


def test_a_failure_inside_counting_is_counted_not_raised(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(key_census, "key_parts", broken)
    census = KeyCensus(clock)
    census.add("items", key(1), PREFIX)
    assert census.errors == 1


async def test_redis_key_names_come_from_the_layout(clock: Clock) -> None:
    client = fakeredis.FakeAsyncRedis()
    store = RedisStore(client, NAMESPACE, 2.0)
    census = KeyCensus(clock, store.key_sketches)
    census.add("get {x}", f"{PREFIX}/p?a=1", PREFIX)
    await census.flush()
    layout, window = store.layout, int(clock() // WINDOW_SECONDS)
    names = {name.decode() for name in await client.keys("*")}
    assert names - {layout.key_history_key("get {x}")} == {
        layout.counted_handlers_key,
        layout.key_window_key("get {x}", window),
        layout.key_parts_key("get {x}"),
        layout.key_part_key("get {x}", "q:a"),
    }
    # One hash tag per handler, free of the braces a name may hold; all of it expires.
    assert layout.key_window_key("get {x}", window) == f"test:k:{{:get%20%7Bx%7D}}:w:{window}"
    assert all([await client.ttl(name) > 0 for name in names])


async def test_the_last_keys_are_sent_when_the_app_stops_even_after_an_error(
    clock: Clock,
) -> None:
    store = RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 2.0)
    census = KeyCensus(clock, store.key_sketches)
    with pytest.raises(RuntimeError, match="while serving"):
        async with census.flushing():
            census.add("items", key(1), PREFIX)
            raise RuntimeError("while serving")
    assert census.stats()["key_census_bytes"] == 0  # flushed on the way out
    figures = await census.figures("items")
    assert figures is not None and figures.distinct == 1
    await store.close()
