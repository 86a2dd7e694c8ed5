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
from cachekit.entry import CachedResponse, CorruptEntry, encode


def encoded(body: bytes, generation: int = 0) -> bytes:
    return encode(CachedResponse(200, (), body, time.time(), 60.0, generation=generation))


class Reads:
    """`MgetReads` over a dict: `read` in a task, or `send_now` answered by the test."""

    def __init__(self, values: dict[str, bytes], *, send_now: bool = False) -> None:
        self.values = values
        self.generation = b"0"
        self.reads: list[list[str]] = []
        self.sent: list[LookupBatch] = []
        self.abandoned = 0
        self._send_now = send_now

    async def read(self, keys: list[str]) -> RawValues:
        self.reads.append(keys)
        return self.generation, [self.values.get(key) for key in keys]

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
        (b"A", 0),
        (b"B", 0),
        (b"A", 0),
        (None, 0),
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
    reads = Reads({"old": encoded(b"old", generation=1)})
    reads.generation = b"2"
    batcher = LookupBatcher(reads, 1.0, drop)
    assert await batcher.get("old") == (None, 2)


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
