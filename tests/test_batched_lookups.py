"""The lookup batcher (`cachekit.backends.batched_lookups`) on its own: a scripted round trip
and observer instead of Redis and the near cache. (Batching against a socket, on asyncio
and uvloop, is in `test_lookup_channel.py`.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest

from cachekit.backends.base import Answer, StoreError
from cachekit.backends.batched_lookups import LookupBatch, LookupBatcher, RawValues
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.entry_format import encode

#: The ticket the fake Redis holds (`G:P` = 5:9), as lookups return it.
TICKET = 5 << 32 | 9


def encoded(
    body: bytes,
    generation: int = TICKET,
    tags: tuple[str, ...] = (),
    versions: tuple[str, ...] = (),
) -> bytes:
    entry = CachedResponse(200, (), body, time.time(), 60.0, generation=generation, tags=tags)
    return encode(entry, versions)


class Reads:
    """`MgetReads` over a dict: `read` in a task, or `send_now` answered by the test."""

    def __init__(self, values: dict[str, bytes], *, send_now: bool = False) -> None:
        self.values = values
        self.generation = b"5:9"
        self.versions: dict[str, bytes] = {}
        self.version_reads: list[list[str]] = []
        self.reads: list[list[str]] = []
        self.sent: list[LookupBatch] = []
        self.abandoned = 0
        self._send_now = send_now

    async def read(self, keys: list[str]) -> RawValues:
        self.reads.append(keys)
        return self.generation, [self.values.get(key) for key in keys]

    async def read_versions(self, tags: list[str]) -> RawValues:
        self.version_reads.append(tags)
        return self.generation, [self.versions.get(tag) for tag in tags]

    def send_now(self, keys: list[str], batch: LookupBatch) -> Reads | None:
        if not self._send_now:
            return None
        self.sent.append(batch)
        return self

    def abandon(self) -> None:
        self.abandoned += 1

    def answer(self, batch: LookupBatch) -> None:
        """The reply of a batch sent by `send_now`, as the lookup channel hands it over."""
        batch.set_result([self.generation, *(self.values.get(key) for key in batch.keys)])


class Observer:
    """`LookupObserver` recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def watch(self, keys: Iterable[str]) -> int:
        self.calls.append(("watch", list(keys)))
        return 7

    def offer(self, key: str, result: Answer, ticket: int) -> None:
        self.calls.append(("offer", key, ticket))

    def unwatch(self, keys: Iterable[str]) -> None:
        self.calls.append(("unwatch", list(keys)))


dropped: list[tuple[str, bytes]] = []


async def drop(key: str, raw: bytes) -> None:
    dropped.append((key, raw))


async def test_lookups_of_one_loop_turn_share_one_read_and_observer_ticket() -> None:
    reads, observer = Reads({"a": encoded(b"A"), "b": encoded(b"B")}), Observer()
    batcher = LookupBatcher(reads, 1.0, drop, observer)
    results = await asyncio.gather(*(batcher.get(key) for key in ["a", "b", "a", "zz"]))
    assert reads.reads == [["a", "b", "zz"]]
    assert [(found.body if found else None, gen) for found, gen in results] == [
        (b"A", TICKET),
        (b"B", TICKET),
        (b"A", TICKET),
        (None, TICKET),
    ]
    # Watched before the read, entries offered with its ticket, released after.
    assert observer.calls == [
        ("watch", ["a", "b", "zz"]),
        ("offer", "a", 7),
        ("offer", "b", 7),
        ("unwatch", ["a", "b", "zz"]),
    ]
    assert batcher.stats() == {"lookup_batches": 1, "lookup_keys": 3, "lookups_waiting": 0}
    await batcher.close()


async def test_an_entry_of_another_generation_is_a_miss() -> None:
    reads = Reads({"old": encoded(b"old", generation=1 << 32)})
    reads.generation = b"2:0"
    batcher = LookupBatcher(reads, 1.0, drop)
    assert await batcher.get("old") == (None, 2 << 32)
    reads.generation = None  # the ticket key is missing: no entry is valid
    reads.values["new"] = encoded(b"new", generation=0)
    assert await batcher.get("new") == (None, 0)


async def test_tagged_entries_are_served_while_their_versions_are_current() -> None:
    reads, observer = Reads({"a": encoded(b"A", tags=("t", "u"), versions=("1", "1"))}), Observer()
    reads.versions = {"t": b"1", "u": b"1"}
    batcher = LookupBatcher(reads, 1.0, drop, observer)
    found, ticket = await batcher.get("a")
    assert found is not None and found.body == b"A" and ticket == TICKET
    assert reads.version_reads == [["t", "u"]]
    # Kept under the same ticket: the next lookup needs no second round trip, and is
    # offered to the near cache (the first, answered after the versions, was not).
    assert (await batcher.get("a"))[0] is not None
    assert reads.version_reads == [["t", "u"]]
    assert [call[0] for call in observer.calls].count("offer") == 1


async def test_a_purge_changes_the_ticket_and_voids_entries_of_its_tags() -> None:
    reads = Reads(
        {
            "a": encoded(b"A", tags=("t",), versions=("1",)),
            "b": encoded(b"B", tags=("u",), versions=("1",)),
        }
    )
    reads.versions = {"t": b"1", "u": b"1"}
    batcher = LookupBatcher(reads, 1.0, drop)
    assert (await batcher.get("a"))[0] is not None
    assert (await batcher.get("b"))[0] is not None
    reads.generation, reads.versions["t"] = b"5:10", b"2"  # a purge of `t`
    assert await batcher.get("a") == (None, 5 << 32 | 10)
    found, _ = await batcher.get("b")
    assert found is not None and found.body == b"B"  # `u` was not purged
    del reads.versions["u"]  # evicted: nothing can vouch for the entry
    reads.generation = b"5:11"
    assert (await batcher.get("b"))[0] is None


async def test_an_entry_with_tags_but_no_versions_is_a_miss() -> None:
    reads = Reads({"a": encoded(b"A", tags=("t",))})
    reads.versions = {"t": b"1"}
    batcher = LookupBatcher(reads, 1.0, drop)
    assert await batcher.get("a") == (None, TICKET)


async def test_a_failed_version_read_fails_its_lookups() -> None:
    reads = Reads({"a": encoded(b"A", tags=("t",), versions=("1",))})

    async def broken(tags: list[str]) -> RawValues:
        raise ConnectionError("gone")

    reads.read_versions = broken  # type: ignore[method-assign]
    batcher = LookupBatcher(reads, 1.0, drop)
    with pytest.raises(StoreError):
        await batcher.get("a")


async def test_a_damaged_value_fails_its_lookups_only_and_is_dropped() -> None:
    reads, observer = Reads({"bad": b"garbage", "good": encoded(b"G")}), Observer()
    batcher = LookupBatcher(reads, 1.0, drop, observer)
    bad, good = batcher.get("bad"), batcher.get("good")
    with pytest.raises(CorruptEntry):
        await bad
    assert (await good)[0] is not None
    await batcher.close()  # waits for the drop
    assert ("bad", b"garbage") in dropped
    assert ("offer", "bad", 7) not in observer.calls and observer.calls[-1][0] == "unwatch"


async def test_a_batch_sent_at_once_is_answered_by_its_reply() -> None:
    reads = Reads({"a": encoded(b"A")}, send_now=True)
    batcher = LookupBatcher(reads, 1.0, drop)
    waiter = batcher.get("a")
    await asyncio.sleep(0)
    (batch,) = reads.sent
    assert not batcher.tasks and batcher.in_flight == 1  # no task, no read
    reads.answer(batch)
    assert waiter.done() and (await waiter)[0] is not None
    assert batcher.in_flight == 0 and reads.abandoned == 0 and not reads.reads


async def test_a_batch_sent_at_once_expires_and_abandons_its_connection() -> None:
    reads = Reads({}, send_now=True)
    batcher = LookupBatcher(reads, 0.05, drop)
    with pytest.raises(StoreError, match="TimeoutError"):
        await batcher.get("a")
    assert reads.abandoned == 1 and batcher.in_flight == 0
    reads.answer(reads.sent[0])  # a late reply changes nothing


async def test_a_read_that_raises_fails_its_batch_and_the_next_goes_out() -> None:
    reads = Reads({"a": encoded(b"A")})
    original = reads.read

    async def failing(keys: list[str]) -> RawValues:
        reads.read = original  # type: ignore[method-assign]
        raise ConnectionError("down")

    reads.read = failing  # type: ignore[method-assign]
    batcher = LookupBatcher(reads, 1.0, drop)
    with pytest.raises(StoreError, match="down"):
        await batcher.get("a")
    assert (await batcher.get("a"))[0] is not None
