"""Lookups of the Redis stores: batched per event-loop turn, bounded in flight.

Lookups issued in the same event-loop turn share one MGET (together with the generation
key). At most `MAX_BATCHES_IN_FLIGHT` batches are out at once; lookups arriving meanwhile
wait for one to be answered and then go out together, each still resolving within the
store timeout counted from its own `get`. The subclass provides the round trip (`_read`,
awaited in a task), optionally a send answered from a connection's read callback without a
task (`_send_now`, `_abandon`; see `LookupBatch`), and the removal of a damaged entry
(`_drop_damaged`).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import Future
from collections.abc import Iterable
from typing import Any, Final

from redis.exceptions import RedisClusterException, RedisError

from cachekit.backends.base import Answer, StoreError
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
        self._drained: asyncio.Future[None] | None = None  # see `_drain`
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

    def peek(self, key: str, now: float) -> Answer | None:
        """See `Store.peek`: the near cache's fresh copy, if there is one."""
        near = self._near
        return None if near is None else near.lookup(key, now)

    def stats(self) -> dict[str, Any]:
        """See `Store.stats`: lookup batching, and the near cache's figures."""
        result: dict[str, Any] = {"store": "redis", **self.lookup_stats()}
        if self._near is not None:
            result.update(self._near.stats())
        return result

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
        keys = list(pending)
        near = self._near
        # Taken before the MGET is sent, released after its entries were offered: see
        # NearCache, rule 2.
        ticket = near.watch(keys) if near is not None else 0
        batch = LookupBatch(self, pending, keys, near, ticket)
        try:
            batch.sent_on = self._send_now(keys, batch)
        except REDIS_ERRORS:
            batch.sent_on = None  # the task path reconnects
        except Exception as exc:  # never leave a lookup (or the in-flight count) hanging
            batch.set_exception(exc)
            return
        if batch.sent_on is not None:
            batch.timer = asyncio.get_running_loop().call_at(deadline, batch.expire)
        else:
            self._spawn(self._lookup(batch, deadline))

    def _send_now(self, keys: list[str], batch: LookupBatch) -> object | None:
        """Send the MGET of `keys` right away, its reply going to `batch` from the
        connection's read callback, if this store can (a lookup connection is open);
        returns what `_abandon` needs to give up on it, or None to use `_read` in a task."""
        return None

    def _abandon(self, sent_on: object) -> None:
        """Give up on a batch `_send_now` sent (timed out, or an unusable reply)."""

    def _batch_done(self) -> None:
        self._in_flight -= 1
        if self._pending and not self._flush_scheduled:
            loop = asyncio.get_running_loop()
            if isinstance(loop, asyncio.BaseEventLoop):
                # asyncio's loops run the callbacks scheduled last turn (handlers about to
                # look up) before this turn's I/O callbacks (this reply): they have run.
                self._flush()
            else:
                # uvloop runs I/O callbacks first: send after the handlers ready to run
                # have looked up too (measured: 8.5 -> 16 requests per MGET, hot key 0.87
                # -> 0.99 of `limit`; on asyncio's loop the same deferral cost 0.66-0.68
                # vs 0.71 over 1,000 keys, bench/README.md).
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        drained = self._drained
        if not self._in_flight and drained is not None and not drained.done():
            drained.set_result(None)

    async def _lookup(self, batch: LookupBatch, deadline: float) -> None:
        """A batch's round trip through `_read`, in a task (see `_send_now`)."""
        try:
            async with asyncio.timeout_at(deadline):
                generation_raw, values = await self._read(batch.keys)
        except Exception as exc:  # Redis, the timeout, or any surprise: fail open
            batch.set_exception(exc)
            return
        except asyncio.CancelledError:
            if batch.finish():
                batch.fail(StoreError("redis lookup cancelled"))
            raise
        if batch.finish():
            batch.answer(generation_raw, values)

    async def _drain(self) -> None:
        """Wait at most the store timeout until no lookup batch is in flight."""
        if self._in_flight:
            drained = self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait([drained], timeout=self._timeout)

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


class LookupBatch:
    """One MGET's lookups, answered or failed exactly once.

    Sent by `_send_now`, the batch is its own reply waiter: it has the three methods of a
    future that the lookup channel calls from its read callback, so the lookups resolve
    without a task or a future per batch, and a timer (`expire`) bounds the wait. Sent
    through `_read` in a task instead, that task calls `finish` and `answer` or `fail`.
    """

    __slots__ = ("_done", "_lookups", "_near", "_pending", "_ticket", "keys", "sent_on", "timer")

    def __init__(
        self,
        lookups: BatchedLookups,
        pending: dict[str, Waiters],
        keys: list[str],
        near: NearCache | None,
        ticket: int,
    ) -> None:
        self.keys = keys
        self.sent_on: object | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._lookups = lookups
        self._pending = pending
        self._near = near  # watched with `ticket` until the batch is answered or failed
        self._ticket = ticket
        self._done = False

    def done(self) -> bool:
        """Answered or failed already (the reply waiter's interface)."""
        return self._done

    def set_result(self, reply: Any, /) -> None:
        """The MGET's reply: the generation, then one value per key."""
        if isinstance(reply, list) and len(reply) == len(self.keys) + 1:
            if self.finish():
                self.answer(reply[0], reply[1:])
        elif self.finish(abandon=True):
            self.fail(StoreError(f"redis lookup failed: unexpected reply to MGET {reply!r:.80}"))

    def set_exception(self, exception: BaseException, /) -> None:
        """The connection failed, or Redis answered with an error."""
        if self.finish():
            self.fail(StoreError(f"redis lookup failed: {exception!r}"))

    def expire(self) -> None:
        """The store timeout passed without a reply: the connection is given up too."""
        if self.finish(abandon=True):
            self.fail(StoreError(f"redis lookup failed: {TimeoutError()!r}"))

    def finish(self, *, abandon: bool = False) -> bool:
        """Mark the batch done (False if it already was) and let the next one go out;
        with `abandon`, first give up its connection, so the next one does not use it."""
        if self._done:
            return False
        self._done = True
        if self.timer is not None:
            self.timer.cancel()
        if abandon and self.sent_on is not None:
            self._lookups._abandon(self.sent_on)
        self._lookups._batch_done()
        return True

    def answer(self, generation_raw: bytes | None, values: list[bytes | None]) -> None:
        """Resolve every lookup from the MGET's values (after `finish`)."""
        lookups = self._lookups
        pending = self._pending
        try:
            generation = _as_int(generation_raw)
            for key, raw in zip(self.keys, values, strict=True):
                lookups._resolve(key, raw, generation, pending[key], self._ticket)
        except Exception as exc:  # never leave a lookup waiting (nor break the connection)
            self.fail(StoreError(f"redis lookup failed: {exc!r}"))
        self._unwatch()

    def fail(self, error: BaseException) -> None:
        """Fail every lookup not answered yet with `error` (after `finish`)."""
        for waiters in self._pending.values():
            _fail_all(waiters, error)
        self._unwatch()

    def _unwatch(self) -> None:
        near, self._near = self._near, None
        if near is not None:
            near.unwatch(self.keys)


def _fail_all(waiters: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _as_int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0
