"""The near cache: a per-process LRU in front of Redis, kept coherent by CLIENT TRACKING."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from cachekit.backends.layout import KeyLayout
from cachekit.backends.memory import entry_cost
from cachekit.entry import CachedResponse

log = logging.getLogger("cachekit.near")

#: The Pub/Sub channel Redis publishes client-side-caching invalidations on (RESP2).
INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"
#: Seconds of silence on the listener connection before it sends a PING; a PING left
#: unanswered as long again means the connection is dead (the near cache then turns off).
PING_INTERVAL: Final = 1.0
#: Reconnection delays of the listener (doubled per failed attempt, with jitter).
MIN_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 5.0
#: What a lost or misbehaving listener connection raises.
LISTENER_ERRORS: Final = (OSError, TimeoutError, ValueError)

Result = tuple[CachedResponse | None, int]


class InvalidationConnection(Protocol):
    """The listener's connection (`redis_internals.ListenerConnection`): RESP2, raising
    `ConnectionError` or `TimeoutError` when anything goes wrong on it."""

    async def open(self) -> None:
        """Connect, authenticated and on the right database."""
        ...

    async def send(self, *args: str | bytes | int) -> None:
        """Send one command."""
        ...

    async def reply(self, within: float | None = None) -> Any:
        """The next reply or message. With `within`: None when none arrives within that
        many seconds; without, the connection's own socket timeout raises."""
        ...

    def moved(self) -> bool:
        """Whether the store's connections now go to another server than this one's (a
        Sentinel promoted another primary)."""
        ...

    async def close(self) -> None:
        """Disconnect."""
        ...


#: Makes a new (unconnected) listener connection.
ListenerFactory = Callable[[], InvalidationConnection]


class NearCache:
    """Decoded entries of one `RedisStore`, answered without a round trip while Redis
    confirms they are unchanged.

    Coherence. One dedicated RESP2 connection turns on `CLIENT TRACKING ... BCAST` for the
    prefixes `ns:e:` (entries) and `ns:gen` (generation), redirected to itself, and
    subscribes to `__redis__:invalidate`: Redis then publishes the name of every entry
    written, deleted, expired or evicted by anyone, within milliseconds. Rules:

    1. Entries are served only while that channel is live. Until it is subscribed, and from
       the moment it is lost (an error, EOF, or a PING unanswered for `PING_INTERVAL`), the
       cache is empty and takes no entries; the listener reconnects with backoff.
    2. A lookup takes a ticket (`watch`) before its MGET is sent. Its result is not kept
       (`offer`) if its key was invalidated, or the cache flushed, after the ticket: the
       value may predate the write that caused it. An invalidation received before the
       ticket concerns a write the MGET already sees.
    3. Only fresh, non-stub entries are kept, each until its `fresh_until` or `max_age`
       seconds after insertion, whichever comes first. Stale entries are left to Redis.
    4. The store's own writes drop their keys at once (`invalidate`, `flush`).

    A change of the generation, a nil key list (FLUSHALL) or a key that cannot be mapped
    back flushes everything. (Re)subscribing is also a flush point, so tickets taken while
    invalidations could be missed never insert.
    """

    def __init__(
        self,
        connect: ListenerFactory,
        layout: KeyLayout,
        max_bytes: int,
        max_age: float,
        timeout: float,
    ) -> None:
        self._connect = connect
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._timeout = max(timeout, 1.0)  # connecting and subscribing, not a lookup
        self._layout = layout
        self._items: OrderedDict[str, tuple[float, int, Result]] = OrderedDict()
        self.used_bytes = 0
        #: True while the invalidation channel is subscribed (rule 1).
        self.live = False
        # Rule 2: `_seq` counts invalidations and flushes; `_watched` counts the lookups in
        # flight per key and `_touched` keeps when such a key was last invalidated.
        self._seq = 0
        self._flushed_at = 0
        self._watched: dict[str, int] = {}
        self._touched: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        self.hits = 0
        self.inserts = 0
        self.skipped = 0
        self.invalidations = 0
        self.flushes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def stats(self) -> dict[str, Any]:
        """Counters and size, for `Cache.stats()`."""
        return {
            "near_hits": self.hits,
            "near_live": self.live,
            "near_entries": len(self._items),
            "near_bytes": self.used_bytes,
            "near_skipped": self.skipped,
            "near_invalidations": self.invalidations,
            "near_flushes": self.flushes,
        }

    # ------------------------------------------------------------------ the hit path

    def lookup(self, key: str, now: float) -> Result | None:
        """The stored `(entry, generation)` of a fresh entry, or None (ask Redis)."""
        item = self._items.get(key)
        if item is None:
            return None
        if now < item[0]:
            self._items.move_to_end(key)
            self.hits += 1
            return item[2]
        self._remove(key)
        return None

    # ------------------------------------------------------------------ filling (rule 2)

    def watch(self, keys: Iterable[str]) -> int:
        """Note lookups of `keys` about to be sent; returns their ticket for `offer`.
        Starts the listener on the running loop the first time."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._listen_forever(), name="cachekit-near-listener"
            )
        watched = self._watched
        for key in keys:
            watched[key] = watched.get(key, 0) + 1
        return self._seq

    def unwatch(self, keys: Iterable[str]) -> None:
        """The lookups of `keys` noted by `watch` are done (offered or failed)."""
        watched = self._watched
        for key in keys:
            count = watched[key] - 1
            if count:
                watched[key] = count
            else:
                del watched[key]
                self._touched.pop(key, None)

    def offer(self, key: str, result: Result, ticket: int) -> None:
        """Keep an entry Redis returned to a lookup with `ticket`, if still current."""
        entry = result[0]
        if entry is None or entry.vary_stub or not self.live:
            return
        if self._flushed_at > ticket or self._touched.get(key, -1) > ticket:
            self.skipped += 1  # invalidated while the lookup was in flight
            return
        now = time.time()
        deadline = min(entry.fresh_until, now + self.max_age)
        cost = entry_cost(key, entry)
        if now >= deadline or cost > self.max_bytes:
            return
        self._remove(key)
        self._items[key] = (deadline, cost, result)
        self.used_bytes += cost
        self.inserts += 1
        while self.used_bytes > self.max_bytes:
            self._remove(next(iter(self._items)))

    # ------------------------------------------------------------------ invalidation

    def invalidate(self, key: str) -> None:
        """Drop `key` (its entry changed) and void lookups of it in flight."""
        self._seq += 1
        if key in self._watched:
            self._touched[key] = self._seq
        self._remove(key)
        self.invalidations += 1

    def flush(self) -> None:
        """Drop everything and void every lookup in flight."""
        self._seq += 1
        self._flushed_at = self._seq
        self._items.clear()
        self.used_bytes = 0
        self.flushes += 1

    def _remove(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.used_bytes -= item[1]

    def _apply(self, message: Any) -> None:
        """Act on one message of the subscribed connection."""
        if not isinstance(message, list) or not message:
            raise ValueError(f"unexpected reply on the invalidation channel: {message!r}")
        if message[0] != b"message" or len(message) < 3 or message[1] != INVALIDATE_CHANNEL:
            return  # a PONG, or a confirmation
        redis_keys = message[2]
        if redis_keys is None:  # FLUSHALL / FLUSHDB: everything is gone
            self.flush()
            return
        for redis_key in redis_keys:
            # The generation changed, or a key that does not map back: drop everything.
            try:
                key = self._layout.key_of_entry(redis_key.decode())
            except UnicodeDecodeError:
                key = None
            if key is None:
                self.flush()
                return
            self.invalidate(key)

    # ------------------------------------------------------------------ the listener

    async def _listen_forever(self) -> None:
        """Keep the invalidation channel subscribed; the cache is live only while it is."""
        delay = MIN_BACKOFF
        while True:
            connection = self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._subscribe(connection)
                self._went_live()
                if self._failing:
                    log.info("near cache: invalidation channel restored")
                self._failing = False
                delay = MIN_BACKOFF
                await self._listen(connection)
            except LISTENER_ERRORS as exc:
                # Logged once per outage: a Redis that is down is reported elsewhere too.
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "near cache off, invalidation channel lost: %r", exc)
                self._failing = True
            except Exception:  # a bug must not end the listener: the cache stays off
                log.exception("near cache off: invalidation listener failed")
                self._failing = True
            finally:
                self._went_dead()
                await _disconnect(connection)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, MAX_BACKOFF)

    def _went_live(self) -> None:
        # A flush point: lookups issued before now may have missed invalidations (rule 1).
        self.flush()
        self.live = True

    def _went_dead(self) -> None:
        self.live = False
        self.flush()

    async def _subscribe(self, connection: InvalidationConnection) -> None:
        await connection.open()
        await connection.send("CLIENT", "ID")
        client_id = await connection.reply()
        # BCAST: told about every key under these prefixes, not only the ones read on this
        # connection (our lookups use other connections). REDIRECT to itself, then
        # SUBSCRIBE: RESP2 delivers invalidations as messages of this channel.
        await connection.send(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
            "PREFIX", self._layout.entry_prefix, "PREFIX", self._layout.generation_key,
        )  # fmt: skip
        await connection.reply()
        await connection.send("SUBSCRIBE", INVALIDATE_CHANNEL)
        reply = await connection.reply()
        if not isinstance(reply, list) or reply[:1] != [b"subscribe"]:
            raise ValueError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    async def _listen(self, connection: InvalidationConnection) -> None:
        """Apply messages until the connection fails; PING it when it is quiet, so that a
        silently dead connection is noticed within two `PING_INTERVAL`s. Behind Sentinel,
        follow the store's pool to a new primary: left on a demoted one, the listener would
        miss writes until that server replicates from the new primary."""
        awaiting_pong = False
        while True:
            if connection.moved():
                raise ConnectionError("the Sentinel pool moved to another primary")
            message = await connection.reply(PING_INTERVAL)
            if message is None:
                if awaiting_pong:
                    raise TimeoutError("no answer to PING on the invalidation channel")
                await connection.send("PING")
                awaiting_pong = True
                continue
            awaiting_pong = False
            self._apply(message)

    async def close(self) -> None:
        """Stop the listener (and close its connection); the cache is empty afterwards."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._went_dead()


async def _disconnect(connection: InvalidationConnection) -> None:
    with contextlib.suppress(*LISTENER_ERRORS):
        async with asyncio.timeout(1.0):
            await connection.close()
