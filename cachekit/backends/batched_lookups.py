"""Lookups of the Redis stores: batched per event-loop turn, bounded in flight.

Lookups issued in the same event-loop turn share one MGET (together with the generation
key). At most `MAX_BATCHES_IN_FLIGHT` batches are out at once; lookups arriving meanwhile
wait for one to be answered and then go out together, each still resolving within the
store timeout counted from its own `get`. The subclass provides the round trip (`_read`)
and the removal of a damaged entry (`_drop_damaged`).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import Future
from collections.abc import Iterable
from typing import Any, Final

from redis.exceptions import RedisClusterException, RedisError

from cachekit.backends.base import LOOKUP_TIME, StoreError
from cachekit.backends.layout import KeyLayout
from cachekit.backends.near import NearCache
from cachekit.entry import CachedResponse, CorruptEntry, decode

#: Everything redis-py (and the lookup channel) raises for an unreachable or misbehaving
#: server.
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)
#: Lookup batches (MGETs) in flight at once per store. Lookups that arrive while this many
#: are out wait for the next reply and then go out together: under load a few large
#: batches instead of many of one key each, whose round trip costs as much as a large one.
#: One rather than two since hits got cheaper (bench/README.md, A/B/A/B under wrk): a hot
#: Redis key 0.85-0.86 vs 0.81-0.82 of `limit`, p99 1.15 vs 1.22 ms; 1,000 keys 0.63-0.65
#: vs 0.62-0.63. Each lookup still resolves within the store timeout from its own `get`.
MAX_BATCHES_IN_FLIGHT: Final = 1
#: Most keys per MGET: beyond it, waiting lookups go out without waiting for the batches in
#: flight, split into MGETs of at most this many keys (bounded reply size and latency).
MAX_BATCH_KEYS: Final = 512

Waiters = list[asyncio.Future[tuple[CachedResponse | None, int]]]


class BatchedLookups(KeyLayout):
    """The lookup half of a Redis store (see the module docstring)."""

    def __init__(self, namespace: str, timeout: float) -> None:
        super().__init__(namespace)  # the key layout (entry_key, tag_key, ...)
        self._timeout = timeout
        self._near: NearCache | None = None
        self._pending: dict[str, Waiters] = {}
        self._pending_since = 0.0  # loop time of the oldest pending lookup
        self._flush_scheduled = False
        self._in_flight = 0  # lookup batches sent and not yet answered
        self._batches: set[asyncio.Task[None]] = set()
        #: Lookup batches (MGETs) sent and the keys they carried, for `Cache.stats()`.
        self.lookup_batches = 0
        self.lookup_keys = 0

    def lookup_stats(self) -> dict[str, int]:
        """Batches sent, keys looked up in them, and the lookups waiting right now."""
        return {
            "lookup_batches": self.lookup_batches,
            "lookup_keys": self.lookup_keys,
            "lookups_waiting": sum(len(waiters) for waiters in self._pending.values()),
        }

    async def _read(self, keys: list[str]) -> tuple[bytes | None, list[bytes | None]]:
        """The generation and the entries of these logical keys, in one round trip."""
        raise NotImplementedError

    async def _drop_damaged(self, key: str, raw: bytes) -> None:
        """Delete the entry of `key` if it still holds these (undecodable) bytes."""
        raise NotImplementedError

    def get(self, key: str) -> asyncio.Future[tuple[CachedResponse | None, int]]:
        """See `Store.get`. Resolves within the store timeout (or with `StoreError`);
        a near-cache hit returns a future already done (awaiting it does not yield)."""
        now = time.time()
        LOOKUP_TIME.set(now)  # a plain function: this is the caller's context
        loop = asyncio.get_running_loop()
        # Future(loop=...) rather than loop.create_future(): the same object on asyncio's
        # loop, without a Python method call per lookup.
        waiter: asyncio.Future[tuple[CachedResponse | None, int]] = Future(loop=loop)
        near = self._near
        if near is not None:
            found = near.lookup(key, now)
            if found is not None:
                waiter.set_result(found)
                return waiter
        pending = self._pending
        if not pending:
            self._pending_since = loop.time()
            if self._in_flight < MAX_BATCHES_IN_FLIGHT:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        elif len(pending) >= MAX_BATCH_KEYS and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        waiters = pending.get(key)
        if waiters is None:
            pending[key] = [waiter]
        else:
            waiters.append(waiter)  # a hot key: one MGET slot for all its lookups
        return waiter

    def _flush(self) -> None:
        """Send the pending lookups as one batch (called once per event-loop turn, or when
        a batch in flight was answered)."""
        self._flush_scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        # Each lookup resolves within the store timeout counted from its `get`, also when
        # it waited here for a batch in flight.
        deadline = self._pending_since + self._timeout
        if len(pending) <= MAX_BATCH_KEYS:
            self._send(pending, deadline)
            return
        items = list(pending.items())
        for start in range(0, len(items), MAX_BATCH_KEYS):
            self._send(dict(items[start : start + MAX_BATCH_KEYS]), deadline)

    def _send(self, pending: dict[str, Waiters], deadline: float) -> None:
        self._in_flight += 1
        self.lookup_batches += 1
        self.lookup_keys += len(pending)
        near = self._near
        self._spawn(
            self._lookup(pending, deadline, 0)
            if near is None
            else self._near_fetch(pending, deadline, near)
        )

    def _batch_done(self) -> None:
        self._in_flight -= 1
        if self._pending and not self._flush_scheduled:
            self._flush()

    async def _near_fetch(
        self, pending: dict[str, Waiters], deadline: float, near: NearCache
    ) -> None:
        keys = list(pending)
        # Taken before the MGET is sent, released after its entries were offered: see
        # NearCache, rule 2.
        ticket = near.watch(keys)
        try:
            await self._lookup(pending, deadline, ticket)
        finally:
            near.unwatch(keys)

    async def _lookup(self, pending: dict[str, Waiters], deadline: float, ticket: int) -> None:
        keys = list(pending)
        try:
            async with asyncio.timeout_at(deadline):
                generation_raw, values = await self._read(keys)
        except (*REDIS_ERRORS, TimeoutError) as exc:
            error = StoreError(f"redis lookup failed: {exc!r}")
            for waiters in pending.values():
                _fail_all(waiters, error)
            return
        except asyncio.CancelledError:
            for waiters in pending.values():
                _fail_all(waiters, StoreError("redis lookup cancelled"))
            raise
        finally:
            self._batch_done()
        generation = _as_int(generation_raw)
        for key, raw in zip(keys, values, strict=True):
            self._resolve(key, raw, generation, pending[key], ticket)

    def _resolve(
        self, key: str, raw: bytes | None, generation: int, waiters: Waiters, ticket: int = 0
    ) -> None:
        result: tuple[CachedResponse | None, int] = (None, generation)
        if raw is not None:
            try:
                entry = decode(raw)
            except CorruptEntry as exc:
                self._spawn(self._drop_damaged(key, raw))
                _fail_all(waiters, exc)
                return
            if entry.generation == generation:
                result = (entry, generation)
                if self._near is not None:
                    self._near.offer(key, result, ticket)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)


def _fail_all(waiters: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _as_int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0
