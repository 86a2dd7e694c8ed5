"""The embedded store: byte-bounded LRU, TTLs on an injected clock, tags, variants, locks."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import keys
from cachekit.backends.memory import (
    ENTRY_OVERHEAD,
    HEADER_OVERHEAD,
    TAG_OVERHEAD,
    MemoryStore,
    entry_cost,
)
from cachekit.entry import CachedResponse

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (the memory store does no I/O)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the memory store suspended")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_entry(
    body: bytes = b"x",
    *,
    stored_at: float = 1000.0,
    ttl: float = 60.0,
    grace: float = 0.0,
    stale_if_error: float = 0.0,
    tags: tuple[str, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> CachedResponse:
    return CachedResponse(
        status=200,
        headers=headers,
        body=body,
        stored_at=stored_at,
        ttl=ttl,
        grace=grace,
        stale_if_error=stale_if_error,
        tags=tags,
    )


def cost(key: str, body_size: int) -> int:
    return entry_cost(key, make_entry(b"x" * body_size))


@pytest.fixture
def clock() -> Clock:
    return Clock()


# ------------------------------------------------------------------ sizes


def test_entry_cost_counts_every_part() -> None:
    entry = CachedResponse(
        200, (("Ab", "cde"), ("F", "")), b"12345", 0.0, 1.0, etag='"e"', tags=("t1", "tag2")
    )
    expected = (
        ENTRY_OVERHEAD
        + len("key")
        + 5
        + 3
        + (2 + 3 + HEADER_OVERHEAD)
        + (1 + 0 + HEADER_OVERHEAD)
        + (2 + TAG_OVERHEAD)
        + (4 + TAG_OVERHEAD)
    )
    assert entry_cost("key", entry) == expected


# ------------------------------------------------------------------ basic operations


class TestBasics:
    async def test_get_missing(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        assert await store.get("nope") == (None, 1)  # the ticket: 1 until a purge or clear
        assert store.get_now("nope") is None
        assert store.remote is False

    async def test_set_then_get(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        entry = make_entry(b"hello")
        assert await store.set("k", entry) is True
        assert await store.get("k") == (entry, 1)
        assert len(store) == 1
        assert store.used_bytes == entry_cost("k", entry)

    async def test_replacing_a_key_does_not_double_count(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("k", make_entry(b"a" * 100))
        newer = make_entry(b"b" * 10)
        await store.set("k", newer)
        assert len(store) == 1
        assert store.used_bytes == entry_cost("k", newer)
        assert store.get_now("k") == newer

    async def test_delete_counts_existing(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("a", make_entry())
        await store.set("b", make_entry())
        assert await store.delete(["a", "missing", "a"]) == 1
        assert store.get_now("a") is None
        assert store.get_now("b") is not None
        assert store.used_bytes == cost("b", 1)

    async def test_clear(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("a", make_entry(tags=("t",)))
        await store.set("b#v=1", make_entry())
        await store.clear()
        assert len(store) == 0
        assert store.used_bytes == 0
        assert store.get_now("a") is None
        assert await store.invalidate_tags(["t"]) == 0
        # Stored again from scratch without leftovers.
        await store.set("a", make_entry(tags=("t",)))
        assert await store.invalidate_tags(["t"]) == 1

    async def test_close_drops_everything(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("a", make_entry())
        await store.close()
        assert len(store) == 0 and store.used_bytes == 0


# ------------------------------------------------------------------ LRU by bytes


class TestEviction:
    async def test_least_recently_used_goes_first(self, clock: Clock) -> None:
        per_entry = cost("a", 100)
        store = MemoryStore(per_entry * 3, clock=clock)
        for key in "abc":
            await store.set(key, make_entry(b"x" * 100))
        assert store.get_now("a") is not None  # a is now the most recently used
        await store.set("d", make_entry(b"x" * 100))
        assert store.get_now("b") is None
        assert {k for k in "acd" if store.get_now(k) is not None} == set("acd")
        assert store.used_bytes == per_entry * 3

    async def test_async_get_also_refreshes_recency(self, clock: Clock) -> None:
        store = MemoryStore(cost("a", 100) * 2, clock=clock)
        await store.set("a", make_entry(b"x" * 100))
        await store.set("b", make_entry(b"x" * 100))
        await store.get("a")
        await store.set("c", make_entry(b"x" * 100))
        assert store.get_now("a") is not None
        assert store.get_now("b") is None

    async def test_a_large_entry_evicts_as_many_as_needed(self, clock: Clock) -> None:
        small = cost("a", 0)
        store = MemoryStore(small * 4, clock=clock)
        for key in "abcd":
            await store.set(key, make_entry(b""))
        big = make_entry(b"x" * (small * 2))
        assert await store.set("e", big)
        assert store.get_now("e") == big
        assert store.used_bytes <= store.max_bytes
        assert len(store) == 1 + sum(store.get_now(k) is not None for k in "abcd")
        assert store.get_now("a") is None and store.get_now("b") is None

    async def test_oversize_entry_is_not_kept_and_evicts_nothing(self, clock: Clock) -> None:
        store = MemoryStore(2_000, clock=clock)
        await store.set("a", make_entry(b"x" * 10))
        before = store.used_bytes
        assert await store.set("huge", make_entry(b"x" * 5_000)) is False
        assert store.get_now("huge") is None
        assert store.get_now("a") is not None
        assert store.used_bytes == before

    async def test_oversize_replacement_drops_the_old_version(self, clock: Clock) -> None:
        store = MemoryStore(2_000, clock=clock)
        await store.set("k", make_entry(b"old"))
        assert await store.set("k", make_entry(b"x" * 5_000)) is False
        assert store.get_now("k") is None
        assert store.used_bytes == 0

    async def test_entry_exactly_at_budget_fits(self, clock: Clock) -> None:
        store = MemoryStore(cost("k", 50), clock=clock)
        assert await store.set("k", make_entry(b"x" * 50))
        assert store.used_bytes == store.max_bytes

    async def test_evicted_entries_leave_the_tag_index(self, clock: Clock) -> None:
        store = MemoryStore(cost("a", 100) + TAG_OVERHEAD + 10, clock=clock)
        await store.set("a", make_entry(b"x" * 100, tags=("t",)))
        await store.set("b", make_entry(b"x" * 100))  # evicts a
        assert store.get_now("a") is None
        assert await store.invalidate_tags(["t"]) == 0
        assert store.get_now("b") is not None

    @settings(max_examples=60)
    @given(
        st.integers(600, 5_000),
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("set"),
                    st.sampled_from(["a", "b", "c", "d", "e", "b#v=1", "b#v=2"]),
                    st.integers(0, 3_000),
                    st.sampled_from([(), ("t",), ("t", "u")]),
                ),
                st.tuples(st.just("get"), st.sampled_from(["a", "b", "c", "b#v=1"])),
                st.tuples(st.just("delete"), st.sampled_from(["a", "b", "c", "b#v=2"])),
                st.tuples(st.just("tick"), st.floats(0, 40)),
                st.tuples(st.just("invalidate"), st.sampled_from(["t", "u", "x"])),
            ),
            max_size=40,
        ),
    )
    def test_used_bytes_never_exceeds_budget(
        self, max_bytes: int, operations: list[tuple[Any, ...]]
    ) -> None:
        clock = Clock()
        store = MemoryStore(max_bytes, clock=clock)
        for operation in operations:
            match operation:
                case ("set", key, size, tags):
                    entry = make_entry(b"x" * size, stored_at=clock.now, ttl=30.0, tags=tags)
                    stored = run(store.set(key, entry))
                    assert stored == (entry_cost(key, entry) <= max_bytes)
                    if stored:
                        assert store.get_now(key) == entry
                case ("get", key):
                    store.get_now(key)
                case ("delete", key):
                    run(store.delete([key]))
                    assert store.get_now(key) is None
                case ("tick", seconds):
                    clock.now += seconds
                case ("invalidate", tag):
                    run(store.invalidate_tags([tag]))
            assert 0 <= store.used_bytes <= max_bytes
            live = store._entries
            assert store.used_bytes == sum(entry_cost(k, e) for k, (e, _) in live.items())
            assert len(store) == len(live)


# ------------------------------------------------------------------ TTL


class TestExpiry:
    async def test_entry_lives_until_stored_at_plus_keep_for(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        entry = make_entry(stored_at=1000.0, ttl=10.0, grace=5.0, stale_if_error=3.0)
        await store.set("k", entry)
        clock.now = 1014.999
        assert store.get_now("k") == entry  # stale but inside the grace window
        clock.now = 1015.0
        assert store.get_now("k") is None
        assert len(store) == 0
        assert store.used_bytes == 0

    async def test_stale_if_error_window_keeps_the_entry(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("k", make_entry(stored_at=1000.0, ttl=10.0, stale_if_error=50.0))
        clock.now = 1059.0
        assert store.get_now("k") is not None
        clock.now = 1060.0
        assert await store.get("k") == (None, 1)

    async def test_expiry_uses_the_entry_stored_at_not_the_insert_time(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        clock.now = 2000.0
        await store.set("k", make_entry(stored_at=1000.0, ttl=60.0))
        assert store.get_now("k") is None

    async def test_zero_ttl_is_gone_immediately(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("k", make_entry(stored_at=clock.now, ttl=0.0))
        assert store.get_now("k") is None

    async def test_expired_entry_leaves_the_tag_index(self, clock: Clock) -> None:
        store = MemoryStore(10_000, clock=clock)
        await store.set("k", make_entry(stored_at=1000.0, ttl=1.0, tags=("t",)))
        clock.now = 1001.0
        assert store.get_now("k") is None
        assert await store.invalidate_tags(["t"]) == 0


# ------------------------------------------------------------------ tags


class TestTags:
    async def test_invalidate_removes_tagged_entries_only(self, clock: Clock) -> None:
        store = MemoryStore(100_000, clock=clock)
        await store.set("p1", make_entry(tags=("product:1", "catalogue")))
        await store.set("p2", make_entry(tags=("product:2", "catalogue")))
        await store.set("home", make_entry(tags=("home",)))
        assert await store.invalidate_tags(["product:1"]) == 1
        assert store.get_now("p1") is None
        assert store.get_now("p2") is not None
        assert await store.invalidate_tags(["catalogue", "home"]) == 2
        assert len(store) == 0
        assert store.used_bytes == 0

    async def test_overlapping_tags_count_each_entry_once(self, clock: Clock) -> None:
        store = MemoryStore(100_000, clock=clock)
        await store.set("k", make_entry(tags=("a", "b")))
        assert await store.invalidate_tags(iter(["a", "b", "a"])) == 1

    async def test_unknown_and_no_tags(self, clock: Clock) -> None:
        store = MemoryStore(100_000, clock=clock)
        await store.set("k", make_entry(tags=("a",)))
        assert await store.invalidate_tags([]) == 0
        assert await store.invalidate_tags(["zzz"]) == 0
        assert store.get_now("k") is not None

    async def test_replaced_entry_loses_its_old_tags(self, clock: Clock) -> None:
        store = MemoryStore(100_000, clock=clock)
        await store.set("k", make_entry(tags=("old",)))
        await store.set("k", make_entry(tags=("new",)))
        assert await store.invalidate_tags(["old"]) == 0
        assert store.get_now("k") is not None
        assert await store.invalidate_tags(["new"]) == 1

    async def test_deleted_entry_leaves_the_tag_index(self, clock: Clock) -> None:
        store = MemoryStore(100_000, clock=clock)
        await store.set("k", make_entry(tags=("t",)))
        await store.delete(["k"])
        await store.set("other", make_entry())
        assert await store.invalidate_tags(["t"]) == 0
        assert store.get_now("other") is not None


# ------------------------------------------------------------------ Vary variants


class TestVariants:
    async def test_variant_limit(self, clock: Clock) -> None:
        store = MemoryStore(1_000_000, clock=clock, max_variants=3)
        for value in range(3):
            assert await store.set(f"base#l={value}", make_entry())
        assert await store.set("base#l=3", make_entry()) is False
        assert store.get_now("base#l=3") is None
        # Another base has its own budget; the base key itself is not a variant.
        assert await store.set("other#l=0", make_entry())
        assert await store.set("base", make_entry())
        # Replacing an existing variant is always allowed.
        assert await store.set("base#l=1", make_entry(b"new"))
        assert store.get_now("base#l=1") == make_entry(b"new")

    async def test_expired_variants_make_room(self, clock: Clock) -> None:
        store = MemoryStore(1_000_000, clock=clock, max_variants=2)
        await store.set("b#v=1", make_entry(stored_at=1000.0, ttl=5.0))
        await store.set("b#v=2", make_entry(stored_at=1000.0, ttl=500.0))
        clock.now = 1010.0
        assert await store.set("b#v=3", make_entry(stored_at=1010.0))
        assert store.get_now("b#v=2") is not None

    async def test_deleted_variants_make_room(self, clock: Clock) -> None:
        store = MemoryStore(1_000_000, clock=clock, max_variants=1)
        await store.set("b#v=1", make_entry())
        await store.delete(["b#v=1"])
        assert await store.set("b#v=2", make_entry())

    async def test_delete_variants(self, clock: Clock) -> None:
        store = MemoryStore(1_000_000, clock=clock)
        for key in ["b", "b#v=1", "b#v=2", "c", "c#v=1", "bb#v=1"]:
            await store.set(key, make_entry())
        assert await store.delete_variants(["b"]) == 3
        assert {k for k in ["b", "b#v=1", "b#v=2"] if store.get_now(k)} == set()
        assert all(store.get_now(k) for k in ["c", "c#v=1", "bb#v=1"])
        assert await store.delete_variants(["b", "nothing"]) == 0

    async def test_long_keys_are_not_mistaken_for_variants(self, clock: Clock) -> None:
        store = MemoryStore(10_000_000, clock=clock)
        common = "search:/s?q=" + "x" * 300
        stored = [
            await store.set(keys.compose(f"{common}{n}", "", 250), make_entry()) for n in range(40)
        ]
        assert all(stored)
        assert len(store) == 40

    async def test_delete_variants_of_a_long_base(self, clock: Clock) -> None:
        store = MemoryStore(10_000_000, clock=clock)
        base = "search:/s?q=" + "x" * 300
        bounded = keys.bound_length(base, 250)
        for suffix in ["", "#l=en", "#l=fr"]:
            await store.set(keys.compose(base, suffix, 250), make_entry())
        assert await store.delete_variants([bounded]) == 3


# ------------------------------------------------------------------ fill locks


class TestLocks:
    async def test_one_holder_at_a_time(self, clock: Clock) -> None:
        store = MemoryStore(1_000, clock=clock)
        assert await store.acquire_lock("k", "t1", 10.0)
        assert not await store.acquire_lock("k", "t2", 10.0)
        assert not await store.acquire_lock("k", "t1", 10.0)  # not re-entrant either
        assert await store.acquire_lock("other", "t2", 10.0)

    async def test_release_needs_the_owning_token(self, clock: Clock) -> None:
        store = MemoryStore(1_000, clock=clock)
        await store.acquire_lock("k", "t1", 10.0)
        await store.release_lock("k", "t2")
        assert not await store.acquire_lock("k", "t2", 10.0)
        await store.release_lock("k", "t1")
        assert await store.acquire_lock("k", "t2", 10.0)

    async def test_release_of_unknown_lock_is_harmless(self, clock: Clock) -> None:
        store = MemoryStore(1_000, clock=clock)
        await store.release_lock("never", "t")
        assert await store.acquire_lock("never", "t", 1.0)

    async def test_lock_expires(self, clock: Clock) -> None:
        store = MemoryStore(1_000, clock=clock)
        await store.acquire_lock("k", "t1", 10.0)
        clock.now += 9.999
        assert not await store.acquire_lock("k", "t2", 10.0)
        clock.now += 0.001
        assert await store.acquire_lock("k", "t2", 10.0)
        # The first holder's late release must not free the new holder's lock.
        await store.release_lock("k", "t1")
        assert not await store.acquire_lock("k", "t3", 10.0)
